/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Layout shared by the BPF programs and user space. build.rs turns every
 * #define PDSCP_* and every enum member below into a Rust constant for
 * src/maps.rs, so values must be plain integer literals; struct layouts reach
 * user space through the skeleton's types (src/maps.rs tests their sizes). */
#ifndef PDSCP_H
#define PDSCP_H

#define PDSCP_IFNAMSIZ 16

/* flows: one entry per flow seen on an attached tunnel. */
struct flow_key {
	__u32 hash; /* skb->hash, kept by the tunnel across encapsulation */
	__u16 port; /* the tunnel's outer UDP source port, network order; 0 = any */
	__u16 pad;  /* always 0 */
};

/* ifaces: every attached device of this uplink, keyed by ifindex. */
enum iface_role {
	ROLE_UPLINK = 1, /* the writer runs on its egress */
	ROLE_TUNNEL = 2, /* the reader runs on its egress */
};

enum attach_mode {
	MODE_TCX = 1, /* a pinned TCX link (kernel 6.6+) */
	MODE_TC = 2,  /* a cls_bpf filter on clsact at pdscp's handle/priority */
};

struct iface_cfg {
	__u8 role;     /* enum iface_role */
	__u8 l2;       /* 1: packets start with an Ethernet header, 0: with IP */
	__u8 mode;     /* enum attach_mode; user space bookkeeping */
	__u8 any_port; /* tunnel matched on the hash alone */
	__u16 port;    /* tunnel: outer UDP source port, network order */
	__u16 pad;
	char name[PDSCP_IFNAMSIZ]; /* device name when attached */
	__u32 netns;               /* inode of the device's network namespace */
};

/* dev_slots: what the programs need of a device, in an array indexed by
 * ifindex (a hash lookup costs as much as the rest of a program); devices
 * with larger ifindexes are found in ifaces. */
#define PDSCP_DEV_SLOTS 4096

struct dev_slot {
	__u8 role;     /* enum iface_role; 0 = empty slot */
	__u8 l2;
	__u8 any_port;
	__u8 pad;
	__u16 port;    /* network order */
	__u16 pad2;
};

/* ports: one bitmap of the outer UDP source ports (host order) of attached
 * tunnels; bit 0 is set while any --any-port tunnel is attached. */
#define PDSCP_PORT_BYTES 8192 /* 65536 ports, one bit each */

struct port_bitmap {
	__u8 bits[PDSCP_PORT_BYTES];
};

/* stats: per-CPU u64 counters, summed by user space. */
enum stat_index {
	STAT_WRITER_MARKED = 0,        /* + DSCP: tunnel packets given this DSCP */
	STAT_READER_SEEN = 64,         /* + DSCP: inner packets seen with this DSCP */
	STAT_WRITER_MISS = 128,        /* tunnel packet, no flow entry (or no hash) */
	STAT_WRITER_NOT_TUNNEL = 129,  /* not UDP from an attached tunnel's port */
	STAT_READER_INSERT = 130,      /* new flow entries */
	STAT_READER_UPDATE = 131,      /* flows whose mark changed */
	STAT_READER_NOT_IP = 132,      /* tunnel packets that are not IPv4/IPv6 */
	STAT_MAX = 133,
};

#endif
