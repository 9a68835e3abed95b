// SPDX-License-Identifier: GPL-2.0
/* Kernel relay for pure L4 routes (docs/PROXY.md, "Kernel relay"). The proxy puts both sockets
 * of a connected pair into relay_targets and relay_socks (key: socket cookie) and names each
 * one's peer in relay_peers; this verdict program then sends every skb a socket receives to its
 * peer's egress, so the bytes never cross into user space. The proxy keeps the sockets: it
 * watches them for FIN/RST and closes them. remora-init loads this object, attaches the program
 * to relay_socks and pins the maps for the proxy's uid; relay_meta records which build it is, so
 * that another build's install replaces the program in place.
 *
 * Why two sockhashes: leaving relay_socks stops a socket's verdict (its bytes stay in its own
 * receive queue, where TCP's window accounts for them), while relay_targets keeps its psock, so
 * the bytes already redirected to it are still written out, and it stays a redirect target.
 * Leaving every sockmap would drop those bytes. That is how the proxy takes a pair whose reader
 * fell behind off the kernel path without losing a byte ("Backpressure" below). */
// clang-format off
#include "vmlinux.h"  // first: the kernel types every other header uses
// clang-format on
#include <bpf/bpf_helpers.h>

#include "remora_abi.h"

#define SK_DROP 0
#define SK_PASS 1

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, REMORA_RELAY_MAX_SOCKETS);
  __type(key, __u64);
  __type(value, __u64);
} relay_socks SEC(".maps");

/* The same sockets with no program attached: what redirects go to (see above). */
struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, REMORA_RELAY_MAX_SOCKETS);
  __type(key, __u64);
  __type(value, __u64);
} relay_targets SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, REMORA_RELAY_MAX_SOCKETS);
  __type(key, __u64);
  __type(value, struct remora_relay_peer);
} relay_peers SEC(".maps");

/* Pairs whose reader fell behind (struct remora_relay_event), for the proxy, which polls it. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, REMORA_RELAY_EVENTS_BYTES);
} relay_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, REMORA_RC_MAX);
  __type(key, __u32);
  __type(value, __u64);
} relay_counters SEC(".maps");

/* Read by userspace only: which build the verdict program comes from (remora_relay_meta). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct remora_relay_meta);
} relay_meta SEC(".maps");

static __always_inline void count(__u32 index, __u64 by) {
  __u64* value = bpf_map_lookup_elem(&relay_counters, &index);
  if (value) *value += by;
}

/* Bytes redirected to the peer that have not reached its socket yet: they wait in the peer's
 * psock queue, which has no bound of its own. The peer's write_seq moves as its socket takes
 * them (nothing else writes to a relayed socket). -1: the peer is gone. */
static __always_inline long peerBacklog(struct remora_relay_peer* peer) {
  struct bpf_sock* sk = bpf_map_lookup_elem(&relay_targets, &peer->peer_cookie);
  if (!sk) return -1;
  struct tcp_sock* tp = bpf_skc_to_tcp_sock(sk);
  __u32 write_seq = tp ? tp->write_seq : 0;
  bpf_sk_release(sk);
  if (!tp) return -1;
  if (!peer->based) {
    /* First redirect of this direction: nothing has been written to the peer yet. */
    peer->seq_base = write_seq;
    peer->based = 1;
    return 0;
  }
  return (__u32)((__u32)peer->bytes - (write_seq - peer->seq_base));
}

SEC("sk_skb/stream_verdict")
int remora_relay_verdict(struct __sk_buff* skb) {
  __u64 cookie = bpf_get_socket_cookie(skb);
  struct remora_relay_peer* peer = bpf_map_lookup_elem(&relay_peers, &cookie);
  if (!peer) {
    /* Not (or no longer) relayed: the bytes stay readable by the socket's owner. */
    count(REMORA_RC_NO_PEER, 1);
    return SK_PASS;
  }
  __u32 len = skb->len;
  /* The FIN arrives as an skb of its own when it carries no data; redirected, it would be sent
   * as an empty write after the proxy shut the peer down (EPIPE). The socket has recorded the
   * FIN already, and the proxy propagates it. */
  if (len == 0) return SK_DROP;
  /* Backpressure. A redirected skb no longer counts against this socket's receive buffer, so
   * TCP would keep the sender's window open however slowly the peer reads, and the peer's
   * redirect queue would grow without bound. Once it holds more than the limit, the proxy is
   * told (once per direction) and takes the pair out of relay_socks: from then on the bytes
   * stay in this socket's receive queue and TCP's window closes. This skb and any before the
   * proxy acts are still redirected: every verdict this program can give short of a redirect
   * would drop bytes TCP has acknowledged, or keep them on the sockmap's own receive path. A
   * limit of 0 turns this off (one sockhash lookup per skb saved). */
  if (peer->limit && !peer->over && peerBacklog(peer) > (long)peer->limit) {
    struct remora_relay_event event = {cookie, peer->owner, peer->slot};
    if (bpf_ringbuf_output(&relay_events, &event, sizeof(event), 0) == 0) {
      /* A plain store: one verdict at a time per socket, and the flag only goes 0 -> 1. */
      peer->over = 1;
      count(REMORA_RC_PAIRS_OVER, 1);
    } else {
      count(REMORA_RC_EVENTS_LOST, 1);
    }
  }
  long verdict = bpf_sk_redirect_hash(skb, &relay_targets, &peer->peer_cookie, 0);
  /* A pair inserted by another build's proxy, before an upgrade in place, is in relay_socks
   * alone. */
  if (verdict != SK_PASS) verdict = bpf_sk_redirect_hash(skb, &relay_socks, &peer->peer_cookie, 0);
  if (verdict != SK_PASS) {
    count(REMORA_RC_REDIRECT_FAILED, 1);
    return SK_DROP;
  }
  __sync_fetch_and_add(&peer->bytes, len);
  count(REMORA_RC_REDIRECTED_BYTES, len);
  count(REMORA_RC_REDIRECTED_SKBS, 1);
  return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
