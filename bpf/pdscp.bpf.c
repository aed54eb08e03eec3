// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * pdscp kernel side: three TC programs sharing one set of maps per pin root
 * (docs/state.md).
 *
 *   reader   (egress of each tunnel):  inner DSCP -> flows[{hash, port}]
 *   writer   (egress of each uplink):  flows[{skb->hash, udp sport}] -> outer DSCP
 *   ingress  (ingress of a tunnel, only with reflection)
 *
 * Tunnels such as WireGuard keep skb->hash across encapsulation, so the
 * writer finds the mark the reader stored for the same packet, on whichever
 * attached uplink it leaves by. Every program returns TC_ACT_UNSPEC
 * (== TCX_NEXT) so every other filter or TCX program on the hook still runs.
 *
 * The maps are in maps.h, parsing and rewriting in packet.h, reflection in
 * reflect.h.
 */
#include <linux/pkt_cls.h>

#include "maps.h"
#include "packet.h"
#include "pdscp.h"
#include "reflect.h"

/* This device's settings, or NULL if pdscp did not attach it. */
static __always_inline struct dev_slot *dev_config(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct dev_slot *slot;

	if (ifindex < PDSCP_DEV_SLOTS) {
		slot = bpf_map_lookup_elem(&devices, &ifindex);
	} else {
		slot = bpf_map_lookup_elem(&devices_hi, &ifindex);
		/* Keeps clang from merging the two calls into one with a map
		 * chosen at run time: the verifier inlines an array lookup
		 * only where the map is known, else calls the generic helper
		 * (an indirect call: 12 ns of every program, issue 16). */
		asm volatile("" : "+r"(slot));
	}
	return slot && slot->roles ? slot : NULL;
}

SEC("tc")
int pdscp_reader(struct __sk_buff *skb)
{
	const struct tunnel_rec *rec = NULL;
	struct ip_header ip = {};
	struct flow_key key = {};
	struct tunnel_stats *stats;
	struct flow_mark *stored;
	struct dev_slot *cfg;
	__u32 tunnel, segs;
	__u8 dscp, mark;

	cfg = dev_config(skb);
	if (!cfg || !(cfg->roles & DEV_TUNNEL))
		return TC_ACT_UNSPEC;
	tunnel = cfg->tunnel;
	stats = bpf_map_lookup_elem(&tunnel_stats, &tunnel);
	if (!stats)
		return TC_ACT_UNSPEC;
	if (parse_ip(skb, cfg->l2, &ip) < 0) {
		stats->not_ip++;
		return TC_ACT_UNSPEC;
	}
	dscp = read_dscp(&ip);
	if (cfg->tunnel_flags & (TUNNEL_MAPPED | TUNNEL_REFLECT_OUT | TUNNEL_REFLECT_IN)) {
		rec = bpf_map_lookup_elem(&tunnels, &tunnel);
		if (!rec)
			return TC_ACT_UNSPEC;
		dscp = reflect_step(skb, &ip, rec, cfg->tunnel_flags, tunnel, dscp, 1, stats);
	}
	dscp &= DSCP_MASK;
	segs = segments(skb);
	stats->seen[dscp] += segs;
	stats->seen_bytes[dscp] += skb->len;
	mark = dscp;
	if (rec && (cfg->tunnel_flags & TUNNEL_MAPPED)) {
		mark = rec->dscp_map[dscp] & DSCP_MASK;
		if (mark != dscp)
			stats->remapped += segs;
	}

	key.hash = bpf_get_hash_recalc(skb);
	/* No hash (nothing to dissect): nothing the writer could match. */
	if (!key.hash) {
		stats->no_hash++;
		return TC_ACT_UNSPEC;
	}
	/* Marks the hash as an L4 hash: iptunnel_xmit() clears any other hash,
	 * which would cost ICMP and other port-less flows their mark. */
	bpf_set_hash(skb, key.hash);
	key.port = cfg->port;

	/* Look up first: the steady state writes nothing. */
	stored = bpf_map_lookup_elem(&flows, &key);
	if (stored) {
		if (stored->dscp != mark || stored->tunnel != tunnel) {
			stored->dscp = mark;
			stored->tunnel = tunnel;
			stats->updates++;
		}
		return TC_ACT_UNSPEC;
	}
	/* An unmarked flow needs no entry: a miss leaves the outer DSCP at the
	 * tunnel's 0. A flow whose mark drops to 0 keeps its entry, set to 0. */
	if (mark) {
		struct flow_mark fresh = { .dscp = mark, .tunnel = tunnel };

		bpf_map_update_elem(&flows, &key, &fresh, BPF_ANY);
		stats->inserts++;
	}
	return TC_ACT_UNSPEC;
}

/* The outer packet gets `mark`: as its DSCP, or, for --priority-only, as the
 * CAKE tin that DSCP deserves (skb->priority), leaving the DSCP alone. */
static __always_inline void give_mark(struct __sk_buff *skb, const struct ip_header *ip,
				      const struct tunnel_rec *rec, __u32 uplink, __u8 mark,
				      struct link_stats *stats)
{
	mark &= DSCP_MASK;
	if (rec->flags & TUNNEL_PRIORITY) {
		struct uplink_rec *up = bpf_map_lookup_elem(&uplinks, &uplink);

		if (up && up->priority_major && up->tin_of[mark])
			skb->priority = up->priority_major | up->tin_of[mark];
	} else {
		write_dscp(ip, mark);
	}
	stats->marked[mark] += segments(skb);
	stats->marked_bytes += skb->len;
}

SEC("tc")
int pdscp_writer(struct __sk_buff *skb)
{
	void *data_end = (void *)(long)skb->data_end;
	const struct tunnel_rec *rec;
	struct uplink_stats *ustats;
	struct link_stats *lstats;
	struct port_block *block;
	struct ip_header ip = {};
	struct flow_key key = {};
	struct flow_mark *found;
	struct dev_slot *cfg;
	struct udphdr *udp;
	__u32 uplink, tunnel, row, zero = 0;
	__u16 sport, slot;

	cfg = dev_config(skb);
	if (!cfg || !(cfg->roles & DEV_UPLINK))
		return TC_ACT_UNSPEC;
	uplink = cfg->uplink;
	ustats = bpf_map_lookup_elem(&uplink_stats, &uplink);
	if (!ustats)
		return TC_ACT_UNSPEC;
	if (parse_ip(skb, cfg->l2, &ip) < 0)
		goto not_tunnel;
	udp = udp_header(skb, &ip);
	if (!udp)
		goto not_tunnel;

	sport = bpf_ntohs(udp->source);
	block = bpf_map_lookup_elem(&ports, &(__u32){ sport >> 8 });
	if (!block)
		goto not_tunnel;
	/* ports[0].tunnel[0] counts --any-port tunnels: it is no tunnel's slot,
	 * and port 0 is no tunnel's source port. */
	slot = sport ? block->tunnel[sport & 0xff] : 0;
	key.hash = skb->hash;
	if (slot) {
		tunnel = slot - 1;
		key.port = udp->source;
		found = NULL;
	} else {
		/* --any-port tunnels: the hash alone, the tunnel from the entry. */
		block = bpf_map_lookup_elem(&ports, &zero);
		if (!block || !block->tunnel[0])
			goto not_tunnel;
		found = bpf_map_lookup_elem(&flows, &key);
		if (!found) {
			ustats->missed_any++;
			return TC_ACT_UNSPEC;
		}
		tunnel = found->tunnel;
	}
	rec = bpf_map_lookup_elem(&tunnels, &tunnel);
	if (!rec)
		goto not_tunnel;
	row = rec->links[uplink & (PDSCP_MAX_UPLINKS - 1)];
	if (!row) {
		ustats->other_uplink++;
		return TC_ACT_UNSPEC;
	}
	lstats = bpf_map_lookup_elem(&link_stats, &row);
	if (!lstats)
		return TC_ACT_UNSPEC;
	if ((rec->flags & TUNNEL_HANDSHAKE) && is_wireguard_handshake(udp, data_end)) {
		give_mark(skb, &ip, rec, uplink, rec->handshake_dscp, lstats);
		lstats->handshakes++;
		return TC_ACT_UNSPEC;
	}
	if (rec->flags & TUNNEL_FIXED) {
		give_mark(skb, &ip, rec, uplink, rec->fixed_dscp, lstats);
		return TC_ACT_UNSPEC;
	}
	/* Hash 0 never has an entry (the reader stores none), so it misses. */
	if (!found)
		found = bpf_map_lookup_elem(&flows, &key);
	if (!found) {
		lstats->missed += segments(skb);
		return TC_ACT_UNSPEC;
	}
	give_mark(skb, &ip, rec, uplink, found->dscp, lstats);
	return TC_ACT_UNSPEC;

not_tunnel:
	ustats->not_tunnel++;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int pdscp_ingress(struct __sk_buff *skb)
{
	const struct tunnel_rec *rec;
	struct tunnel_stats *stats;
	struct ip_header ip = {};
	struct dev_slot *cfg;
	__u32 tunnel;
	__u8 dscp;

	cfg = dev_config(skb);
	if (!cfg || !(cfg->roles & DEV_TUNNEL) ||
	    !(cfg->tunnel_flags & (TUNNEL_REFLECT_OUT | TUNNEL_REFLECT_IN)))
		return TC_ACT_UNSPEC;
	tunnel = cfg->tunnel;
	stats = bpf_map_lookup_elem(&tunnel_stats, &tunnel);
	rec = bpf_map_lookup_elem(&tunnels, &tunnel);
	if (!stats || !rec || parse_ip(skb, cfg->l2, &ip) < 0)
		return TC_ACT_UNSPEC;
	stats->arrived += segments(skb);
	dscp = read_dscp(&ip);
	reflect_step(skb, &ip, rec, cfg->tunnel_flags, tunnel, dscp, 0, stats);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
