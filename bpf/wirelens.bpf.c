// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * wirelens XDP program: hands the frames we watch to the AF_XDP socket of
 * their rx queue and lets everything else go to the kernel stack.
 *
 * Fail-open by construction: the redirect is bpf_redirect_map(&xsks, queue,
 * XDP_PASS), so a queue without a live socket (daemon dead, worker gone)
 * passes its traffic to the stack instead of dropping it. Nothing here ever
 * returns XDP_DROP or XDP_ABORTED.
 *
 * Filter (empty = take every IP packet): an LPM trie per address family
 * (either address of the packet inside one of the CIDRs) and a port set
 * (either TCP/UDP/SCTP port in the set). With a port set, ICMP/ICMPv6 and
 * non-first fragments are taken on the address filter alone: they carry no
 * ports, and the ICMP errors (frag-needed, packet-too-big) belong to the
 * flows we watch. Non-IP frames (ARP, LLDP, ...) always pass.
 *
 * Fail-visible: what the filter cannot decide is taken, never passed
 * unseen, and counted in WL_CNT_TAKEN_UNDECIDED: a fifth VLAN tag (up to
 * four of 0x8100, 0x88a8, 0x9100 are walked, as user space does), more than
 * WL_IPV6_MAX_EXT_HDRS IPv6 extension headers, ESP (its ports are
 * encrypted), an experimental extension header (253, 254). AH is walked in
 * IPv4 and IPv6; Mobility, HIP and Shim6 are walked as extension headers.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "wirelens.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif
#define WL_IPV6_NEXTHDR_HOP 0
#define WL_IPV6_NEXTHDR_ROUTING 43
#define WL_IPV6_NEXTHDR_FRAGMENT 44
#define WL_IPV6_NEXTHDR_AUTH 51
#define WL_IPV6_NEXTHDR_DEST 60
#define WL_NEXTHDR_ESP 50
#define WL_IPV6_NEXTHDR_MOBILITY 135
#define WL_IPV6_NEXTHDR_HIP 139
#define WL_IPV6_NEXTHDR_SHIM6 140
#define WL_IPV6_NEXTHDR_EXP1 253
#define WL_IPV6_NEXTHDR_EXP2 254
#define WL_ETH_P_QINQ_9100 0x9100
/* Verdicts of match_v4 / match_v6. */
#define WL_MALFORMED -1
#define WL_FILTERED 0
#define WL_TAKE 1
#define WL_TAKE_UNDECIDED 2

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, WL_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wl_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WL_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct wl_lpm_v4);
	__type(value, __u8);
} cidrs_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WL_MAX_CIDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct wl_lpm_v6);
	__type(value, __u8);
} cidrs_v6 SEC(".maps");

/* ports[p] != 0: port p (host byte order) is watched. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct wl_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline int pass(__u32 why)
{
	count(why);
	return XDP_PASS;
}

static __always_inline int port_watched(__u16 port_be)
{
	__u32 key = bpf_ntohs(port_be);
	__u8 *v = bpf_map_lookup_elem(&ports, &key);

	return v && *v;
}

/* Ports of a TCP/UDP/SCTP header at l4; all three start with src, dst. */
static __always_inline int ports_match(void *l4, void *end)
{
	__be16 *p = l4;

	if ((void *)(p + 2) > end)
		return 0;
	return port_watched(p[0]) || port_watched(p[1]);
}

/* Port part of the filter, once the address part has matched.
 * nonfirst_frag: the fragment carries no L4 header. */
static __always_inline int l4_match(__u8 proto, void *l4, void *end, int nonfirst_frag)
{
	if (nonfirst_frag)
		return WL_TAKE;
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		return ports_match(l4, end) ? WL_TAKE : WL_FILTERED;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return WL_TAKE;
	case WL_NEXTHDR_ESP:
		/* The transport header is encrypted: cannot decide. */
		return WL_TAKE_UNDECIDED;
	default:
		return WL_FILTERED;
	}
}

static __always_inline int addr4_match(__be32 addr)
{
	struct wl_lpm_v4 key = { .prefixlen = 32 };

	__builtin_memcpy(key.addr, &addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&cidrs_v4, &key) != NULL;
}

static __always_inline int addr6_match(const struct in6_addr *addr)
{
	struct wl_lpm_v6 key = { .prefixlen = 128 };

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&cidrs_v6, &key) != NULL;
}

/* WL_TAKE, WL_TAKE_UNDECIDED, WL_FILTERED (pass to the stack) or WL_MALFORMED. */
static __always_inline int match_v4(void *cur, void *end, __u32 flags)
{
	struct iphdr *ip = cur;
	__u8 proto;
	__u32 ihl;
	__u8 *l4;
	int nonfirst_frag;

	if ((void *)(ip + 1) > end)
		return WL_MALFORMED;
	ihl = ip->ihl;
	if (ihl < 5)
		return WL_MALFORMED;
	if (!flags)
		return WL_TAKE;
	if ((flags & WL_FILTER_ADDR) && !addr4_match(ip->saddr) && !addr4_match(ip->daddr))
		return WL_FILTERED;
	if (!(flags & WL_FILTER_PORT))
		return WL_TAKE;
	proto = ip->protocol;
	l4 = cur + ihl * 4;
	nonfirst_frag = (ip->frag_off & bpf_htons(0x1fff)) != 0;
	if (proto == WL_IPV6_NEXTHDR_AUTH && !nonfirst_frag) {
		/* AH: next header, length in 4-byte units minus 2. */
		if ((void *)(l4 + 2) > end)
			return WL_MALFORMED;
		proto = l4[0];
		l4 += ((__u32)l4[1] + 2) * 4;
	}
	return l4_match(proto, l4, end, nonfirst_frag);
}

/* IPv6 extension headers the walk steps over (RFC 8200 4.1, RFC 6564
 * layout: next header, length in 8-byte units minus 1; AH in 4-byte units). */
static __always_inline int is_ext_hdr(__u8 h)
{
	return h == WL_IPV6_NEXTHDR_HOP || h == WL_IPV6_NEXTHDR_ROUTING ||
	       h == WL_IPV6_NEXTHDR_DEST || h == WL_IPV6_NEXTHDR_FRAGMENT ||
	       h == WL_IPV6_NEXTHDR_AUTH || h == WL_IPV6_NEXTHDR_MOBILITY ||
	       h == WL_IPV6_NEXTHDR_HIP || h == WL_IPV6_NEXTHDR_SHIM6;
}

static __always_inline int match_v6(void *cur, void *end, __u32 flags)
{
	struct ipv6hdr *ip6 = cur;
	__u8 nexthdr;
	int nonfirst_frag = 0;

	if ((void *)(ip6 + 1) > end)
		return WL_MALFORMED;
	if (!flags)
		return WL_TAKE;
	if ((flags & WL_FILTER_ADDR) && !addr6_match(&ip6->saddr) && !addr6_match(&ip6->daddr))
		return WL_FILTERED;
	if (!(flags & WL_FILTER_PORT))
		return WL_TAKE;

	nexthdr = ip6->nexthdr;
	cur = ip6 + 1;
#pragma unroll
	for (int i = 0; i < WL_IPV6_MAX_EXT_HDRS; i++) {
		__u8 *ext = cur;

		if (!is_ext_hdr(nexthdr))
			break;
		if ((void *)(ext + 8) > end)
			return WL_MALFORMED;
		if (nexthdr == WL_IPV6_NEXTHDR_FRAGMENT) {
			/* offset is the upper 13 bits of bytes 2..3 */
			if ((((__u16)ext[2] << 8 | ext[3]) & 0xfff8) != 0)
				nonfirst_frag = 1;
			nexthdr = ext[0];
			cur = ext + 8;
		} else if (nexthdr == WL_IPV6_NEXTHDR_AUTH) {
			nexthdr = ext[0];
			cur = ext + ((__u32)ext[1] + 2) * 4;
		} else {
			nexthdr = ext[0];
			cur = ext + ((__u32)ext[1] + 1) * 8;
		}
		if (nonfirst_frag)
			break;
	}
	if (!nonfirst_frag &&
	    (is_ext_hdr(nexthdr) || nexthdr == WL_IPV6_NEXTHDR_EXP1 ||
	     nexthdr == WL_IPV6_NEXTHDR_EXP2))
		/* Deeper than we walk, or a header of unknown layout. */
		return WL_TAKE_UNDECIDED;
	return l4_match(nexthdr, cur, end, nonfirst_frag);
}

SEC("xdp")
int wirelens_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct wl_config *cfg;
	__u32 key = 0, flags;
	__u16 proto;
	void *cur;
	int verdict;
	long act;

	count(WL_CNT_SEEN);
	if ((void *)(eth + 1) > end)
		return pass(WL_CNT_PASS_MALFORMED);
	proto = eth->h_proto;
	cur = eth + 1;

#pragma unroll
	for (int i = 0; i < WL_MAX_VLAN_TAGS; i++) {
		struct wl_vlan_hdr *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD) &&
		    proto != bpf_htons(WL_ETH_P_QINQ_9100))
			break;
		if ((void *)(vh + 1) > end)
			return pass(WL_CNT_PASS_MALFORMED);
		proto = vh->encap_proto;
		cur = vh + 1;
	}

	cfg = bpf_map_lookup_elem(&config, &key);
	flags = cfg ? cfg->flags : 0;

	if (proto == bpf_htons(ETH_P_IP))
		verdict = match_v4(cur, end, flags);
	else if (proto == bpf_htons(ETH_P_IPV6))
		verdict = match_v6(cur, end, flags);
	else if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
		 proto == bpf_htons(WL_ETH_P_QINQ_9100))
		/* A fifth tag: what it carries is beyond the walk. */
		verdict = WL_TAKE_UNDECIDED;
	else
		return pass(WL_CNT_PASS_NOT_IP);

	if (verdict == WL_MALFORMED)
		return pass(WL_CNT_PASS_MALFORMED);
	if (verdict == WL_FILTERED)
		return pass(WL_CNT_PASS_FILTERED);
	if (verdict == WL_TAKE_UNDECIDED)
		count(WL_CNT_TAKEN_UNDECIDED);

	act = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	count(act == XDP_REDIRECT ? WL_CNT_REDIRECTED : WL_CNT_PASS_NO_SOCKET);
	return (int)act;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
