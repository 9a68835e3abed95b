// SPDX-License-Identifier: GPL-2.0
/* Remora's eBPF interception (docs/EBPF.md):
 *  - cgroup/connect4, cgroup/connect6: a TCP connect from a meshed netns is rewritten to the
 *    proxy's outbound listener on loopback, and its original destination recorded by socket
 *    cookie;
 *  - sockops: once that connection is established, the record is re-keyed by the app's local
 *    address and port, which is the peer the proxy's accepted socket sees;
 *  - cgroup/getsockopt: SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on the proxy's accepted socket is
 *    answered from that record, so the proxy reads it exactly as after an iptables REDIRECT;
 *  - sockops also puts the proxy's inbound listener (listen() on the netns's inbound port) in a
 *    sockhash, and sk_lookup, attached to each meshed netns, steers inbound connections to the
 *    pod's ports to it: no NAT, so the proxy's getsockname() is the original destination;
 *  - sockops deletes a connection's records when the app's socket closes (STATE_CB to TCP_CLOSE),
 *    so the original-destination maps hold only live connections;
 *  - the fast path (REMORA_F_FAST_PATH): sockops puts both sockets of an app<->proxy loopback
 *    connection in a sockhash, and sk_msg redirects each send straight into the peer socket's
 *    receive queue, past loopback TCP. */
// clang-format off
#include "vmlinux.h"  // first: the kernel types every other header uses
// clang-format on
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "remora_abi.h"
#include "remora_decide.h"

char LICENSE[] SEC("license") = "GPL";

#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define REMORA_TCP_ESTABLISHED 1
#define REMORA_TCP_FIN_WAIT1 4
#define REMORA_TCP_CLOSE 7

/* A context field read as one load at its own offset: clang may otherwise merge the reads of two
 * branches into one load through a computed context pointer, which the verifier refuses. */
#define CTX_READ(field) (*(volatile __typeof__(field)*)&(field))

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, REMORA_MAX_NETNS);
  __type(key, __u64);
  __type(value, struct remora_netns_settings);
} remora_netns SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, REMORA_MAX_ORIG_DST);
  __type(key, __u64);
  __type(value, struct remora_orig_dst);
} remora_orig_by_cookie SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, REMORA_MAX_ORIG_DST);
  __type(key, struct remora_tuple_key);
  __type(value, struct remora_orig_dst);
} remora_orig_by_tuple SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, REMORA_MAX_ADDRS);
  __type(key, struct remora_addr_key);
  __type(value, __u64);
} remora_inbound_addrs SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, REMORA_MAX_NETNS * 2);
  __type(key, struct remora_listener_key);
  __type(value, __u64);
} remora_listeners SEC(".maps");

/* The fast path's sockets, each keyed as it sees itself; sk_msg (attached to this map) looks up
 * the peer by the swapped key. The kernel removes a socket when it closes. */
struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, REMORA_MAX_PAIRS);
  __type(key, struct remora_pair_key);
  __type(value, __u64);
} remora_pairs SEC(".maps");

/* Fast-path sockets that sent through loopback TCP once (their peer was not in the sockhash
 * yet): they keep doing so, since the peer reads redirected bytes before bytes already waiting
 * in its TCP receive queue, which would reorder the stream. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, REMORA_MAX_PAIRS);
  __type(key, struct remora_pair_key);
  __type(value, __u8);
} remora_pairs_slow SEC(".maps");

/* Read by userspace only: which build the programs come from (struct remora_meta). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct remora_meta);
} remora_meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, REMORA_C_MAX);
  __type(key, __u32);
  __type(value, __u64);
} remora_counters SEC(".maps");

static __always_inline void count_by(__u32 counter, __u64 by) {
  __u64* value = bpf_map_lookup_elem(&remora_counters, &counter);
  if (value) *value += by;
}

static __always_inline void count(__u32 counter) { count_by(counter, 1); }

/* The counter of each verdict (enum remora_verdict and enum remora_counter list them alike). */
static __always_inline __u32 verdict_counter(enum remora_verdict v) {
  switch (v) {
    case REMORA_V_REDIRECT:
      return REMORA_C_REDIRECTED;
    case REMORA_V_BYPASS_UID:
      return REMORA_C_BYPASS_UID;
    case REMORA_V_BYPASS_GID:
      return REMORA_C_BYPASS_GID;
    case REMORA_V_EXCLUDED_PORT:
      return REMORA_C_EXCLUDED_PORT;
    case REMORA_V_EXCLUDED_CIDR:
      return REMORA_C_EXCLUDED_CIDR;
    case REMORA_V_NOT_INCLUDED:
      return REMORA_C_NOT_INCLUDED;
    case REMORA_V_LOOPBACK:
      return REMORA_C_LOOPBACK;
    case REMORA_V_IPV6_OFF:
      return REMORA_C_IPV6_OFF;
  }
  return REMORA_C_MAX;
}

/* Shared by connect4 and connect6: decides and, on REDIRECT, records the original destination.
 * Returns the settings to rewrite with, or NULL to leave the connect alone. */
static __always_inline const struct remora_netns_settings* decide(struct bpf_sock_addr* ctx,
                                                                  __u8 family, __u32* addr) {
  if (ctx->type != SOCK_STREAM || (ctx->protocol != IPPROTO_TCP && ctx->protocol != 0)) return 0;
  __u64 netns = bpf_get_netns_cookie(ctx);
  const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, &netns);
  if (!s) return 0;
  __u64 ids = bpf_get_current_uid_gid();
  __u16 port = bpf_ntohs((__u16)ctx->user_port);
  enum remora_verdict v =
      remora_decide_outbound(s, family, addr, port, (__u32)ids, (__u32)(ids >> 32));
  count(verdict_counter(v));
  if (v != REMORA_V_REDIRECT) return 0;
  struct remora_orig_dst orig = {};
  orig.netns_cookie = netns;
  orig.addr[0] = addr[0];
  orig.addr[1] = addr[1];
  orig.addr[2] = addr[2];
  orig.addr[3] = addr[3];
  orig.port = port;
  orig.family = family;
  orig.uid = (__u32)ids;
  __u64 cookie = bpf_get_socket_cookie(ctx);
  if (bpf_map_update_elem(&remora_orig_by_cookie, &cookie, &orig, BPF_ANY) != 0) return 0;
  return s;
}

SEC("cgroup/connect4")
int remora_connect4(struct bpf_sock_addr* ctx) {
  __u32 addr[4] = {ctx->user_ip4, 0, 0, 0};
  const struct remora_netns_settings* s = decide(ctx, REMORA_AF_INET, addr);
  if (s) {
    ctx->user_ip4 = bpf_htonl(0x7f000001);
    ctx->user_port = bpf_htons(s->outbound_port);
  }
  return 1;
}

SEC("cgroup/connect6")
int remora_connect6(struct bpf_sock_addr* ctx) {
  __u32 addr[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
  /* A v4-mapped destination on a dual-stack socket is an IPv4 connection: decide and record it
   * as one, and send it to the proxy's IPv4 listener. */
  int mapped = addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0xffff);
  const struct remora_netns_settings* s;
  if (mapped) {
    __u32 v4[4] = {addr[3], 0, 0, 0};
    s = decide(ctx, REMORA_AF_INET, v4);
  } else {
    s = decide(ctx, REMORA_AF_INET6, addr);
  }
  if (s) {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = mapped ? bpf_htonl(0xffff) : 0;
    ctx->user_ip6[3] = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);
    ctx->user_port = bpf_htons(s->outbound_port);
  }
  return 1;
}

/* The app's local address in the form the proxy's accepted socket reports as its peer. */
static __always_inline void tuple_local(struct bpf_sock_ops* skops, struct remora_tuple_key* key) {
  key->port = (__u16)skops->local_port;
  if (skops->family == REMORA_AF_INET) {
    key->family = REMORA_AF_INET;
    key->addr[0] = CTX_READ(skops->local_ip4);
    return;
  }
  key->family = REMORA_AF_INET6;
  key->addr[0] = CTX_READ(skops->local_ip6[0]);
  key->addr[1] = CTX_READ(skops->local_ip6[1]);
  key->addr[2] = CTX_READ(skops->local_ip6[2]);
  key->addr[3] = CTX_READ(skops->local_ip6[3]);
  if (key->addr[0] == 0 && key->addr[1] == 0 && key->addr[2] == bpf_htonl(0xffff)) {
    key->family = REMORA_AF_INET;
    key->addr[0] = key->addr[3];
    key->addr[2] = 0;
    key->addr[3] = 0;
  }
}

/* The proxy's inbound listener: any TCP socket listening on the meshed netns's inbound port
 * (what an iptables REDIRECT to that port would reach too). */
static __always_inline void add_listener(struct bpf_sock_ops* skops) {
  __u64 netns = bpf_get_netns_cookie(skops);
  const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, &netns);
  if (!s || !(s->flags & REMORA_F_INBOUND) || skops->local_port != s->inbound_port) return;
  struct remora_listener_key key = {};
  key.netns_cookie = netns;
  key.family = skops->family;
  if (bpf_sock_hash_update(skops, &remora_listeners, &key, BPF_ANY) == 0) {
    count(REMORA_C_LISTENER_ADDED);
  }
}

/* A rewritten connect: watch the socket's state, so its records go when it closes. */
static __always_inline void watch_close(struct bpf_sock_ops* skops) {
  __u64 cookie = bpf_get_socket_cookie(skops);
  if (!bpf_map_lookup_elem(&remora_orig_by_cookie, &cookie)) return;
  bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* The app's socket of a rewritten connect reached TCP_CLOSE (TIME_WAIT began, a reset, a failed
 * connect). A connect that never got established has only its cookie record, which goes. The
 * established one's record goes if the proxy has read it; if not (an app that wrote and closed
 * before the proxy's accept: its orphaned socket closes as soon as its FIN is acked), it is
 * marked closed and the proxy's read deletes it. */
static __always_inline void forget(struct bpf_sock_ops* skops) {
  __u64 cookie = bpf_get_socket_cookie(skops);
  if (bpf_map_delete_elem(&remora_orig_by_cookie, &cookie) == 0) count(REMORA_C_ORIG_DST_DELETED);
  struct remora_tuple_key key = {};
  key.netns_cookie = bpf_get_netns_cookie(skops);
  tuple_local(skops, &key);
  struct remora_orig_dst* orig = bpf_map_lookup_elem(&remora_orig_by_tuple, &key);
  if (!orig) return;
  if (orig->state & REMORA_ORIG_ANSWERED) {
    if (bpf_map_delete_elem(&remora_orig_by_tuple, &key) == 0) count(REMORA_C_ORIG_DST_DELETED);
  } else {
    orig->state |= REMORA_ORIG_CLOSED;
  }
}

static __always_inline int is_v4_mapped(const __u32* a) {
  return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Fills the address half of a pair key; a v4-mapped pair is keyed as IPv4, the same way by
 * sockops and sk_msg. */
static __always_inline void pair_addrs(struct remora_pair_key* key, __u32 family,
                                       const __u32* local, const __u32* remote) {
  key->family = family;
  if (family == REMORA_AF_INET6 && is_v4_mapped(local) && is_v4_mapped(remote)) {
    key->family = REMORA_AF_INET;
    key->local_addr[0] = local[3];
    key->remote_addr[0] = remote[3];
    return;
  }
  for (int i = 0; i < 4; i++) {
    key->local_addr[i] = local[i];
    key->remote_addr[i] = remote[i];
  }
}

/* 127.0.0.6 or ::6, the source of the proxy's inbound passthrough to the app. */
static __always_inline int is_passthrough_source(__u32 family, const __u32* a) {
  if (family == REMORA_AF_INET) return remora_ntohl(a[0]) == 0x7f000006;
  return a[0] == 0 && a[1] == 0 && a[2] == 0 && remora_ntohl(a[3]) == 6;
}

/* Which end of a fast-path connection a socket is (pair_key). The proxy's end: accepted on the
 * outbound port, or connected from 127.0.0.6. The app's end: connected to the outbound port, or
 * accepted from 127.0.0.6. */
#define PAIR_NONE 0
#define PAIR_PROXY_END 1
#define PAIR_APP_END 2

/* The fast-path key of a socket inside a netns with the fast path on, as the socket sees itself,
 * and which end it is. Both sockets of an app<->proxy connection qualify: the app's connect to
 * the proxy's outbound listener (both ends on loopback, one port the outbound port), and the
 * proxy's inbound passthrough to the app (one end 127.0.0.6 or ::6). */
static __always_inline int pair_end(struct remora_pair_key* key, __u16 outbound_port) {
  __u8 f = (__u8)key->family;
  if (remora_is_loopback(f, key->local_addr) && remora_is_loopback(f, key->remote_addr)) {
    if (key->remote_port == outbound_port) return PAIR_APP_END;
    if (key->local_port == outbound_port) return PAIR_PROXY_END;
  }
  if (is_passthrough_source(key->family, key->remote_addr)) return PAIR_APP_END;
  if (is_passthrough_source(key->family, key->local_addr)) return PAIR_PROXY_END;
  return PAIR_NONE;
}

static __always_inline int pair_key(struct bpf_sock_ops* skops, struct remora_pair_key* key) {
  __u64 netns = bpf_get_netns_cookie(skops);
  const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, &netns);
  if (!s || !(s->flags & REMORA_F_FAST_PATH)) return PAIR_NONE;
  __u32 local[4] = {}, remote[4] = {};
  if (skops->family == REMORA_AF_INET) {
    local[0] = CTX_READ(skops->local_ip4);
    remote[0] = CTX_READ(skops->remote_ip4);
  } else {
    local[0] = CTX_READ(skops->local_ip6[0]);
    local[1] = CTX_READ(skops->local_ip6[1]);
    local[2] = CTX_READ(skops->local_ip6[2]);
    local[3] = CTX_READ(skops->local_ip6[3]);
    remote[0] = CTX_READ(skops->remote_ip6[0]);
    remote[1] = CTX_READ(skops->remote_ip6[1]);
    remote[2] = CTX_READ(skops->remote_ip6[2]);
    remote[3] = CTX_READ(skops->remote_ip6[3]);
  }
  key->netns_cookie = netns;
  key->local_port = (__u16)skops->local_port;
  key->remote_port = (__u16)bpf_ntohl(skops->remote_port);
  pair_addrs(key, skops->family, local, remote);
  return pair_end(key, s->outbound_port);
}

/* The other end's key: local and remote swapped. */
static __always_inline void peer_key(const struct remora_pair_key* self,
                                     struct remora_pair_key* peer) {
  peer->netns_cookie = self->netns_cookie;
  peer->family = self->family;
  peer->local_port = self->remote_port;
  peer->remote_port = self->local_port;
  for (int i = 0; i < 4; i++) {
    peer->local_addr[i] = self->remote_addr[i];
    peer->remote_addr[i] = self->local_addr[i];
  }
}

static __always_inline void add_pair(struct bpf_sock_ops* skops) {
  struct remora_pair_key key = {};
  int end = pair_key(skops, &key);
  if (end == PAIR_NONE) return;
  bpf_map_delete_elem(&remora_pairs_slow, &key); /* a reused 4-tuple starts fast again */
  if (bpf_sock_hash_update(skops, &remora_pairs, &key, BPF_NOEXIST) == 0) {
    count(REMORA_C_PAIR_ADDED);
    /* The app's end leaves at its first FIN (release_app_end). */
    if (end == PAIR_APP_END) {
      bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
    }
  }
}

/* The app's end of a fast-path connection sent the connection's first FIN (shutdown(SHUT_WR);
 * a close() has taken it out of the sockhash already). It leaves the sockhash now, which gives
 * its psock up and its reads back to TCP's own recvmsg, before the app can block in a read
 * waiting for the reply: tcp_bpf_recvmsg (the recvmsg of a socket with a psock) returns EAGAIN
 * to a blocking reader woken with nothing queued, and the ACK of this FIN, arriving on its own,
 * is such a wakeup (docs/EBPF.md, "Close"). Nothing is lost: the fast path never queues bytes in
 * an app socket's psock (remora_msg), and the app cannot send after its FIN. */
static __always_inline void release_app_end(struct bpf_sock_ops* skops) {
  struct remora_pair_key self = {};
  if (pair_key(skops, &self) != PAIR_APP_END) return;
  if (bpf_map_delete_elem(&remora_pairs, &self) == 0) count(REMORA_C_PAIR_RELEASED);
}

SEC("sockops")
int remora_sockops(struct bpf_sock_ops* skops) {
  switch (skops->op) {
    case BPF_SOCK_OPS_TCP_LISTEN_CB:
      add_listener(skops);
      return 1;
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
      watch_close(skops);
      return 1;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
      add_pair(skops);
      return 1;
    case BPF_SOCK_OPS_STATE_CB:
      if (skops->args[0] == REMORA_TCP_ESTABLISHED && skops->args[1] == REMORA_TCP_FIN_WAIT1) {
        release_app_end(skops);
      }
      if (skops->args[1] == REMORA_TCP_CLOSE) forget(skops);
      return 1;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
      break;
    default:
      return 1;
  }
  add_pair(skops);
  __u64 cookie = bpf_get_socket_cookie(skops);
  struct remora_orig_dst* orig = bpf_map_lookup_elem(&remora_orig_by_cookie, &cookie);
  if (!orig) return 1;
  struct remora_tuple_key key = {};
  key.netns_cookie = orig->netns_cookie;
  tuple_local(skops, &key);
  struct remora_orig_dst copy = *orig;
  if (bpf_map_update_elem(&remora_orig_by_tuple, &key, &copy, BPF_ANY) == 0) {
    count(REMORA_C_TUPLE_RECORDED);
  }
  bpf_map_delete_elem(&remora_orig_by_cookie, &cookie);
  return 1;
}

/* Each send of a fast-path socket goes into its peer's receive queue (BPF_F_INGRESS), as if it
 * had crossed loopback TCP. A socket whose peer is not (or no longer) in the sockhash sends
 * through TCP, and keeps doing so (remora_pairs_slow). */
SEC("sk_msg")
int remora_msg(struct sk_msg_md* msg) {
  __u32 local[4] = {}, remote[4] = {};
  if (msg->family == REMORA_AF_INET) {
    local[0] = CTX_READ(msg->local_ip4);
    remote[0] = CTX_READ(msg->remote_ip4);
  } else {
    local[0] = CTX_READ(msg->local_ip6[0]);
    local[1] = CTX_READ(msg->local_ip6[1]);
    local[2] = CTX_READ(msg->local_ip6[2]);
    local[3] = CTX_READ(msg->local_ip6[3]);
    remote[0] = CTX_READ(msg->remote_ip6[0]);
    remote[1] = CTX_READ(msg->remote_ip6[1]);
    remote[2] = CTX_READ(msg->remote_ip6[2]);
    remote[3] = CTX_READ(msg->remote_ip6[3]);
  }
  struct remora_pair_key self = {};
  self.netns_cookie = bpf_get_netns_cookie(msg);
  self.local_port = (__u16)msg->local_port;
  self.remote_port = (__u16)bpf_ntohl(msg->remote_port);
  pair_addrs(&self, msg->family, local, remote);
  /* Only the app's sends are redirected. The proxy's go through loopback TCP, so an app socket's
   * psock never holds bytes: the app reads through TCP, and its socket can leave the sockhash at
   * any time without losing any (release_app_end). */
  const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, &self.netns_cookie);
  if (!s || pair_end(&self, s->outbound_port) != PAIR_APP_END) {
    count(REMORA_C_MSG_TO_APP);
    return SK_PASS;
  }
  if (bpf_map_lookup_elem(&remora_pairs_slow, &self)) {
    count(REMORA_C_MSG_SLOW);
    return SK_PASS;
  }
  struct remora_pair_key peer = {};
  peer_key(&self, &peer);
  __u64 len = msg->size;
  if (bpf_msg_redirect_hash(msg, &remora_pairs, &peer, BPF_F_INGRESS) == SK_PASS) {
    count(REMORA_C_MSG_REDIRECTED);
    count_by(REMORA_C_MSG_BYTES, len);
    return SK_PASS;
  }
  __u8 one = 1;
  bpf_map_update_elem(&remora_pairs_slow, &self, &one, BPF_ANY);
  count(REMORA_C_MSG_SLOW);
  return SK_PASS;
}

/* Writes a sockaddr_in / sockaddr_in6 for SO_ORIGINAL_DST into the caller's buffer. */
static __always_inline int answer(struct bpf_sockopt* ctx, __u8 family, const __u32* addr,
                                  __u16 port) {
  if (family == REMORA_AF_INET) {
    struct {
      __u16 family;
      __u16 port;
      __u32 addr;
      __u8 zero[8];
    }* sin = ctx->optval;
    if ((void*)(sin + 1) > ctx->optval_end) return 1;
    sin->family = REMORA_AF_INET;
    sin->port = bpf_htons(port);
    sin->addr = addr[0];
    __builtin_memset(sin->zero, 0, sizeof(sin->zero));
    ctx->optlen = sizeof(*sin);
  } else {
    struct {
      __u16 family;
      __u16 port;
      __u32 flowinfo;
      __u32 addr[4];
      __u32 scope_id;
    }* sin6 = ctx->optval;
    if ((void*)(sin6 + 1) > ctx->optval_end) return 1;
    sin6->family = REMORA_AF_INET6;
    sin6->port = bpf_htons(port);
    sin6->flowinfo = 0;
    sin6->addr[0] = addr[0];
    sin6->addr[1] = addr[1];
    sin6->addr[2] = addr[2];
    sin6->addr[3] = addr[3];
    sin6->scope_id = 0;
    ctx->optlen = sizeof(*sin6);
  }
  ctx->retval = 0;
  count(REMORA_C_ORIG_DST_ANSWERED);
  return 1;
}

SEC("cgroup/getsockopt")
int remora_sockopt(struct bpf_sockopt* ctx) {
  if (ctx->optname != REMORA_SO_ORIGINAL_DST) return 1;
  if (ctx->level != REMORA_SOL_IP && ctx->level != REMORA_SOL_IPV6) return 1;
  struct bpf_sock* sk = ctx->sk;
  if (!sk || sk->protocol != IPPROTO_TCP) return 1;
  struct remora_tuple_key key = {};
  key.netns_cookie = bpf_get_netns_cookie(ctx);
  key.port = bpf_ntohs(sk->dst_port);
  struct remora_addr_key local = {};
  if (sk->family == REMORA_AF_INET) {
    key.family = REMORA_AF_INET;
    key.addr[0] = sk->dst_ip4;
    local.addr[0] = sk->src_ip4;
  } else {
    key.family = REMORA_AF_INET6;
    key.addr[0] = sk->dst_ip6[0];
    key.addr[1] = sk->dst_ip6[1];
    key.addr[2] = sk->dst_ip6[2];
    key.addr[3] = sk->dst_ip6[3];
    local.addr[0] = sk->src_ip6[0];
    local.addr[1] = sk->src_ip6[1];
    local.addr[2] = sk->src_ip6[2];
    local.addr[3] = sk->src_ip6[3];
  }
  struct remora_orig_dst* orig = bpf_map_lookup_elem(&remora_orig_by_tuple, &key);
  if (orig) {
    struct remora_orig_dst copy = *orig;
    if (copy.state & REMORA_ORIG_CLOSED) {
      /* The app's socket is gone already: this read is the record's last use. */
      if (bpf_map_delete_elem(&remora_orig_by_tuple, &key) == 0) count(REMORA_C_ORIG_DST_DELETED);
    } else {
      orig->state |= REMORA_ORIG_ANSWERED;
    }
    return answer(ctx, copy.family, copy.addr, copy.port);
  }
  /* An inbound connection sk_lookup steered to the proxy was not NATed: its original destination
   * is its own local address, when that is a pod address and a port inbound capture covers. */
  local.family = key.family;
  __u64* owner = bpf_map_lookup_elem(&remora_inbound_addrs, &local);
  if (owner && *owner == key.netns_cookie) {
    const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, owner);
    __u16 port = (__u16)sk->src_port;
    if (s && port != s->inbound_port && remora_decide_inbound(s, port)) {
      return answer(ctx, local.family, local.addr, port);
    }
  }
  count(REMORA_C_ORIG_DST_MISSED);
  return 1;
}

SEC("sk_lookup")
int remora_sk_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return SK_PASS;
  struct remora_addr_key addr = {};
  addr.family = (__u8)ctx->family;
  if (ctx->family == REMORA_AF_INET) {
    addr.addr[0] = ctx->local_ip4;
  } else {
    addr.addr[0] = ctx->local_ip6[0];
    addr.addr[1] = ctx->local_ip6[1];
    addr.addr[2] = ctx->local_ip6[2];
    addr.addr[3] = ctx->local_ip6[3];
  }
  __u64* netns = bpf_map_lookup_elem(&remora_inbound_addrs, &addr);
  if (!netns) return SK_PASS;
  /* Connections from inside the pod are not inbound: the proxy's passthrough to the app (from
   * 127.0.0.6) and the app calling its own pod IP; iptables mode's PREROUTING never sees them
   * either. */
  struct remora_addr_key remote = {};
  remote.family = addr.family;
  if (ctx->family == REMORA_AF_INET) {
    remote.addr[0] = ctx->remote_ip4;
  } else {
    remote.addr[0] = ctx->remote_ip6[0];
    remote.addr[1] = ctx->remote_ip6[1];
    remote.addr[2] = ctx->remote_ip6[2];
    remote.addr[3] = ctx->remote_ip6[3];
  }
  if (remora_is_loopback(remote.family, remote.addr)) return SK_PASS;
  __u64* remote_netns = bpf_map_lookup_elem(&remora_inbound_addrs, &remote);
  if (remote_netns && *remote_netns == *netns) return SK_PASS;
  const struct remora_netns_settings* s = bpf_map_lookup_elem(&remora_netns, netns);
  if (!s) return SK_PASS;
  if (!remora_decide_inbound(s, (__u16)ctx->local_port)) {
    count(REMORA_C_INBOUND_EXCLUDED);
    return SK_PASS;
  }
  struct remora_listener_key key = {};
  key.netns_cookie = *netns;
  key.family = ctx->family;
  struct bpf_sock* sk = bpf_map_lookup_elem(&remora_listeners, &key);
  if (!sk && ctx->family == REMORA_AF_INET) {
    /* A dual-stack [::] listener takes IPv4 too. */
    key.family = REMORA_AF_INET6;
    sk = bpf_map_lookup_elem(&remora_listeners, &key);
  }
  if (!sk) {
    count(REMORA_C_INBOUND_NO_PROXY);
    return SK_PASS;
  }
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  if (err == 0) count(REMORA_C_INBOUND_STEERED);
  return SK_PASS;
}
