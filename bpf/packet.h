/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Packet parsing and DSCP rewriting shared by pdscp's programs. Every
 * pointer handed out is checked against data_end. */
#ifndef PDSCP_PACKET_H
#define PDSCP_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define MAX_VLAN_TAGS 2
/* Furthest an IP header may start: Ethernet plus MAX_VLAN_TAGS tags, with
 * room to spare. A constant bound the verifier can see. */
#define MAX_IP_OFFSET 64
/* DSCP is six bits; masking a value read from a map keeps indexes provably
 * in range. */
#define DSCP_MASK 63

/* ICMP and ICMPv6 echo messages (not from linux/icmp.h, which pulls in
 * libc headers). */
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

struct icmp_echo {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__be16 id;
	__be16 sequence;
};

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Segments the packet becomes on the wire (a GSO packet counts as many). */
static __always_inline __u32 segments(struct __sk_buff *skb)
{
	return skb->gso_segs ? skb->gso_segs : 1;
}

/* The IP header of a packet: exactly one of v4 and v6 is set. */
struct ip_header {
	struct iphdr *v4;
	struct ipv6hdr *v6;
};

/*
 * Finds the IPv4 or IPv6 header. Ethernet devices (VXLAN, a LAN port) carry
 * an Ethernet header with up to two in-band 802.1Q/802.1ad tags; L3 devices
 * (WireGuard, PPP, tun) start with the IP header, and skb->protocol says
 * which. Returns 0, or -1 if the packet is not IP (or is cut short).
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
	if (ip->v6)
		return ((ip->v6->priority << 4) | (ip->v6->flow_lbl[0] >> 4)) >> 2;
	return 0;
}

/* Rewrites the DSCP bits of the IPv4 header in place, keeping ECN, and
 * updates the header checksum incrementally (RFC 1624: HC' = ~(~HC + ~m + m')).
 * Direct writes are cheaper than the store/csum helpers; the kernel makes a
 * cloned skb's header private before a program that writes runs. */
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

static __always_inline void write_dscp(const struct ip_header *ip, __u8 dscp)
{
	if (ip->v4)
		write_dscp_v4(ip->v4, dscp);
	else if (ip->v6)
		write_dscp_v6(ip->v6, dscp);
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
	} else if (ip->v6) {
		if (ip->v6->nexthdr != IPPROTO_UDP)
			return NULL;
		udp = (void *)(ip->v6 + 1);
	} else {
		return NULL;
	}
	if ((void *)(udp + 1) > data_end)
		return NULL;
	return udp;
}

/* A flow's ends, as the reflect map keys them: proto, addresses and ports
 * (ICMP echo: the identifier on both sides). */
struct flow_ends {
	__u8 proto;
	__u8 v6;
	__u16 sport;
	__u16 dport;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* The ports of a TCP/UDP header or the identifier of an ICMP echo at l4.
 * Returns 0, or -1 for other protocols and cut-short packets. */
static __always_inline int l4_ports(void *l4, void *data_end, __u8 proto, struct flow_ends *ends)
{
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		struct udphdr *ports = l4; /* TCP's ports sit where UDP's do */

		if ((void *)(ports + 1) > data_end)
			return -1;
		ends->sport = ports->source;
		ends->dport = ports->dest;
		return 0;
	}
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		struct icmp_echo *icmp = l4; /* ICMPv6 echo has the same layout */

		if ((void *)(icmp + 1) > data_end)
			return -1;
		if (proto == IPPROTO_ICMP && icmp->type != ICMP_ECHO && icmp->type != ICMP_ECHOREPLY)
			return -1;
		if (proto == IPPROTO_ICMPV6 && icmp->type != ICMPV6_ECHO_REQUEST &&
		    icmp->type != ICMPV6_ECHO_REPLY)
			return -1;
		ends->sport = icmp->id;
		ends->dport = icmp->id;
		return 0;
	}
	return -1;
}

/* The ends of the packet's flow. Fragments and IPv6 extension headers have
 * no ports to find: -1. */
static __always_inline int flow_ends(struct __sk_buff *skb, const struct ip_header *ip, struct flow_ends *ends)
{
	void *data_end = (void *)(long)skb->data_end;

	if (ip->v4) {
		struct iphdr *iph = ip->v4;

		if ((iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) || iph->ihl < 5)
			return -1;
		ends->proto = iph->protocol;
		ends->saddr[0] = iph->saddr;
		ends->daddr[0] = iph->daddr;
		return l4_ports((void *)iph + iph->ihl * 4, data_end, iph->protocol, ends);
	}
	if (!ip->v6)
		return -1;
	ends->proto = ip->v6->nexthdr;
	ends->v6 = 1;
	__builtin_memcpy(ends->saddr, &ip->v6->saddr, 16);
	__builtin_memcpy(ends->daddr, &ip->v6->daddr, 16);
	return l4_ports(ip->v6 + 1, data_end, ip->v6->nexthdr, ends);
}

/* Whether (saddr, sport) orders before (daddr, dport), comparing addresses
 * as big-endian numbers: the lower end goes first in a reflect key. */
static __always_inline int source_is_lower(const struct flow_ends *e)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 s = bpf_ntohl(e->saddr[i]), d = bpf_ntohl(e->daddr[i]);

		if (s != d)
			return s < d;
	}
	return bpf_ntohs(e->sport) <= bpf_ntohs(e->dport);
}

/* A WireGuard handshake message (initiation, response, cookie reply): the
 * first four bytes of the UDP payload are the type 1..3, little endian. */
static __always_inline int is_wireguard_handshake(struct udphdr *udp, void *data_end)
{
	__u8 *msg = (void *)(udp + 1);

	if ((void *)(msg + 4) > data_end)
		return 0;
	return msg[0] >= 1 && msg[0] <= 3 && !msg[1] && !msg[2] && !msg[3];
}

#endif
