/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Layout shared by the BPF programs and user space (docs/state.md). build.rs
 * turns every #define PDSCP_* and every enum member below into a Rust
 * constant for src/maps/, so values must be plain integer literals; struct
 * layouts reach user space through the skeleton's types (src/maps/ tests
 * their sizes). Changing a map's key, value or size is a new layout: bump
 * PDSCP_LAYOUT and teach src/commands/upgrade.rs (and migrate.rs) the way
 * from the old one. */
#ifndef PDSCP_H
#define PDSCP_H

#define PDSCP_LAYOUT 2
#define PDSCP_MAGIC 0x50445343 /* "PDSC" */
#define PDSCP_IFNAMSIZ 16
#define PDSCP_DSCPS 64
#define PDSCP_MAX_TUNNELS 256
#define PDSCP_MAX_UPLINKS 32
#define PDSCP_MAX_LINKS 512 /* link_stats rows; row 0 means "not attached" */
#define PDSCP_DEV_SLOTS 4096
#define PDSCP_PORT_BLOCKS 256 /* ports: 256 blocks of 256 ports */

/* flows: one entry per flow seen on an attached tunnel. */
struct flow_key {
	__u32 hash; /* skb->hash, kept by the tunnel across encapsulation */
	__u16 port; /* the tunnel's outer UDP source port, network order; 0 = any */
	__u16 pad;  /* always 0 */
};

struct flow_mark {
	__u8 dscp;     /* the outer mark (the tunnel's DSCP map applied) */
	__u8 pad;
	__u16 tunnel;  /* the tunnel's slot */
};

enum attach_mode {
	MODE_TCX = 1, /* a pinned TCX link (kernel 6.6+) */
	MODE_TC = 2,  /* a cls_bpf filter on clsact at pdscp's handle/priority */
};

enum dev_role {
	DEV_TUNNEL = 1, /* the reader runs on its egress */
	DEV_UPLINK = 2, /* the writer runs on its egress */
};

/* devices (by ifindex) and devices_hi: what the programs need of a device. */
struct dev_slot {
	__u8 roles;        /* enum dev_role bits; 0 = not pdscp's */
	__u8 l2;           /* 1: packets start with an Ethernet header, 0: with IP */
	__u8 tunnel_flags; /* the tunnel's flags (enum tunnel_flag) */
	__u8 uplink;       /* uplink slot */
	__u16 tunnel;      /* tunnel slot */
	__u16 port;        /* tunnel's outer UDP source port, network order; 0 = any */
};

enum tunnel_flag {
	TUNNEL_IN_USE = 1,
	TUNNEL_MAPPED = 2,            /* dscp_map is not the identity */
	TUNNEL_FIXED = 4,             /* every outer packet gets fixed_dscp */
	TUNNEL_HANDSHAKE = 8,         /* WireGuard handshakes get handshake_dscp */
	TUNNEL_PRIORITY = 16,         /* skb->priority for CAKE instead of a DSCP */
	TUNNEL_REFLECT_OUT = 32,      /* learn at ingress, apply at egress */
	TUNNEL_REFLECT_IN = 64,       /* learn at egress, apply at ingress */
	TUNNEL_REFLECT_OVERRIDE = 128, /* a reflected mark beats the packet's own */
};

/* tunnels: one record per tunnel slot. */
struct tunnel_rec {
	/* Read by the programs. */
	__u16 links[PDSCP_MAX_UPLINKS]; /* link_stats row per uplink slot; 0 = not attached there */
	__u8 dscp_map[PDSCP_DSCPS];     /* inner DSCP -> outer mark */
	__u64 reflect_allow;            /* bit d set: DSCP d may be reflected */
	__u8 flags;                     /* enum tunnel_flag */
	__u8 fixed_dscp;
	__u8 handshake_dscp;
	__u8 l2;
	/* User space's bookkeeping. */
	__u32 ifindex;
	__u16 port;        /* network order; 0 = any port */
	__u8 reader_mode;  /* enum attach_mode; 0 = no reader (--fixed) */
	__u8 ingress_mode; /* enum attach_mode; 0 = no ingress program */
	__u32 pad;
	char name[PDSCP_IFNAMSIZ];
};

/* uplinks: one record per uplink slot. */
struct uplink_rec {
	__u8 in_use;
	__u8 l2;
	__u8 mode; /* enum attach_mode */
	__u8 pad;
	__u32 ifindex;
	__u32 priority_major;     /* CAKE's handle << 16, for --priority-only; 0 = none */
	__u32 pad2;
	__u8 tin_of[PDSCP_DSCPS]; /* DSCP -> CAKE tin as skb->priority minor (1..n) */
	char name[PDSCP_IFNAMSIZ];
};

/* ports: tunnel slot + 1 of each outer UDP source port (host order), 0 =
 * none, in blocks of 256; ports[0].tunnel[0] counts --any-port tunnels. */
struct port_block {
	__u16 tunnel[256];
};

/* reflect: one entry per flow whose mark is reflected. The two ends are
 * ordered, so both directions of a flow have the same key. */
struct reflect_key {
	__u16 tunnel; /* tunnel slot */
	__u8 proto;   /* IPPROTO_TCP, _UDP, _ICMP, _ICMPV6 */
	__u8 v6;
	__u16 port_lo; /* network order; ICMP echo: the identifier */
	__u16 port_hi;
	__u8 addr_lo[16]; /* IPv4: the first 4 bytes */
	__u8 addr_hi[16];
};

struct reflect_mark {
	__u8 out; /* learned from packets going into the tunnel (egress) */
	__u8 in;  /* learned from packets coming out of it (ingress) */
	__u16 pad;
};

/* tunnel_stats: per-CPU, one row per tunnel slot. Packets count as the
 * segments they become (gso_segs). */
struct tunnel_stats {
	__u64 seen[PDSCP_DSCPS];          /* inner packets leaving by the tunnel, per DSCP */
	__u64 seen_bytes[PDSCP_DSCPS];
	__u64 reflected_out[PDSCP_DSCPS]; /* leaving packets given a reflected mark */
	__u64 reflected_in[PDSCP_DSCPS];  /* arriving packets given a reflected mark */
	__u64 inserts;                    /* new flow entries */
	__u64 updates;                    /* flows whose mark changed */
	__u64 not_ip;                     /* packets that are not IPv4/IPv6 */
	__u64 no_hash;                    /* packets without a flow hash */
	__u64 remapped;                   /* packets whose outer mark differs from their DSCP */
	__u64 learned;                    /* reflection entries created */
	__u64 arrived;                    /* packets seen by the ingress program */
	__u64 pad;
};

/* link_stats: per-CPU, one row per attachment of a tunnel to an uplink. */
struct link_stats {
	__u64 marked[PDSCP_DSCPS]; /* outer packets given this mark (DSCP, or CAKE tin by DSCP) */
	__u64 marked_bytes;
	__u64 missed;              /* the tunnel's outer packets without a flow entry */
	__u64 handshakes;          /* WireGuard handshakes given handshake_dscp */
	__u64 pad;
};

/* uplink_stats: per-CPU, one row per uplink slot. */
struct uplink_stats {
	__u64 not_tunnel;   /* not UDP from an attached tunnel's port */
	__u64 other_uplink; /* a tunnel's packet on an uplink it is not attached to */
	__u64 missed_any;   /* --any-port: UDP with no flow entry */
	__u64 pad;
};

/* stamp: which pdscp made the state (docs/state.md, Versions). */
struct stamp {
	__u32 magic;   /* PDSCP_MAGIC */
	__u32 layout;  /* PDSCP_LAYOUT */
	__u32 version; /* major << 16 | minor << 8 | patch */
	__u32 netns;   /* inode of the network namespace served */
	__u64 object;  /* hash of the BPF object the programs came from */
};

#endif
