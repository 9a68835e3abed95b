#include "intercept/plan.h"

#include <fmt/format.h>

#include <algorithm>

namespace remora::intercept {
namespace {

// Builds the rules of one chain; each append takes the iptables arguments as iptables-save
// prints them back (`-m tcp` after `-p tcp`, `/32` on addresses), so plans compare textually.
class ChainBuilder {
 public:
  ChainBuilder(std::vector<PlannedRule>& out, std::string chain)
      : out_(out), chain_(std::move(chain)) {}
  void add(std::vector<std::string> args) { out_.push_back({chain_, std::move(args)}); }

 private:
  std::vector<PlannedRule>& out_;
  std::string chain_;
};

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// "-d CIDR", spelled as iptables-save prints it back: a /0 matches everything and is printed
// without any -d, so it is planned without one too (else the install never compares equal).
std::vector<std::string> destination(const Cidr& cidr) {
  if (cidr.prefix == 0) return {};
  return {"-d", cidr.toString()};
}

std::vector<std::string> dport(const PortRange& r) {
  return {"-p", "tcp", "-m", "tcp", "--dport", r.toString()};
}

std::vector<PortRange> inboundExclusions(const InterceptOptions& o) {
  std::vector<PortRange> ports = o.exclude_inbound_ports;
  for (uint16_t p : kAlwaysExcludedInboundPorts) ports.push_back({p, p});
  // Sorted and merged, so the rule list is stable whatever order the user gave.
  return mergePortRanges(std::move(ports));
}

bool inboundEnabled(const InterceptOptions& o) {
  return o.include_all_inbound || !o.include_inbound_ports.empty();
}

// TPROXY inbound, in mangle (Istio's ISTIO_INBOUND / ISTIO_DIVERT / ISTIO_TPROXY layout):
//  - a new connection's first packet goes to REMORA_TPROXY: TPROXY hands it to the proxy's
//    transparent inbound listener with the destination untouched and sets the mark, which the
//    policy route turns into local delivery;
//  - its later packets (conntrack ESTABLISHED) only get the mark (REMORA_DIVERT);
//  - loopback is never captured here: the proxy's own connection to the app arrives on lo;
//  - the proxy marks that connection (SO_MARK); mangle OUTPUT saves the mark in conntrack and
//    restores it on the app's replies, so they are routed back to the proxy's socket, which
//    holds the client's address, instead of off the pod.
// Every rule sits in a Remora chain, so install, check and uninstall see all of them.
void planTproxy(const InterceptOptions& o, Family family, FamilyPlan& plan) {
  const std::string mark = fmt::format("{:#x}", kTproxyMark);
  const std::string mark_mask = mark + "/0xffffffff";
  for (const char* c : {kTproxyInboundChain, kTproxyOutputChain, kDivertChain, kTproxyChain}) {
    plan.mangle_chains.emplace_back(c);
  }
  auto& rules = plan.mangle_rules;
  ChainBuilder prerouting(rules, "PREROUTING");
  prerouting.add({"-p", "tcp", "-j", kTproxyInboundChain});
  ChainBuilder output(rules, "OUTPUT");
  output.add({"-p", "tcp", "-j", kTproxyOutputChain});
  ChainBuilder tp_output(rules, kTproxyOutputChain);
  tp_output.add({"-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark", "--nfmask",
                 "0xffffffff", "--ctmask", "0xffffffff"});
  tp_output.add({"-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark", "--nfmask",
                 "0xffffffff", "--ctmask", "0xffffffff"});
  ChainBuilder divert(rules, kDivertChain);
  divert.add({"-j", "MARK", "--set-xmark", mark_mask});
  divert.add({"-j", "ACCEPT"});
  ChainBuilder tproxy(rules, kTproxyChain);
  tproxy.add({"-p", "tcp", "-j", "TPROXY", "--on-port", std::to_string(o.inbound_port), "--on-ip",
              family == Family::kIpv4 ? "0.0.0.0" : "::", "--tproxy-mark", mark_mask});
  ChainBuilder in(rules, kTproxyInboundChain);
  in.add({"-i", "lo", "-j", "RETURN"});
  for (const auto& iface : o.exclude_interfaces) in.add({"-i", iface, "-j", "RETURN"});
  for (const auto& r : inboundExclusions(o)) in.add(concat(dport(r), {"-j", "RETURN"}));
  const std::vector<std::string> established = {
      "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", kDivertChain};
  if (o.include_all_inbound) {
    in.add(concat({"-p", "tcp"}, established));
    in.add({"-p", "tcp", "-j", kTproxyChain});
  } else {
    // Per port, so the ACCEPT of REMORA_DIVERT never touches connections Remora leaves alone.
    for (const auto& r : o.include_inbound_ports) in.add(concat(dport(r), established));
    for (const auto& r : o.include_inbound_ports) in.add(concat(dport(r), {"-j", kTproxyChain}));
  }
  plan.policy_route = PolicyRoute{};
}

}  // namespace

std::string PlannedRule::toString() const {
  std::string line = "-A " + chain;
  for (const auto& a : args) {
    line += ' ';
    line += a.find(' ') == std::string::npos ? a : "\"" + a + "\"";
  }
  return line;
}

std::string PolicyRoute::toString(Family family) const {
  const char* f = family == Family::kIpv4 ? "-4" : "-6";
  return fmt::format(
      "ip {0} rule add fwmark {1:#x} lookup {2}; ip {0} route add local {3} dev lo "
      "table {2}",
      f, mark, table, family == Family::kIpv4 ? "0.0.0.0/0" : "::/0");
}

bool isLoopbackCidr(const Cidr& cidr) {
  if (cidr.address.family == Family::kIpv4) {
    return cidr.prefix >= 8 && cidr.address.bytes[0] == 127;
  }
  static const IpAddress kV6Loopback = *IpAddress::parse("::1");
  return cidr.prefix == 128 && cidr.address == kV6Loopback;
}

FamilyPlan planFamily(const InterceptOptions& o, Family family) {
  const bool v4 = family == Family::kIpv4;
  const std::string localhost = v4 ? "127.0.0.1/32" : "::1/128";
  const std::string passthrough_source = v4 ? "127.0.0.6/32" : "::6/128";
  auto ofFamily = [&](const std::vector<Cidr>& cidrs) {
    std::vector<Cidr> out;
    for (const auto& c : cidrs) {
      if (c.address.family == family) out.push_back(c);
    }
    return out;
  };
  const auto include_cidrs = ofFamily(o.include_outbound_cidrs);
  const auto exclude_cidrs = ofFamily(o.exclude_outbound_cidrs);
  // Istio: when an include CIDR is a loopback address, the "anyone else on lo is left alone"
  // rules are left out, or they would return before the include rule is reached.
  const bool loopback_include =
      !o.include_all_outbound &&
      std::any_of(include_cidrs.begin(), include_cidrs.end(), isLoopbackCidr);

  FamilyPlan plan;
  plan.family = family;
  const bool tproxy = o.inbound_mode == InboundMode::kTproxy;
  const std::string mark = fmt::format("{:#x}", kTproxyMark);
  // TPROXY mode captures inbound in mangle (below); nat keeps REMORA_IN_REDIRECT for the proxy's
  // own connections to its pod IP.
  if (tproxy) {
    plan.chains = {kInRedirectChain, kOutputChain, kRedirectChain};
  } else {
    plan.chains = {kInboundChain, kInRedirectChain, kOutputChain, kRedirectChain};
  }
  auto& rules = plan.rules;

  ChainBuilder in_redirect(rules, kInRedirectChain);
  in_redirect.add({"-p", "tcp", "-j", "REDIRECT", "--to-ports", std::to_string(o.inbound_port)});
  ChainBuilder redirect(rules, kRedirectChain);
  redirect.add({"-p", "tcp", "-j", "REDIRECT", "--to-ports", std::to_string(o.outbound_port)});

  ChainBuilder prerouting(rules, "PREROUTING");
  // A KubeVirt VM's interface carries the VM's outbound traffic: capture it to the outbound port
  // (Istio inserts these first in PREROUTING), minus excluded destinations.
  for (const auto& iface : o.kube_virt_interfaces) {
    for (const auto& cidr : exclude_cidrs) {
      prerouting.add(concat({"-i", iface}, concat(destination(cidr), {"-j", "RETURN"})));
    }
    if (o.include_all_outbound) {
      prerouting.add({"-i", iface, "-j", kRedirectChain});
    } else {
      for (const auto& cidr : include_cidrs) {
        prerouting.add(concat({"-i", iface}, concat(destination(cidr), {"-j", kRedirectChain})));
      }
    }
  }

  // Inbound: everything arriving for the pod, minus the proxy's own ports and exclusions.
  if (inboundEnabled(o) && !tproxy) {
    prerouting.add({"-p", "tcp", "-j", kInboundChain});
    ChainBuilder in(rules, kInboundChain);
    for (const auto& iface : o.exclude_interfaces) in.add({"-i", iface, "-j", "RETURN"});
    for (const auto& r : inboundExclusions(o)) in.add(concat(dport(r), {"-j", "RETURN"}));
    if (o.include_all_inbound) {
      in.add({"-p", "tcp", "-j", kInRedirectChain});
    } else {
      for (const auto& r : o.include_inbound_ports) {
        in.add(concat(dport(r), {"-j", kInRedirectChain}));
      }
    }
  }

  // Outbound, in istio-iptables' order (REFERENCES.md).
  ChainBuilder output(rules, "OUTPUT");
  output.add({"-p", "tcp", "-j", kOutputChain});
  ChainBuilder out(rules, kOutputChain);
  for (const auto& iface : o.exclude_interfaces) out.add({"-o", iface, "-j", "RETURN"});
  for (const auto& r : o.exclude_outbound_ports) out.add(concat(dport(r), {"-j", "RETURN"}));
  // The proxy's inbound passthrough connects to the app from 127.0.0.6 (::6); never re-capture.
  out.add({"-s", passthrough_source, "-o", "lo", "-j", "RETURN"});
  // TPROXY mode: the proxy connects to the app from the client's address with the mark set
  // (SO_MARK); that connection is the inbound delivery, never to be captured again.
  if (tproxy) out.add({"-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN"});
  auto owner = [&](const char* flag, const std::vector<uint32_t>& ids) {
    for (uint32_t n : ids) {
      const std::string id = std::to_string(n);
      // The proxy dialling a local non-loopback address (the app's own pod IP, reached through
      // its own service VIP) goes back through the proxy's inbound side, as in Istio. Kept when
      // inbound capture is off too (Istio does): otherwise it would reach the app directly.
      out.add({"!", "-d", localhost, "-o", "lo", "-m", "owner", flag, id, "-j", kInRedirectChain});
      // Anyone else on loopback (app to localhost or to its own pod IP) is left alone.
      if (!loopback_include) out.add({"-o", "lo", "-m", "owner", "!", flag, id, "-j", "RETURN"});
      // The loop breaker: the proxy's own outbound traffic is never captured.
      out.add({"-m", "owner", flag, id, "-j", "RETURN"});
    }
  };
  owner("--uid-owner", o.proxy_uids);
  owner("--gid-owner", o.proxy_gids);
  for (uint32_t gid : o.exclude_outbound_owner_groups) {
    out.add({"-m", "owner", "--gid-owner", std::to_string(gid), "-j", "RETURN"});
  }
  if (!o.include_outbound_owner_groups.empty()) {
    // Not one of the included groups: leave alone.
    std::vector<std::string> args;
    for (uint32_t gid : o.include_outbound_owner_groups) {
      args = concat(std::move(args), {"-m", "owner", "!", "--gid-owner", std::to_string(gid)});
    }
    out.add(concat(std::move(args), {"-j", "RETURN"}));
  }
  out.add({"-d", localhost, "-j", "RETURN"});
  for (const auto& cidr : exclude_cidrs) out.add(concat(destination(cidr), {"-j", "RETURN"}));
  for (const auto& r : o.include_outbound_ports) out.add(concat(dport(r), {"-j", kRedirectChain}));
  if (o.include_all_outbound) {
    out.add({"-j", kRedirectChain});
  } else {
    for (const auto& cidr : include_cidrs) {
      out.add(concat(destination(cidr), {"-j", kRedirectChain}));
    }
  }

  if (o.drop_invalid) {
    plan.mangle_chains = {kDropInvalidChain};
    ChainBuilder mangle_prerouting(plan.mangle_rules, "PREROUTING");
    mangle_prerouting.add({"-p", "tcp", "-j", kDropInvalidChain});
    ChainBuilder drop(plan.mangle_rules, kDropInvalidChain);
    drop.add({"-p", "tcp", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"});
  }
  if (tproxy && inboundEnabled(o)) planTproxy(o, family, plan);
  return plan;
}

namespace {

void renderTable(std::string& text, const char* table, const std::vector<std::string>& chains,
                 const std::vector<PlannedRule>& rules, const TableFootprint& installed) {
  if (chains.empty() && rules.empty() && installed.chains.empty() && installed.jumps.empty()) {
    return;
  }
  text += fmt::format("*{}\n", table);
  // With --noflush, declaring a user chain creates it or flushes it: either way it starts empty.
  for (const auto& chain : chains) text += fmt::format(":{} - [0:0]\n", chain);
  for (const auto& jump : installed.jumps) {
    text += "-D" + jump.substr(2) + "\n";  // "-A CHAIN ..." -> "-D CHAIN ..."
  }
  // Remora chains of an earlier install that this plan no longer has: flush all, then delete.
  std::vector<std::string> gone;
  for (const auto& chain : installed.chains) {
    if (std::find(chains.begin(), chains.end(), chain) == chains.end()) gone.push_back(chain);
  }
  for (const auto& chain : gone) text += "-F " + chain + "\n";
  for (const auto& chain : gone) text += "-X " + chain + "\n";
  for (const auto& rule : rules) text += rule.toString() + "\n";
  text += "COMMIT\n";
}

}  // namespace

std::string renderRestore(const FamilyPlan& plan, const TableFootprint& nat,
                          const TableFootprint& mangle) {
  std::string text;
  renderTable(text, "nat", plan.chains, plan.rules, nat);
  renderTable(text, "mangle", plan.mangle_chains, plan.mangle_rules, mangle);
  return text;
}

}  // namespace remora::intercept
