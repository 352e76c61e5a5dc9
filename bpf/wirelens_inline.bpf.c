// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * wirelens inline XDP program (`wirelens run --inline IF_A,IF_B`): a bump in
 * the wire that forwards in the kernel and hands header copies to user space.
 *
 * Forwarding: every frame that arrives on a port leaves, unchanged, on its
 * peer: bpf_redirect_map(&peers, ingress ifindex, XDP_PASS). The program
 * never waits for user space and never looks at what user space does: a
 * dead, stopped or slow daemon changes nothing on the path (fail-open by
 * design). The program stays attached after its loader exits (a netlink
 * XDP attach has no owner), its maps with it.
 *
 * Analysis: while the `analyse` flag is set, a copy of the first
 * WL_INLINE_SNAP bytes, the wire length and a CLOCK_MONOTONIC timestamp go
 * into the `frames` ring buffer; a full ring (user space slow or gone)
 * costs the copy only, counted in WL_ICNT_RING_FULL, never the frame.
 *
 * Frames that cannot be forwarded are counted by reason: no peer in the
 * map (passed to the stack, WL_ICNT_NO_PEER) here; the redirect errors and
 * transmit drops the kernel reports after the program returned, by the two
 * raw tracepoint programs below (while they are attached: they end with
 * the daemon).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "wirelens_inline.h"

/* Key: the ingress ifindex; value: the peer port (struct bpf_devmap_val). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, WL_INLINE_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, WL_INLINE_RING_BYTES);
} frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wl_inline_config);
} iconfig SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WL_ICNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} icounters SEC(".maps");

static __always_inline void icount(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&icounters, &idx);

	if (v)
		*v += n; /* per-CPU slot: no atomic needed */
}

static __always_inline struct wl_inline_config *config(void)
{
	__u32 key = 0;

	return bpf_map_lookup_elem(&iconfig, &key);
}

/* The header copy for user space; the frame itself is not touched. */
static __always_inline void copy_headers(struct xdp_md *ctx)
{
	struct wl_inline_rec *rec;
	/* 64-bit, so that the verifier sees the clamp on the register the
	 * copy's length comes from. */
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__u64 cap = len;

	if (cap > WL_INLINE_SNAP)
		cap = WL_INLINE_SNAP;
	if (cap < 1) {
		icount(WL_ICNT_NOT_COPIED_EMPTY, 1);
		return;
	}
	rec = bpf_ringbuf_reserve(&frames, sizeof(*rec), 0);
	if (!rec) {
		icount(WL_ICNT_RING_FULL, 1);
		return;
	}
	rec->ts_ns = bpf_ktime_get_ns();
	rec->wire_len = len;
	rec->ifindex = ctx->ingress_ifindex;
	rec->caplen = cap;
	rec->pad = 0;
	if (bpf_xdp_load_bytes(ctx, 0, rec->data, cap) < 0) {
		bpf_ringbuf_discard(rec, 0);
		icount(WL_ICNT_NOT_COPIED_EMPTY, 1);
		return;
	}
	bpf_ringbuf_submit(rec, 0);
	icount(WL_ICNT_COPIED, 1);
}

SEC("xdp")
int wirelens_inline(struct xdp_md *ctx)
{
	struct wl_inline_config *cfg = config();
	long act;

	icount(WL_ICNT_SEEN, 1);
	if (cfg && (cfg->flags & WL_INLINE_ANALYSE))
		copy_headers(ctx);
	act = bpf_redirect_map(&peers, ctx->ingress_ifindex, XDP_PASS);
	icount(act == XDP_REDIRECT ? WL_ICNT_FORWARDED : WL_ICNT_NO_PEER, 1);
	return (int)act;
}

/* Only the field we read; CO-RE finds it in the running kernel's layout. */
struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

/* trace_xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index):
 * a redirect that failed after the program returned (target gone or
 * down, no XDP transmit on it). Ours when map_id is our peers map. */
SEC("raw_tp/xdp_redirect_err")
int wirelens_inline_redirect_err(struct bpf_raw_tracepoint_args *ctx)
{
	struct wl_inline_config *cfg = config();

	if (!cfg || cfg->peers_map_id == 0 || (__u32)ctx->args[5] != cfg->peers_map_id)
		return 0;
	icount(WL_ICNT_REDIRECT_ERR, 1);
	return 0;
}

/* trace_xdp_devmap_xmit(from_dev, to_dev, sent, drops, err): a bulk
 * transmit of redirected frames; `drops` of them did not leave. Ours when
 * from_dev -> to_dev is one of our port pairs. */
SEC("raw_tp/xdp_devmap_xmit")
int wirelens_inline_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct net_device *from = (struct net_device *)ctx->args[0];
	struct net_device *to = (struct net_device *)ctx->args[1];
	int drops = (int)ctx->args[3];
	struct bpf_devmap_val *peer;
	__u32 from_ifindex;
	int to_ifindex;

	if (drops <= 0)
		return 0;
	from_ifindex = BPF_CORE_READ(from, ifindex);
	to_ifindex = BPF_CORE_READ(to, ifindex);
	peer = bpf_map_lookup_elem(&peers, &from_ifindex);
	if (!peer || (int)peer->ifindex != to_ifindex)
		return 0;
	icount(WL_ICNT_XMIT_DROPS, (__u64)drops);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
