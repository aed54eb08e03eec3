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

#define IP_OFFSET 0x1fff
#define MAX_VLAN_TAGS 2
/* Furthest an IP header may start: Ethernet plus MAX_VLAN_TAGS tags, with
 * room to spare. A constant bound the verifier can see. */
#define MAX_IP_OFFSET 64
/* DSCP is six bits; masking a value read from a map keeps counter indexes
 * provably in range. */
#define DSCP_MASK 63

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

/* The IP header of a packet: exactly one of v4 and v6 is set. */
struct ip_header {
	struct iphdr *v4;
	struct ipv6hdr *v6;
};

/* This device's settings as the programs need them, or NULL if pdscp did not attach it. */
static __always_inline struct dev_slot *dev_config(struct __sk_buff *skb, struct dev_slot *spill)
{
	__u32 ifindex = skb->ifindex;
	struct iface_cfg *cfg;
	struct dev_slot *slot;

	if (ifindex < PDSCP_DEV_SLOTS) {
		slot = bpf_map_lookup_elem(&dev_slots, &ifindex);
		return slot && slot->role ? slot : NULL;
	}
	cfg = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!cfg)
		return NULL;
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
 * Finds the IPv4 or IPv6 header, checked to lie within the packet. Ethernet
 * devices (VXLAN, a LAN port) carry an Ethernet header with up to two
 * in-band 802.1Q/802.1ad tags; L3 devices (WireGuard, PPP, tun) start with
 * the IP header, and skb->protocol says which. Returns 0, or -1 if the
 * packet is not IP (or is cut short).
 */
static __always_inline int parse_ip(struct __sk_buff *skb, int l2, struct ip_header *ip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__be16 proto = skb->protocol;
	int off = 0;

	if (l2) {
		if ((void *)(eth + 1) > data_end)
			return -1;
		proto = eth->h_proto;
		off = sizeof(*eth);
#pragma unroll
		for (int i = 0; i < MAX_VLAN_TAGS; i++) {
			struct vlan_hdr *vlan = data + off;

			if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
				break;
			if ((void *)(vlan + 1) > data_end)
				return -1;
			proto = vlan->encapsulated_proto;
			off += sizeof(*vlan);
		}
	}
	if (off > MAX_IP_OFFSET)
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;

		if ((void *)(iph + 1) > data_end || iph->version != 4)
			return -1;
		ip->v4 = iph;
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + off;

		if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
			return -1;
		ip->v6 = ip6h;
		return 0;
	}
	return -1;
}

/* DSCP of the parsed header. IPv6: the traffic class is priority (high
 * nibble) : flow_lbl[0] high nibble; DSCP is its upper six bits. */
static __always_inline __u8 read_dscp(const struct ip_header *ip)
{
	if (ip->v4)
		return ip->v4->tos >> 2;
	return ((ip->v6->priority << 4) | (ip->v6->flow_lbl[0] >> 4)) >> 2;
}

SEC("tc")
int pdscp_reader(struct __sk_buff *skb)
{
	struct dev_slot spill = {}, *cfg;
	struct ip_header ip = {};
	struct flow_key key = {};
	__u8 *stored;
	__u8 dscp;

	cfg = dev_config(skb, &spill);
	if (!cfg || cfg->role != ROLE_TUNNEL)
		return TC_ACT_UNSPEC;

	if (parse_ip(skb, cfg->l2, &ip) < 0) {
		count(STAT_READER_NOT_IP);
		return TC_ACT_UNSPEC;
	}
	dscp = read_dscp(&ip);
	count(STAT_READER_SEEN + dscp);

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

/* The UDP header after the IP header, or NULL: tunnels send plain,
 * unfragmented UDP (IPv6: no extension headers to walk). */
static __always_inline struct udphdr *udp_header(struct __sk_buff *skb, const struct ip_header *ip)
{
	void *data_end = (void *)(long)skb->data_end;
	struct udphdr *udp;

	if (ip->v4) {
		if (ip->v4->protocol != IPPROTO_UDP || (ip->v4->frag_off & bpf_htons(IP_OFFSET)) ||
		    ip->v4->ihl < 5)
			return NULL;
		udp = (void *)ip->v4 + ip->v4->ihl * 4;
	} else {
		if (ip->v6->nexthdr != IPPROTO_UDP)
			return NULL;
		udp = (void *)(ip->v6 + 1);
	}
	if ((void *)(udp + 1) > data_end)
		return NULL;
	return udp;
}

SEC("tc")
int pdscp_writer(struct __sk_buff *skb)
{
	struct dev_slot spill = {}, *cfg;
	struct ip_header ip = {};
	struct flow_key key = {};
	struct port_bitmap *bitmap;
	struct udphdr *udp;
	__u32 zero = 0;
	__u16 sport;
	__u8 *dscp;
	__u8 mark;

	cfg = dev_config(skb, &spill);
	if (!cfg || cfg->role != ROLE_UPLINK)
		return TC_ACT_UNSPEC;

	if (parse_ip(skb, cfg->l2, &ip) < 0)
		goto not_tunnel;
	udp = udp_header(skb, &ip);
	if (!udp)
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
	mark = *dscp & DSCP_MASK;
	count(STAT_WRITER_MARKED + mark);
	if (ip.v4)
		write_dscp_v4(ip.v4, mark);
	else
		write_dscp_v6(ip.v6, mark);
	return TC_ACT_UNSPEC;

not_tunnel:
	count(STAT_WRITER_NOT_TUNNEL);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
