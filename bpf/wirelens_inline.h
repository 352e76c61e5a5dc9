/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared between bpf/wirelens_inline.bpf.c and user space
 * (dataplane/src/xdp/inline.rs mirrors these numbers; a unit test there
 * reads this file and fails when the two drift apart).
 */
#ifndef WIRELENS_INLINE_H
#define WIRELENS_INLINE_H

#include <linux/types.h>

/* Entries of the peers devmap: every port of every pair. */
#define WL_INLINE_MAX_PORTS 64
/* Bytes of each frame copied for analysis: Ethernet, four VLAN tags, IPv6
 * with extension headers or IPv4 with options, TCP with options. */
#define WL_INLINE_SNAP 256
/* Size of the header-copy ring buffer (a power of two, page multiple). */
#define WL_INLINE_RING_BYTES (16 * 1024 * 1024)

/* Bits of struct wl_inline_config.flags. */
#define WL_INLINE_ANALYSE 1 /* copy headers into `frames`; clear: forward only */

/* Slot 0 of the `iconfig` array map. */
struct wl_inline_config {
	__u32 flags;
	/* Kernel id of the `peers` map: which redirect errors are ours. */
	__u32 peers_map_id;
};

/* One record of the `frames` ring buffer. */
struct wl_inline_rec {
	__u64 ts_ns; /* CLOCK_MONOTONIC at the program */
	__u32 wire_len; /* the frame's length */
	__u32 ifindex; /* the port it arrived on */
	__u32 caplen; /* bytes in data: min(wire_len, WL_INLINE_SNAP) */
	__u32 pad;
	__u8 data[WL_INLINE_SNAP];
};

/* Indices of the per-CPU `icounters` array (u64 each). Every frame is
 * counted in WL_ICNT_SEEN and in exactly one of FORWARDED and NO_PEER;
 * with analysis on, also in exactly one of COPIED, RING_FULL and
 * NOT_COPIED_EMPTY. */
#define WL_ICNT_SEEN 0
#define WL_ICNT_FORWARDED 1       /* redirected to the peer port */
#define WL_ICNT_NO_PEER 2         /* the port has no peer in the map: to the stack */
#define WL_ICNT_COPIED 3          /* header copy handed to user space */
#define WL_ICNT_RING_FULL 4       /* no room in the ring: not analysed, still forwarded */
#define WL_ICNT_NOT_COPIED_EMPTY 5 /* nothing could be copied: not analysed, still forwarded */
/* From the raw tracepoints, after the program returned: */
#define WL_ICNT_REDIRECT_ERR 6    /* a forwarded frame the kernel could not redirect */
#define WL_ICNT_XMIT_DROPS 7      /* a forwarded frame the peer port did not send */
#define WL_ICNT_MAX 8

#endif /* WIRELENS_INLINE_H */
