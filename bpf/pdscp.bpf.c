// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * pdscp kernel side: two TC programs sharing one set of maps per uplink.
 *
 *   reader  (egress of each tunnel device): inner IP DSCP -> flows[{hash, port}]
 *   writer  (egress of the uplink):         flows[{skb->hash, udp sport}] -> outer DSCP
 *
 * Tunnels such as WireGuard keep skb->hash across encapsulation, so the
 * writer finds the mark the reader stored for the same packet. Both programs
 * always return TC_ACT_UNSPEC (== TCX_NEXT) so every other filter or TCX
 * program on the same hook still runs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "pdscp.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define MAX_VLAN_TAGS 2

/* Sizes are defaults; user space sets max_entries before the first load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, __u8);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct iface_cfg);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PDSCP_DEV_SLOTS);
	__type(key, __u32);
	__type(value, struct dev_slot);
} dev_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct port_bitmap);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* This device's settings as the programs need them, or 0 if pdscp did not attach it. */
static __always_inline struct dev_slot *dev_config(struct __sk_buff *skb, struct dev_slot *spill)
{
	__u32 ifindex = skb->ifindex;
	struct iface_cfg *cfg;
	struct dev_slot *slot;

	if (ifindex < PDSCP_DEV_SLOTS) {
		slot = bpf_map_lookup_elem(&dev_slots, &ifindex);
		return slot && slot->role ? slot : 0;
	}
	cfg = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!cfg)
		return 0;
	spill->role = cfg->role;
	spill->l2 = cfg->l2;
	spill->any_port = cfg->any_port;
	spill->port = cfg->port;
	return spill;
}

static __always_inline void count(__u32 index)
{
	__u64 *counter = bpf_map_lookup_elem(&stats, &index);

	if (counter)
		*counter += 1;
}

/*
 * Finds the IP header. Ethernet devices (VXLAN, a LAN port) carry an
 * Ethernet header with up to two in-band 802.1Q/802.1ad tags; L3 devices
 * (WireGuard, PPP, tun) start with the IP header, and skb->protocol says
 * which. Returns the offset of the IP header and sets *proto, or -1.
 */
static __always_inline int find_ip_header(struct __sk_buff *skb, int l2, __be16 *proto)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	int off = sizeof(*eth);
	__be16 type;

	if (!l2) {
		*proto = skb->protocol;
		return 0;
	}
	if ((void *)(eth + 1) > data_end)
		return -1;
	type = eth->h_proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan = data + off;

		if (type != bpf_htons(ETH_P_8021Q) && type != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return -1;
		type = vlan->encapsulated_proto;
		off += sizeof(*vlan);
	}
	*proto = type;
	return off;
}

/* DSCP of the IPv4/IPv6 header at off, or -1 if there is none. */
static __always_inline int read_dscp(struct __sk_buff *skb, int off, __be16 proto)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (off < 0 || off > 64)
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;

		if ((void *)(iph + 1) > data_end || iph->version != 4)
			return -1;
		return iph->tos >> 2;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + off;

		if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
			return -1;
		/* Traffic class = priority (high nibble) : flow_lbl[0] high nibble;
		 * DSCP is its upper six bits, ECN the lower two. */
		return ((ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4)) >> 2;
	}
	return -1;
}

SEC("tc")
int pdscp_reader(struct __sk_buff *skb)
{
	struct dev_slot spill = {}, *cfg;
	struct flow_key key = {};
	__be16 proto = 0;
	__u8 *stored;
	__u8 dscp;
	int ret;

	cfg = dev_config(skb, &spill);
	if (!cfg || cfg->role != ROLE_TUNNEL)
		return TC_ACT_UNSPEC;

	ret = read_dscp(skb, find_ip_header(skb, cfg->l2, &proto), proto);
	if (ret < 0) {
		count(STAT_READER_NOT_IP);
		return TC_ACT_UNSPEC;
	}
	dscp = ret;
	count(STAT_READER_SEEN + (dscp & 63));

	key.hash = bpf_get_hash_recalc(skb);
	/* No hash (nothing to dissect): nothing the writer could match. */
	if (!key.hash)
		return TC_ACT_UNSPEC;
	/* Marks the hash as an L4 hash: iptunnel_xmit() clears any other hash,
	 * which would cost ICMP and other port-less flows their mark. */
	bpf_set_hash(skb, key.hash);
	key.port = cfg->any_port ? 0 : cfg->port;

	/* Look up first: the steady state writes nothing. */
	stored = bpf_map_lookup_elem(&flows, &key);
	if (stored) {
		if (*stored != dscp) {
			*stored = dscp;
			count(STAT_READER_UPDATE);
		}
		return TC_ACT_UNSPEC;
	}
	/* An unmarked flow needs no entry: a miss leaves the outer DSCP at the
	 * tunnel's 0. A flow whose mark drops to 0 keeps its entry, set to 0. */
	if (dscp) {
		bpf_map_update_elem(&flows, &key, &dscp, BPF_ANY);
		count(STAT_READER_INSERT);
	}
	return TC_ACT_UNSPEC;
}

/* Rewrites the DSCP bits of the IPv4 header in place, keeping ECN, and
 * updates the header checksum incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
 * Direct writes are cheaper than the store/csum helpers; the kernel makes a
 * cloned skb's header private before the program runs. */
static __always_inline void write_dscp_v4(struct iphdr *iph, __u8 dscp)
{
	__u8 tos = (dscp << 2) | (iph->tos & 3);
	__u16 old_word, new_word;
	__u32 sum;

	if (tos == iph->tos)
		return;
	/* The TOS byte is the low byte of the header's first 16-bit word. */
	old_word = (iph->version << 12) | (iph->ihl << 8) | iph->tos;
	new_word = (old_word & 0xff00) | tos;
	sum = (__u16)~bpf_ntohs(iph->check) + (__u16)~old_word + new_word;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	iph->tos = tos;
	iph->check = bpf_htons((__u16)~sum);
}

/* Rewrites the DSCP bits of the IPv6 traffic class in place, keeping ECN
 * and the flow label (IPv6 has no header checksum). */
static __always_inline void write_dscp_v6(struct ipv6hdr *ip6h, __u8 dscp)
{
	/* Traffic class = priority (4 bits) : flow_lbl[0] high nibble. */
	__u8 priority = dscp >> 2;
	__u8 flow0 = ((dscp & 3) << 6) | (ip6h->flow_lbl[0] & 0x3f);

	if (ip6h->priority != priority)
		ip6h->priority = priority;
	if (ip6h->flow_lbl[0] != flow0)
		ip6h->flow_lbl[0] = flow0;
}

SEC("tc")
int pdscp_writer(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *iph = 0;
	struct ipv6hdr *ip6h = 0;
	struct dev_slot spill = {}, *cfg;
	struct flow_key key = {};
	struct port_bitmap *bitmap;
	struct udphdr *udp;
	__be16 proto = 0;
	__u32 zero = 0;
	__u16 sport;
	__u8 *dscp;
	int off;

	cfg = dev_config(skb, &spill);
	if (!cfg || cfg->role != ROLE_UPLINK)
		return TC_ACT_UNSPEC;

	off = find_ip_header(skb, cfg->l2, &proto);
	if (off < 0 || off > 64)
		goto not_tunnel;
	if (proto == bpf_htons(ETH_P_IP)) {
		iph = data + off;
		if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->protocol != IPPROTO_UDP ||
		    (iph->frag_off & bpf_htons(IP_OFFSET)) || iph->ihl < 5)
			goto not_tunnel;
		udp = (void *)iph + iph->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6h = data + off;
		/* Tunnels send plain UDP: no extension headers to walk. */
		if ((void *)(ip6h + 1) > data_end || ip6h->version != 6 || ip6h->nexthdr != IPPROTO_UDP)
			goto not_tunnel;
		udp = (void *)(ip6h + 1);
	} else {
		goto not_tunnel;
	}
	if ((void *)(udp + 1) > data_end)
		goto not_tunnel;

	bitmap = bpf_map_lookup_elem(&ports, &zero);
	if (!bitmap)
		goto not_tunnel;
	sport = bpf_ntohs(udp->source);
	if (bitmap->bits[sport >> 3] & (1 << (sport & 7)))
		key.port = udp->source;
	else if (bitmap->bits[0] & 1)
		key.port = 0; /* an --any-port tunnel: the hash alone */
	else
		goto not_tunnel;
	/* Hash 0 never has an entry (the reader stores none), so it misses. */
	key.hash = skb->hash;
	dscp = bpf_map_lookup_elem(&flows, &key);
	if (!dscp) {
		count(STAT_WRITER_MISS);
		return TC_ACT_UNSPEC;
	}
	count(STAT_WRITER_MARKED + (*dscp & 63));
	if (iph)
		write_dscp_v4(iph, *dscp & 63);
	else if (ip6h)
		write_dscp_v6(ip6h, *dscp & 63);
	return TC_ACT_UNSPEC;

not_tunnel:
	count(STAT_WRITER_NOT_TUNNEL);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
