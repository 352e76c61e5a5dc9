/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared between bpf/wirelens.bpf.c and user space
 * (dataplane/src/xdp/program.rs mirrors these numbers; a unit test there
 * reads this file and fails when the two drift apart).
 */
#ifndef WIRELENS_H
#define WIRELENS_H

#include <linux/types.h>

/* Entries of the XSKMAP: one AF_XDP socket per rx queue index. */
#define WL_MAX_QUEUES 256
/* Entries of each CIDR trie (IPv4 and IPv6 separately). */
#define WL_MAX_CIDRS 1024

/* Bits of struct wl_config.flags. No bit set: take every IP packet. */
#define WL_FILTER_ADDR 1 /* src or dst must fall in cidrs_v4 / cidrs_v6 */
#define WL_FILTER_PORT 2 /* TCP/UDP/SCTP src or dst port must be set in ports */

/* Slot 0 of the `config` array map. */
struct wl_config {
	__u32 flags;
};

/* Keys of the LPM tries: prefix length in bits, then the address in
 * network byte order (the layout BPF_MAP_TYPE_LPM_TRIE requires). */
struct wl_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct wl_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Indices of the per-CPU `counters` array (u64 each). Every frame the
 * program sees is counted in WL_CNT_SEEN and in exactly one of the others. */
#define WL_CNT_SEEN 0
#define WL_CNT_REDIRECTED 1     /* handed to the AF_XDP socket of its queue */
#define WL_CNT_PASS_NO_SOCKET 2 /* matched, but no socket on that queue: to the stack */
#define WL_CNT_PASS_FILTERED 3  /* IP, but outside the filter: to the stack */
#define WL_CNT_PASS_NOT_IP 4    /* ARP, LLDP, ...: to the stack */
#define WL_CNT_PASS_MALFORMED 5 /* too short to parse: to the stack */
/* Not part of that partition: frames also counted as taken (REDIRECTED or
 * PASS_NO_SOCKET) because the filter could not decide them (more VLAN tags
 * or IPv6 extension headers than the program walks, ESP, an unknown
 * extension header): taken, so no traffic shape hides from the filter. */
#define WL_CNT_TAKEN_UNDECIDED 6
#define WL_CNT_MAX 7

/* How deep the program looks (user space parses as deep). */
#define WL_MAX_VLAN_TAGS 4
#define WL_IPV6_MAX_EXT_HDRS 8

#endif /* WIRELENS_H */
