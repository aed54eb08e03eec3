// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Helpers for benches/per_packet/, never attached to a device.
 *
 *   bench_floor       the cheapest possible TC program: the floor every
 *                     per-packet cost is compared with.
 *   bench_hash_lookup, bench_array_lookup
 *                     yardsticks: the floor plus one lookup of skb->ifindex in
 *                     a hash map (as pdscp's devices_hi) or an array.
 *   bench_flows_lookup, bench_reflect_lookup
 *                     yardsticks: the floor plus one lookup of a present key
 *                     shaped as pdscp's flows key (8 bytes, LRU hash) or
 *                     reflect key (40 bytes, LRU hash).
 *   bench_trampoline  prepares the test-run skb the way BPF_PROG_TEST_RUN
 *                     cannot, then tail-calls the program under test (slot 0
 *                     of `target`): sets skb->hash (the test run refuses a
 *                     preset hash), optionally a new one per run (a new flow
 *                     every packet) or one of `flow_mask + 1` hashes in turn,
 *                     each for 2^burst_shift runs (many active flows, in
 *                     bursts), and writes back the packet's first bytes (the
 *                     writer changed them in the previous run).
 *                     Its own cost is measured by tail-calling bench_floor
 *                     with the same settings and subtracted.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define RESTORE_LEN 64

enum hash_mode {
	HASH_KEEP = 0,  /* leave skb->hash alone */
	HASH_SET = 1,   /* skb->hash = hash, then hash += hash_step; or, with
			 * flow_mask, hash + ((runs >> burst_shift) & flow_mask) */
	HASH_CLEAR = 2, /* no hash: the next bpf_get_hash_recalc() runs the flow dissector */
};

/* Set by user space between test runs. */
__u32 hash_mode;
__u32 hash;
__u32 hash_step;
__u32 flow_mask;
__u32 burst_shift;
__u32 runs;
__u32 restore_on;
__u8 restore[RESTORE_LEN];

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} hash_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} array_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} flows_map SEC(".maps");

struct wide_key {
	__u32 words[10];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct wide_key);
	__type(value, __u32);
} reflect_map SEC(".maps");

SEC("tc")
int bench_floor(struct __sk_buff *skb)
{
	return TC_ACT_UNSPEC;
}

SEC("tc")
int bench_hash_lookup(struct __sk_buff *skb)
{
	__u32 key = skb->ifindex;
	__u32 *value = bpf_map_lookup_elem(&hash_map, &key);

	return value && *value == 7 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int bench_array_lookup(struct __sk_buff *skb)
{
	__u32 key = skb->ifindex;
	__u32 *value = bpf_map_lookup_elem(&array_map, &key);

	return value && *value == 7 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int bench_flows_lookup(struct __sk_buff *skb)
{
	__u64 key = skb->ifindex;
	__u32 *value = bpf_map_lookup_elem(&flows_map, &key);

	return value && *value == 7 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int bench_reflect_lookup(struct __sk_buff *skb)
{
	struct wide_key key = { .words = { skb->ifindex } };
	__u32 *value = bpf_map_lookup_elem(&reflect_map, &key);

	return value && *value == 7 ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int bench_trampoline(struct __sk_buff *skb)
{
	if (restore_on)
		bpf_skb_store_bytes(skb, 0, restore, RESTORE_LEN, 0);
	if (hash_mode == HASH_SET && flow_mask) {
		bpf_set_hash(skb, hash + ((runs >> (burst_shift & 31)) & flow_mask));
		runs++;
	} else if (hash_mode == HASH_SET) {
		bpf_set_hash(skb, hash);
		hash += hash_step;
	} else if (hash_mode == HASH_CLEAR) {
		bpf_set_hash_invalid(skb);
	}
	bpf_tail_call(skb, &target, 0);
	return TC_ACT_SHOT; /* the tail call failed: the bench checks the return value */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
