/* The outbound connect decision, one C function compiled into the BPF program
 * (remora_intercept.bpf.c) and into userspace (`remora-init dump --trace`), so the trace is the
 * program's own logic, not a copy of it. Mirrors iptables mode's REMORA_OUTPUT order
 * (init/intercept/plan.cc): excluded ports, the proxy's uid and gid, loopback, excluded CIDRs,
 * included CIDRs. */
#ifndef REMORA_BPF_DECIDE_H
#define REMORA_BPF_DECIDE_H

#include "remora_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

static __always_inline __u32 remora_ntohl(__u32 v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return __builtin_bswap32(v);
#else
  return v;
#endif
}

/* Whether `addr` (network order, family's width) lies in `cidr`. */
static __always_inline int remora_cidr_contains(const struct remora_cidr* cidr, __u8 family,
                                                const __u32* addr) {
  if (cidr->family != family) return 0;
  int words = family == REMORA_AF_INET ? 1 : 4;
  int bits = cidr->prefix_len;
  for (int i = 0; i < 4; i++) {
    if (i >= words || bits <= 0) break;
    __u32 mask = bits >= 32 ? 0xffffffffu : ~(0xffffffffu >> bits);
    if ((remora_ntohl(addr[i]) & mask) != (remora_ntohl(cidr->addr[i]) & mask)) return 0;
    bits -= 32;
  }
  return 1;
}

static __always_inline int remora_port_in(const struct remora_port_range* ranges, __u32 n,
                                          __u16 port) {
  for (int i = 0; i < REMORA_MAX_PORT_RANGES; i++) {
    if ((__u32)i >= n) break;
    if (port >= ranges[i].first && port <= ranges[i].last) return 1;
  }
  return 0;
}

static __always_inline int remora_is_loopback(__u8 family, const __u32* addr) {
  if (family == REMORA_AF_INET) return (remora_ntohl(addr[0]) >> 24) == 127;
  return addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && remora_ntohl(addr[3]) == 1;
}

/* The verdict for a TCP connect by uid/gid to addr:port (port in host order) from a meshed netns
 * with settings `s`. */
static __always_inline enum remora_verdict remora_decide_outbound(
    const struct remora_netns_settings* s, __u8 family, const __u32* addr, __u16 port, __u32 uid,
    __u32 gid) {
  if (family == REMORA_AF_INET6 && !(s->flags & REMORA_F_IPV6)) return REMORA_V_IPV6_OFF;
  if (remora_port_in(s->exclude_outbound_ports, s->n_exclude_outbound_ports, port))
    return REMORA_V_EXCLUDED_PORT;
  if (uid == s->proxy_uid) return REMORA_V_BYPASS_UID;
  if (gid == s->proxy_gid) return REMORA_V_BYPASS_GID;
  if (remora_is_loopback(family, addr)) return REMORA_V_LOOPBACK;
  for (int i = 0; i < REMORA_MAX_CIDRS; i++) {
    if ((__u32)i >= s->n_exclude_cidrs) break;
    if (remora_cidr_contains(&s->exclude_cidrs[i], family, addr)) return REMORA_V_EXCLUDED_CIDR;
  }
  if (s->flags & REMORA_F_INCLUDE_ALL_OUTBOUND) return REMORA_V_REDIRECT;
  for (int i = 0; i < REMORA_MAX_CIDRS; i++) {
    if ((__u32)i >= s->n_include_cidrs) break;
    if (remora_cidr_contains(&s->include_cidrs[i], family, addr)) return REMORA_V_REDIRECT;
  }
  return REMORA_V_NOT_INCLUDED;
}

/* Whether an inbound connection to `port` (host order) is steered to the proxy. */
static __always_inline int remora_decide_inbound(const struct remora_netns_settings* s,
                                                 __u16 port) {
  if (!(s->flags & REMORA_F_INBOUND)) return 0;
  if (remora_port_in(s->exclude_inbound_ports, s->n_exclude_inbound_ports, port)) return 0;
  if (s->flags & REMORA_F_INCLUDE_ALL_INBOUND) return 1;
  return remora_port_in(s->include_inbound_ports, s->n_include_inbound_ports, port);
}

#endif /* REMORA_BPF_DECIDE_H */
