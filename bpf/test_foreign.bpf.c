// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * "Foreign" TC programs for the tests: somebody else's programs sharing the
 * hooks pdscp uses. Their names do not start with "pdscp_", so pdscp must
 * treat them as foreign.
 *
 *   foreign_count    counts every packet it sees in a one-entry array map
 *                    and lets it go on unchanged (TC_ACT_UNSPEC ==
 *                    TCX_NEXT): pdscp never removes, replaces or starves
 *                    programs that are not its own.
 *   foreign_mark_cs1 marks every IPv4 UDP packet of an Ethernet device CS1,
 *                    as qosify's defaults mark UDP on a WAN: another DSCP
 *                    writer on pdscp's hook, for the tests of who wins.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} foreign_packets SEC(".maps");

SEC("tc")
int foreign_count(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *count = bpf_map_lookup_elem(&foreign_packets, &key);

	if (count)
		__sync_fetch_and_add(count, 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int foreign_mark_cs1(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u8 tos;

	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || iph->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	tos = (8 << 2) | (iph->tos & 3);
	if (tos != iph->tos) {
		__u16 old = bpf_htons(iph->tos), new = bpf_htons(tos);
		int off = sizeof(*eth) + __builtin_offsetof(struct iphdr, tos);

		bpf_l3_csum_replace(skb, sizeof(*eth) + __builtin_offsetof(struct iphdr, check), old, new, 2);
		bpf_skb_store_bytes(skb, off, &tos, 1, 0);
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
