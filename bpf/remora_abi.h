/* The one ABI between Remora's BPF programs and userspace (remora-init, remora-cni, tests):
 * map keys and values, per-netns settings, counters. Compiled by clang -target bpf (after
 * vmlinux.h) and by the C++ compiler (after <linux/types.h>); userspace static_asserts the sizes
 * (init/intercept/ebpf_abi_check.cc), so the two sides cannot drift apart.
 * Addresses are kept in network byte order, ports in host byte order, unless a field says so. */
#ifndef REMORA_BPF_ABI_H
#define REMORA_BPF_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define REMORA_AF_INET 2
#define REMORA_AF_INET6 10
#define REMORA_SOL_IP 0
#define REMORA_SOL_IPV6 41
/* SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST share this value (common/original_dst.h). */
#define REMORA_SO_ORIGINAL_DST 80

#define REMORA_MAX_PORT_RANGES 16
#define REMORA_MAX_CIDRS 16
/* Meshed network namespaces one node can hold; each costs one settings entry. */
#define REMORA_MAX_NETNS 4096
/* Connections between connect() and the proxy's getsockopt(); LRU, so the oldest go first. */
#define REMORA_MAX_ORIG_DST 65536

/* remora_netns_settings.flags */
#define REMORA_F_INCLUDE_ALL_OUTBOUND (1u << 0)
#define REMORA_F_IPV6 (1u << 1)
#define REMORA_F_INCLUDE_ALL_INBOUND (1u << 2)
#define REMORA_F_INBOUND (1u << 3)
/* sockops + sk_msg carry app<->proxy bytes socket to socket (remora_pair_key). */
#define REMORA_F_FAST_PATH (1u << 4)
/* Inbound is captured by iptables rules in the netns, not by sk_lookup (the hybrid fallback). */
#define REMORA_F_INBOUND_HYBRID (1u << 5)

/* An inclusive port range, host order. */
struct remora_port_range {
  __u16 first;
  __u16 last;
};

struct remora_cidr {
  __u32 addr[4]; /* network order; IPv4 uses addr[0] */
  __u8 family;   /* REMORA_AF_INET or REMORA_AF_INET6 */
  __u8 prefix_len;
  __u8 pad[2];
};

/* What one meshed netns asked for (the same options as iptables mode). Key: the netns cookie
 * (SO_NETNS_COOKIE in userspace, bpf_get_netns_cookie() in the programs). */
struct remora_netns_settings {
  __u32 proxy_uid;
  __u32 proxy_gid;
  __u16 outbound_port;
  __u16 inbound_port;
  __u32 flags;
  __u32 n_exclude_outbound_ports;
  __u32 n_include_cidrs;
  __u32 n_exclude_cidrs;
  __u32 n_include_inbound_ports;
  __u32 n_exclude_inbound_ports;
  __u32 pad;
  struct remora_port_range exclude_outbound_ports[REMORA_MAX_PORT_RANGES];
  struct remora_cidr include_cidrs[REMORA_MAX_CIDRS];
  struct remora_cidr exclude_cidrs[REMORA_MAX_CIDRS];
  struct remora_port_range include_inbound_ports[REMORA_MAX_PORT_RANGES];
  struct remora_port_range exclude_inbound_ports[REMORA_MAX_PORT_RANGES];
};

/* A connection's destination before connect4/6 rewrote it. */
struct remora_orig_dst {
  __u64 netns_cookie;
  __u32 addr[4]; /* network order */
  __u16 port;    /* host order */
  __u8 family;
  __u8 state; /* REMORA_ORIG_ANSWERED | REMORA_ORIG_CLOSED */
  __u32 uid;
};
/* remora_orig_dst.state: the record goes once the proxy has read it and the app's socket has
 * closed, whichever comes last. */
#define REMORA_ORIG_ANSWERED (1u << 0)
#define REMORA_ORIG_CLOSED (1u << 1)

/* The app's end of a rewritten connection as the proxy's accepted socket sees its peer. */
struct remora_tuple_key {
  __u64 netns_cookie;
  __u32 addr[4]; /* network order */
  __u16 port;    /* host order */
  __u8 family;
  __u8 pad[5];
};

/* A pod address of a meshed netns (sk_lookup cannot read the netns cookie, so it finds the
 * netns from the destination address). Value: the netns cookie. */
struct remora_addr_key {
  __u32 addr[4]; /* network order */
  __u8 family;
  __u8 pad[3];
};

/* The proxy's inbound listener of one netns and family, in the inbound sockhash. */
struct remora_listener_key {
  __u64 netns_cookie;
  __u32 family;
  __u32 pad;
};

/* Which build's programs are attached (map_meta, one entry at key 0), written by the install
 * that attached or upgraded them. An install from another build upgrades the programs in place
 * (docs/EBPF.md, "Upgrading the programs"). */
struct remora_meta {
  __u64 object_hash; /* FNV-1a of the BPF object the programs were loaded from */
};

/* Pod addresses one node can hold (a few per meshed netns). */
#define REMORA_MAX_ADDRS (REMORA_MAX_NETNS * 4)

/* Index into the per-CPU counters array. */
enum remora_counter {
  REMORA_C_REDIRECTED = 0,    /* connect rewritten to the proxy */
  REMORA_C_BYPASS_UID,        /* caller is the proxy's uid */
  REMORA_C_BYPASS_GID,        /* caller is the proxy's gid */
  REMORA_C_EXCLUDED_PORT,     /* destination port excluded */
  REMORA_C_EXCLUDED_CIDR,     /* destination in an excluded CIDR */
  REMORA_C_NOT_INCLUDED,      /* destination outside the included CIDRs */
  REMORA_C_LOOPBACK,          /* destination on loopback */
  REMORA_C_IPV6_OFF,          /* IPv6 connect in a netns meshed without IPv6 */
  REMORA_C_TUPLE_RECORDED,    /* sockops keyed an original destination by its 4-tuple */
  REMORA_C_ORIG_DST_ANSWERED, /* getsockopt(SO_ORIGINAL_DST) answered from the map */
  REMORA_C_ORIG_DST_MISSED,   /* getsockopt(SO_ORIGINAL_DST) with no entry */
  REMORA_C_INBOUND_STEERED,   /* sk_lookup steered an inbound connection to the proxy */
  REMORA_C_INBOUND_EXCLUDED,  /* sk_lookup left an excluded inbound port alone */
  REMORA_C_INBOUND_NO_PROXY,  /* sk_lookup found no proxy listener for the netns */
  REMORA_C_LISTENER_ADDED,    /* sockops put a proxy inbound listener in the sockhash */
  REMORA_C_ORIG_DST_DELETED,  /* sockops deleted a record when the app's socket closed */
  REMORA_C_PAIR_ADDED,        /* sockops put an app<->proxy socket in the fast-path sockhash */
  REMORA_C_MSG_REDIRECTED,    /* sk_msg redirected a send to the peer socket */
  REMORA_C_MSG_BYTES,         /* bytes sk_msg redirected */
  REMORA_C_MSG_SLOW,          /* sk_msg found no peer: the send took loopback TCP */
  REMORA_C_PAIR_RELEASED,     /* sockops took an app's socket out of the sockhash at its FIN */
  REMORA_C_MSG_TO_APP,        /* sk_msg passed a send of the proxy's end to loopback TCP */
  REMORA_C_MAX
};

/* The connect decision (remora_decide.h). REDIRECT is the only one that rewrites. */
enum remora_verdict {
  REMORA_V_REDIRECT = 0,
  REMORA_V_BYPASS_UID,
  REMORA_V_BYPASS_GID,
  REMORA_V_EXCLUDED_PORT,
  REMORA_V_EXCLUDED_CIDR,
  REMORA_V_NOT_INCLUDED,
  REMORA_V_LOOPBACK,
  REMORA_V_IPV6_OFF,
};

/* ---- sockops + sk_msg fast path (issue 11) ----
 * One end of an app<->proxy loopback connection inside a meshed netns, as that end sees itself:
 * the sk_msg program finds the peer by swapping local and remote. Ports in host order. */
struct remora_pair_key {
  __u64 netns_cookie;
  __u32 local_addr[4]; /* network order; IPv4 (v4-mapped too) uses [0] */
  __u32 remote_addr[4];
  __u16 local_port;
  __u16 remote_port;
  __u32 family;
};
/* App<->proxy sockets the fast path holds (two per connection). */
#define REMORA_MAX_PAIRS 65536

/* ---- Kernel relay (bpf/relay.bpf.c, userspace/proxy/kernel_relay.cc) ----
 * The proxy hands a connected (client, upstream) socket pair to the kernel: both sockets go into
 * the two sockhashes keyed by their socket cookie (socks, with the verdict program attached, and
 * targets, with none), and each cookie's peers entry names the other one; the sk_skb verdict
 * program redirects every received skb to the peer's egress. */
/* Relayed sockets one pod's proxy can hold (two per connection). */
#define REMORA_RELAY_MAX_SOCKETS 65536

/* Value of the peers map, key: the socket cookie of the receiving socket. */
struct remora_relay_peer {
  __u64 peer_cookie; /* key of the socket its bytes go to */
  __u64 bytes;       /* bytes redirected to the peer (updated by the program) */
  __u32 limit;       /* bytes the peer's redirect queue may hold before the proxy is told to
                      * take the pair off the kernel path (set by the proxy; 0: never) */
  __u32 seq_base;    /* the peer's write_seq at the first redirect (set by the program) */
  __u32 based;       /* seq_base is set (set by the program) */
  __u32 over;        /* the limit was passed and the proxy told (set by the program, once) */
  __u32 owner;       /* the proxy's worker that relays the pair (set by the proxy) */
  __u32 slot;        /* the pair's connection slot in that worker (set by the proxy) */
};

/* A record of the relay's ring buffer: a pair whose reader fell behind. The proxy's worker
 * `owner` takes the pair with that socket off the kernel path. */
struct remora_relay_event {
  __u64 cookie; /* the socket whose bytes wait in its peer's redirect queue */
  __u32 owner;
  __u32 slot;
};
/* Bytes of the ring buffer (a power of two, at least a page): room for 4096 records. */
#define REMORA_RELAY_EVENTS_BYTES (64 * 1024)

/* Which build's verdict program is attached to the sockhash (the relay's meta map, one entry at
 * key 0), written by the `remora-init relay install` that attached it. An install from another
 * build replaces the program (docs/PROXY.md, "Kernel relay"). */
struct remora_relay_meta {
  __u64 object_hash; /* FNV-1a of the BPF object the program was loaded from */
};

/* Index into the relay's per-CPU counters array. */
enum remora_relay_counter {
  REMORA_RC_REDIRECTED_BYTES = 0, /* bytes redirected to a peer */
  REMORA_RC_REDIRECTED_SKBS,      /* skbs redirected to a peer */
  REMORA_RC_NO_PEER,              /* skb of a socket with no peers entry: passed to its owner */
  REMORA_RC_REDIRECT_FAILED,      /* the peer is in neither sockhash: dropped */
  REMORA_RC_PAIRS_OVER,           /* pairs whose redirect queue passed its limit (proxy told) */
  REMORA_RC_EVENTS_LOST,          /* ... but the ring buffer was full: told at the next skb */
  REMORA_RC_MAX
};

#endif /* REMORA_BPF_ABI_H */
