// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A "foreign" TC program for tests/reliability.rs: somebody else's program
 * sharing the hooks pdscp uses. It counts every packet it sees in a
 * one-entry array map and lets the packet go on unchanged
 * (TC_ACT_UNSPEC == TCX_NEXT), so the tests can prove that pdscp never
 * removes, replaces or starves programs that are not its own.
 *
 * Its name does not start with "pdscp_", so pdscp must treat it as foreign.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
