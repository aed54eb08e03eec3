/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Reflection: a flow's mark in one direction of a tunnel, learned from its
 * packets, given to its unmarked packets the other way (docs/state.md). */
#ifndef PDSCP_REFLECT_H
#define PDSCP_REFLECT_H

#include "maps.h"
#include "packet.h"

/* The reflect key of the packet's flow, the same in both directions. */
static __always_inline int reflect_key(struct __sk_buff *skb, const struct ip_header *ip, __u16 tunnel,
				       struct reflect_key *key)
{
	struct flow_ends e = {};

	if (flow_ends(skb, ip, &e) < 0)
		return -1;
	key->tunnel = tunnel;
	key->proto = e.proto;
	key->v6 = e.v6;
	if (source_is_lower(&e)) {
		key->port_lo = e.sport;
		key->port_hi = e.dport;
		__builtin_memcpy(key->addr_lo, e.saddr, 16);
		__builtin_memcpy(key->addr_hi, e.daddr, 16);
	} else {
		key->port_lo = e.dport;
		key->port_hi = e.sport;
		__builtin_memcpy(key->addr_lo, e.daddr, 16);
		__builtin_memcpy(key->addr_hi, e.saddr, 16);
	}
	return 0;
}

/* Remembers the mark this packet's flow carries in one direction (`out`:
 * into the tunnel), if the tunnel allows reflecting it; a flow never marked
 * gets no entry. */
static __always_inline void reflect_learn(struct __sk_buff *skb, const struct ip_header *ip,
					  const struct tunnel_rec *rec, __u16 tunnel, __u8 dscp, int out,
					  struct tunnel_stats *stats)
{
	struct reflect_mark fresh = {}, *stored;
	struct reflect_key key = {};
	__u8 mark = (rec->reflect_allow >> (dscp & DSCP_MASK)) & 1 ? dscp : 0;

	if (reflect_key(skb, ip, tunnel, &key) < 0)
		return;
	stored = bpf_map_lookup_elem(&reflect, &key);
	if (stored) {
		if (out && stored->out != mark)
			stored->out = mark;
		else if (!out && stored->in != mark)
			stored->in = mark;
		return;
	}
	if (!mark)
		return;
	if (out)
		fresh.out = mark;
	else
		fresh.in = mark;
	bpf_map_update_elem(&reflect, &key, &fresh, BPF_NOEXIST);
	stats->learned++;
}

/* Gives the packet the mark its flow carries the other way (`out`: this
 * packet goes into the tunnel, so the mark learned from arriving packets),
 * unless it has a mark of its own and the tunnel lets that win. Returns the
 * packet's DSCP afterwards. */
static __always_inline __u8 reflect_apply(struct __sk_buff *skb, const struct ip_header *ip, __u8 flags,
					  __u16 tunnel, __u8 dscp, int out, struct tunnel_stats *stats)
{
	struct reflect_key key = {};
	struct reflect_mark *stored;
	__u8 mark;

	if (dscp && !(flags & TUNNEL_REFLECT_OVERRIDE))
		return dscp;
	if (reflect_key(skb, ip, tunnel, &key) < 0)
		return dscp;
	stored = bpf_map_lookup_elem(&reflect, &key);
	if (!stored)
		return dscp;
	mark = (out ? stored->in : stored->out) & DSCP_MASK;
	if (!mark || mark == dscp)
		return dscp;
	write_dscp(ip, mark);
	if (out)
		stats->reflected_out[mark] += segments(skb);
	else
		stats->reflected_in[mark] += segments(skb);
	return mark;
}

#endif
