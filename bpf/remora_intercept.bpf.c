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
 *    pod's ports to it: no NAT, so the proxy's getsockname() is the original destination. */
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

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, REMORA_C_MAX);
  __type(key, __u32);
  __type(value, __u64);
} remora_counters SEC(".maps");

static __always_inline void count(__u32 counter) {
  __u64* value = bpf_map_lookup_elem(&remora_counters, &counter);
  if (value) *value += 1;
}

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
    key->addr[0] = skops->local_ip4;
    return;
  }
  key->family = REMORA_AF_INET6;
  key->addr[0] = skops->local_ip6[0];
  key->addr[1] = skops->local_ip6[1];
  key->addr[2] = skops->local_ip6[2];
  key->addr[3] = skops->local_ip6[3];
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

SEC("sockops")
int remora_sockops(struct bpf_sock_ops* skops) {
  if (skops->op == BPF_SOCK_OPS_TCP_LISTEN_CB) {
    add_listener(skops);
    return 1;
  }
  if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) return 1;
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
  if (orig) return answer(ctx, orig->family, orig->addr, orig->port);
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
