/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* The maps pdscp's programs share (docs/state.md; layouts in pdscp.h). */
#ifndef PDSCP_MAPS_H
#define PDSCP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "pdscp.h"

/* Sizes of flows and reflect are defaults; user space sets them before the
 * first load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_mark);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct reflect_key);
	__type(value, struct reflect_mark);
} reflect SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PDSCP_MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct tunnel_rec);
} tunnels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PDSCP_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct uplink_rec);
} uplinks SEC(".maps");

/* A hash lookup costs as much as the rest of a program: devices are found
 * in an array by ifindex, and only larger ifindexes in devices_hi. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PDSCP_DEV_SLOTS);
	__type(key, __u32);
	__type(value, struct dev_slot);
} devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PDSCP_DEV_SLOTS);
	__type(key, __u32);
	__type(value, struct dev_slot);
} devices_hi SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PDSCP_PORT_BLOCKS);
	__type(key, __u32);
	__type(value, struct port_block);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PDSCP_MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct tunnel_stats);
} tunnel_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PDSCP_MAX_LINKS);
	__type(key, __u32);
	__type(value, struct link_stats);
} link_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PDSCP_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct uplink_stats);
} uplink_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stamp);
} stamp SEC(".maps");

#endif
