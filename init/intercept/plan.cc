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

}  // namespace

std::string PlannedRule::toString() const {
  std::string line = "-A " + chain;
  for (const auto& a : args) {
    line += ' ';
    line += a.find(' ') == std::string::npos ? a : "\"" + a + "\"";
  }
  return line;
}

FamilyPlan planFamily(const InterceptOptions& o, Family family) {
  const bool v4 = family == Family::kIpv4;
  const std::string localhost = v4 ? "127.0.0.1/32" : "::1/128";
  const std::string passthrough_source = v4 ? "127.0.0.6/32" : "::6/128";
  const std::string uid = std::to_string(o.proxy_uid);
  const std::string gid = std::to_string(o.proxy_gid);

  FamilyPlan plan;
  plan.family = family;
  plan.chains = {kInboundChain, kInRedirectChain, kOutputChain, kRedirectChain};
  auto& rules = plan.rules;

  ChainBuilder in_redirect(rules, kInRedirectChain);
  in_redirect.add({"-p", "tcp", "-j", "REDIRECT", "--to-ports", std::to_string(o.inbound_port)});
  ChainBuilder redirect(rules, kRedirectChain);
  redirect.add({"-p", "tcp", "-j", "REDIRECT", "--to-ports", std::to_string(o.outbound_port)});

  // Inbound: everything arriving for the pod, minus the proxy's own ports and exclusions.
  const bool inbound = inboundEnabled(o);
  if (inbound) {
    ChainBuilder prerouting(rules, "PREROUTING");
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
  for (const auto& [flag, id] : {std::pair{"--uid-owner", uid}, std::pair{"--gid-owner", gid}}) {
    // The proxy dialling a local non-loopback address (the app's own pod IP, reached through its
    // own service VIP) goes back through the proxy's inbound side, as in Istio.
    if (inbound) {
      out.add({"!", "-d", localhost, "-o", "lo", "-m", "owner", flag, id, "-j", kInRedirectChain});
    }
    // Anyone else on loopback (app to localhost or to its own pod IP) is left alone.
    out.add({"-o", "lo", "-m", "owner", "!", flag, id, "-j", "RETURN"});
    // The loop breaker: the proxy's own outbound traffic is never captured.
    out.add({"-m", "owner", flag, id, "-j", "RETURN"});
  }
  out.add({"-d", localhost, "-j", "RETURN"});
  for (const auto& cidr : o.exclude_outbound_cidrs) {
    if ((cidr.address.family == family)) out.add({"-d", cidr.toString(), "-j", "RETURN"});
  }
  if (o.include_all_outbound) {
    out.add({"-j", kRedirectChain});
  } else {
    for (const auto& cidr : o.include_outbound_cidrs) {
      if (cidr.address.family == family) out.add({"-d", cidr.toString(), "-j", kRedirectChain});
    }
  }
  return plan;
}

std::string renderRestore(const FamilyPlan& plan, const std::vector<std::string>& stale_jumps) {
  std::string text = "*nat\n";
  // With --noflush, declaring a user chain creates it or flushes it: either way it starts empty.
  for (const auto& chain : plan.chains) text += fmt::format(":{} - [0:0]\n", chain);
  for (const auto& jump : stale_jumps) {
    text += "-D" + jump.substr(2) + "\n";  // "-A CHAIN ..." -> "-D CHAIN ..."
  }
  for (const auto& rule : plan.rules) text += rule.toString() + "\n";
  text += "COMMIT\n";
  return text;
}

}  // namespace remora::intercept
