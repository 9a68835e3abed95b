#include <iostream>

#include "intercept/cli.h"
#include "intercept/dump.h"
#include "intercept/ebpf_applier.h"
#include "intercept/ebpf_dump.h"
#include "intercept/policy_route.h"
#include "intercept/trace.h"

namespace remora::intercept {

namespace {

std::string printJson(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

int runEbpfDump(const InitCommand& command) {
  std::string pin_dir = command.bpf_pin_dir.empty() ? kDefaultBpfPinDir : command.bpf_pin_dir;
  if (!command.trace.empty()) {
    auto trace = traceEbpf(pin_dir, *SocketAddress::parse(command.trace), command.trace_uid,
                           command.trace_gid);
    if (!trace) {
      std::cerr << "remora-init: trace failed: " << trace.error().message << "\n";
      return 1;
    }
    std::cout << (command.json ? printJson(ebpfTraceToJson(*trace)) : renderEbpfTrace(*trace));
    return 0;
  }
  auto dump = dumpEbpf(pin_dir);
  if (!dump) {
    std::cerr << "remora-init: dump failed: " << dump.error().message << "\n";
    return 1;
  }
  std::cout << (command.json ? printJson(ebpfDumpToJson(*dump)) : renderEbpfDump(*dump));
  return 0;
}

// The inbound interception mode as the netns shows it: TPROXY when its policy routing is there
// (in either family), with each family's rule and route.
struct InboundState {
  bool tproxy = false;
  std::vector<std::string> routes;  // describePolicyRoute per family that has any of it
};

InboundState readInboundState() {
  InboundState state;
  for (auto family : {Family::kIpv4, Family::kIpv6}) {
    auto route = readPolicyRoute(family, PolicyRoute{});
    if (!route || !route->any()) continue;
    state.tproxy = true;
    state.routes.push_back(describePolicyRoute(family, PolicyRoute{}, *route));
  }
  return state;
}

std::string renderInbound(const InboundState& state) {
  if (!state.tproxy) return "\nInbound interception: REDIRECT (no TPROXY policy routing)\n";
  std::string text = "\nInbound interception: TPROXY (mangle REMORA_TP_INBOUND -> REMORA_TPROXY)\n";
  for (const auto& r : state.routes) text += "  policy route: " + r + "\n";
  return text;
}

}  // namespace

int runDumpCommand(const InitCommand& command) {
  if (command.options.mode == InterceptMode::kEbpf) return runEbpfDump(command);
  if (!command.trace.empty()) {
    TraceRequest request;
    request.destination = *SocketAddress::parse(command.trace);  // validated when parsed
    request.uid = command.trace_uid;
    request.gid = command.trace_gid;
    request.source = command.trace_source;
    request.in_interface = command.trace_in_interface;
    request.backend = command.options.backend;
    auto report = traceCurrentNetns(request);
    if (!report) {
      std::cerr << "remora-init: trace failed: " << report.error().message << "\n";
      return 1;
    }
    std::cout << (command.json ? traceToJson(*report).dump(
                                     2, ' ', false, nlohmann::json::error_handler_t::replace) +
                                     "\n"
                               : renderTrace(*report));
    return 0;
  }
  auto report = dumpCurrentNetns(command.options.backend);
  if (!report) {
    std::cerr << "remora-init: dump failed: " << report.error().message << "\n";
    return 1;
  }
  auto inbound = readInboundState();
  if (command.json) {
    auto j = dumpToJson(*report);
    j["inbound_interception_mode"] = inbound.tproxy ? "TPROXY" : "REDIRECT";
    j["policy_routes"] = inbound.routes;
    std::cout << printJson(j);
  } else {
    std::cout << renderDump(*report) << renderInbound(inbound);
  }
  return 0;
}

}  // namespace remora::intercept
