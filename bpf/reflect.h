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

/* The reflection step of a packet through the tunnel, `out` (egress, into
 * the tunnel) or in (ingress), with one lookup of its flow's entry:
 *
 * - apply (`out`: --reflect out, else --reflect in): an unmarked packet, or
 *   any with --reflect-override, gets the mark its flow carries the other way;
 * - learn (`out`: --reflect in, else --reflect out): the flow's mark in this
 *   direction is remembered if the tunnel allows reflecting it, else 0; a
 *   flow never marked gets no entry. Egress learns the mark the packet leaves
 *   with (after apply), ingress the one it arrived with.
 *
 * Returns the packet's DSCP afterwards. */
static __always_inline __u8 reflect_step(struct __sk_buff *skb, const struct ip_header *ip,
					 const struct tunnel_rec *rec, __u8 flags, __u16 tunnel, __u8 dscp,
					 int out, struct tunnel_stats *stats)
{
	int apply = flags & (out ? TUNNEL_REFLECT_OUT : TUNNEL_REFLECT_IN);
	int learn = flags & (out ? TUNNEL_REFLECT_IN : TUNNEL_REFLECT_OUT);
	struct reflect_mark fresh = {}, *stored;
	struct reflect_key key = {};
	__u8 now = dscp, learned, mark;

	if (dscp && !(flags & TUNNEL_REFLECT_OVERRIDE))
		apply = 0;
	if ((!apply && !learn) || reflect_key(skb, ip, tunnel, &key) < 0)
		return dscp;
	stored = bpf_map_lookup_elem(&reflect, &key);
	if (apply && stored) {
		mark = (out ? stored->in : stored->out) & DSCP_MASK;
		if (mark && mark != dscp)
			now = mark;
	}
	if (learn) {
		learned = (out ? now : dscp) & DSCP_MASK;
		mark = (rec->reflect_allow >> learned) & 1 ? learned : 0;
		if (stored) {
			if (out && stored->out != mark)
				stored->out = mark;
			else if (!out && stored->in != mark)
				stored->in = mark;
		} else if (mark) {
			if (out)
				fresh.out = mark;
			else
				fresh.in = mark;
			bpf_map_update_elem(&reflect, &key, &fresh, BPF_NOEXIST);
			stats->learned++;
		}
	}
	if (now == dscp)
		return dscp;
	if (out)
		stats->reflected_out[now & DSCP_MASK] += segments(skb);
	else
		stats->reflected_in[now & DSCP_MASK] += segments(skb);
	write_dscp(ip, now);
	return now;
}

#endif
