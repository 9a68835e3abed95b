#include <iostream>

#include "intercept/cli.h"
#include "intercept/dump.h"
#include "intercept/ebpf_applier.h"
#include "intercept/ebpf_dump.h"
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
  std::cout << (command.json ? dumpToJson(*report).dump(2, ' ', false,
                                                        nlohmann::json::error_handler_t::replace) +
                                   "\n"
                             : renderDump(*report));
  return 0;
}

}  // namespace remora::intercept
