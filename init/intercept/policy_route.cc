#include "intercept/policy_route.h"

#include <fmt/format.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

#include <array>
#include <memory>

namespace remora::intercept {
namespace {

struct SocketDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct RuleDeleter {
  void operator()(rtnl_rule* r) const { rtnl_rule_put(r); }
};
struct RouteDeleter {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using Socket = std::unique_ptr<nl_sock, SocketDeleter>;

const char* policyFamilyName(Family f) { return f == Family::kIpv4 ? "IPv4" : "IPv6"; }

// A family the netns (or kernel) does not have holds no policy routing.
bool familyMissing(int err) { return err == -NLE_AF_NOSUPPORT || err == -NLE_OPNOTSUPP; }

int af(Family family) { return family == Family::kIpv4 ? AF_INET : AF_INET6; }

Result<Socket> connect() {
  Socket sock(nl_socket_alloc());
  if (!sock) return makeError("netlink: out of memory");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return makeError(fmt::format("netlink connect: {}", nl_geterror(err)));
  }
  return sock;
}

std::unique_ptr<rtnl_rule, RuleDeleter> makeRule(Family family, const PolicyRoute& r) {
  std::unique_ptr<rtnl_rule, RuleDeleter> rule(rtnl_rule_alloc());
  if (!rule) return rule;
  rtnl_rule_set_family(rule.get(), af(family));
  rtnl_rule_set_mark(rule.get(), r.mark);
  rtnl_rule_set_mask(rule.get(), 0xffffffff);
  rtnl_rule_set_table(rule.get(), r.table);
  rtnl_rule_set_action(rule.get(), FR_ACT_TO_TBL);
  return rule;
}

// `local default dev lo table TABLE`.
Result<std::unique_ptr<rtnl_route, RouteDeleter>> makeRoute(Family family, const PolicyRoute& r) {
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) return errnoError("lo");
  std::unique_ptr<rtnl_route, RouteDeleter> route(rtnl_route_alloc());
  std::array<uint8_t, 16> zeros{};
  std::unique_ptr<nl_addr, NlAddrDeleter> dst(
      nl_addr_build(af(family), zeros.data(), family == Family::kIpv4 ? 4 : 16));
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  if (!route || !dst || nh == nullptr) {
    if (nh != nullptr) rtnl_route_nh_free(nh);
    return makeError("netlink: out of memory");
  }
  nl_addr_set_prefixlen(dst.get(), 0);
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(af(family)));
  rtnl_route_set_table(route.get(), r.table);
  rtnl_route_set_type(route.get(), RTN_LOCAL);
  rtnl_route_set_scope(route.get(), RT_SCOPE_HOST);
  rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
  rtnl_route_set_dst(route.get(), dst.get());
  rtnl_route_nh_set_ifindex(nh, static_cast<int>(lo));
  rtnl_route_add_nexthop(route.get(), nh);  // the route owns it now
  return route;
}

}  // namespace

Result<PolicyRouteState> readPolicyRoute(Family family, const PolicyRoute& r) {
  auto sock = connect();
  if (!sock) return sock.error();
  PolicyRouteState state;
  nl_cache* raw = nullptr;
  if (int err = rtnl_rule_alloc_cache(sock->get(), af(family), &raw); err < 0) {
    return makeError(fmt::format("netlink: listing ip rules: {}", nl_geterror(err)));
  }
  std::unique_ptr<nl_cache, CacheDeleter> rules(raw);
  for (nl_object* o = nl_cache_get_first(rules.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* rule = reinterpret_cast<rtnl_rule*>(o);
    if (rtnl_rule_get_family(rule) == af(family) && rtnl_rule_get_mark(rule) == r.mark &&
        rtnl_rule_get_table(rule) == r.table && rtnl_rule_get_action(rule) == FR_ACT_TO_TBL) {
      state.rule = true;
    }
  }
  raw = nullptr;
  if (int err = rtnl_route_alloc_cache(sock->get(), af(family), 0, &raw); err < 0) {
    return makeError(fmt::format("netlink: listing routes: {}", nl_geterror(err)));
  }
  std::unique_ptr<nl_cache, CacheDeleter> routes(raw);
  for (nl_object* o = nl_cache_get_first(routes.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* route = reinterpret_cast<rtnl_route*>(o);
    nl_addr* dst = rtnl_route_get_dst(route);
    if (rtnl_route_get_family(route) == af(family) && rtnl_route_get_table(route) == r.table &&
        rtnl_route_get_type(route) == RTN_LOCAL && dst != nullptr &&
        nl_addr_get_prefixlen(dst) == 0) {
      state.route = true;
    }
  }
  return state;
}

Result<PolicyRouteState> addPolicyRoute(Family family, const PolicyRoute& r) {
  // The kernel takes the same ip rule twice (another priority each time), NLM_F_EXCL or not:
  // read first and add only what is missing.
  auto present = readPolicyRoute(family, r);
  if (!present) return present.error();
  auto sock = connect();
  if (!sock) return sock.error();
  PolicyRouteState added;
  auto route = makeRoute(family, r);
  if (!route) return route.error();
  int err = present->route ? -NLE_EXIST : rtnl_route_add(sock->get(), route->get(), NLM_F_EXCL);
  if (err < 0 && err != -NLE_EXIST) {
    return makeError(fmt::format("adding '{}': route: {}", r.toString(family), nl_geterror(err)));
  }
  added.route = err >= 0;
  auto rule = makeRule(family, r);
  if (!rule) return makeError("netlink: out of memory");
  err = present->rule ? -NLE_EXIST : rtnl_rule_add(sock->get(), rule.get(), NLM_F_EXCL);
  if (err < 0 && err != -NLE_EXIST) {
    std::string text = fmt::format("adding '{}': rule: {}", r.toString(family), nl_geterror(err));
    if (added.route) {
      auto undone = removePolicyRoute(family, r, {false, true});
      text += undone ? "; removed the route it had added" : "; REMOVING THE ROUTE FAILED";
    }
    return makeError(text);
  }
  added.rule = err >= 0;
  return added;
}

Result<PolicyRouteState> removePolicyRoute(Family family, const PolicyRoute& r,
                                           PolicyRouteState which) {
  auto sock = connect();
  if (!sock) return sock.error();
  PolicyRouteState removed;
  if (which.rule) {
    auto rule = makeRule(family, r);
    if (!rule) return makeError("netlink: out of memory");
    // A rule added twice by hand is removed twice: nothing of it may be left.
    for (int i = 0; i < 16; ++i) {
      int err = rtnl_rule_delete(sock->get(), rule.get(), 0);
      if (err == -NLE_OBJ_NOTFOUND || familyMissing(err)) break;
      if (err < 0) {
        return makeError(fmt::format("removing ip rule fwmark {:#x} lookup {}: {}", r.mark, r.table,
                                     nl_geterror(err)));
      }
      removed.rule = true;
    }
  }
  if (which.route) {
    auto route = makeRoute(family, r);
    if (!route) return route.error();
    int err = rtnl_route_delete(sock->get(), route->get(), 0);
    if (err < 0 && err != -NLE_OBJ_NOTFOUND && !familyMissing(err)) {
      return makeError(
          fmt::format("removing local default route of table {}: {}", r.table, nl_geterror(err)));
    }
    removed.route = err >= 0;
  }
  return removed;
}

// Removes what `routes` lists; returns text for an error message.
std::string removeRoutes(const RoutesAdded& routes) {
  std::string text;
  for (const auto& [family, parts] : routes) {
    auto removed = removePolicyRoute(family, PolicyRoute{}, parts);
    text += removed ? fmt::format("; removed the {} TPROXY policy route it had added",
                                  policyFamilyName(family))
                    : fmt::format("; REMOVING THE {} TPROXY POLICY ROUTE FAILED: {}",
                                  policyFamilyName(family), removed.error().message);
  }
  return text;
}

// The part of a plan's policy routing that is missing (or left over from TPROXY mode), or
// nullopt when the routing is as planned.
std::optional<std::string> policyRouteDifference(const FamilyPlan& plan) {
  auto state = readPolicyRoute(plan.family, plan.policy_route.value_or(PolicyRoute{}));
  if (!state) return state.error().message;
  if (plan.policy_route && *state != PolicyRouteState{true, true}) {
    return fmt::format("{}: TPROXY policy routing is incomplete: {}", policyFamilyName(plan.family),
                       describePolicyRoute(plan.family, *plan.policy_route, *state));
  }
  if (!plan.policy_route && state->any()) {
    return fmt::format("{}: a TPROXY policy route is installed but the plan has none: {}",
                       policyFamilyName(plan.family),
                       describePolicyRoute(plan.family, PolicyRoute{}, *state));
  }
  return std::nullopt;
}

// Uninstall's part for policy routing, in both families; absent is success.
Result<void> uninstallPolicyRoutes(ApplyReport& report) {
  for (auto family : {Family::kIpv4, Family::kIpv6}) {
    auto removed = removePolicyRoute(family, PolicyRoute{});
    if (!removed) return removed.error();
    if (removed->any()) {
      report.changed = true;
      report.lines.push_back(
          fmt::format("{}: removed {}", policyFamilyName(family), PolicyRoute{}.toString(family)));
    }
  }
  return {};
}

std::string describePolicyRoute(Family family, const PolicyRoute& r,
                                const PolicyRouteState& state) {
  return fmt::format("{} (rule {}, route {})", r.toString(family),
                     state.rule ? "present" : "absent", state.route ? "present" : "absent");
}

}  // namespace remora::intercept
