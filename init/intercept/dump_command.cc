#include <iostream>

#include "intercept/cli.h"
#include "intercept/dump.h"
#include "intercept/trace.h"

namespace remora::intercept {

int runDumpCommand(const InitCommand& command) {
  if (!command.trace.empty()) {
    TraceRequest request;
    request.destination = *SocketAddress::parse(command.trace);  // validated when parsed
    request.uid = command.trace_uid;
    request.gid = command.trace_gid;
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
