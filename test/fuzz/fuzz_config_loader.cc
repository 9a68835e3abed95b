// libFuzzer target: the proxy's YAML config loader (remora::config::loadRouteTable), then what
// the proxy does with its result: route a few destinations and serve /config_dump (the table
// as JSON, or the load error) through the admin handler, as the proxy would.
//
// Input: the config file's bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"
#include "proxy/admin.h"
#include "routing/route_table.h"

namespace {

using remora::SocketAddress;

void serveConfigDump(const nlohmann::json& dump) {
  remora::proxy::AdminHooks hooks;
  hooks.ready = [] { return true; };
  hooks.config_dump = [&dump] { return dump; };
  remora::proxy::HttpRequest request;
  request.method = "GET";
  request.path = "/config_dump";
  auto response = remora::proxy::handleAdminRequest(request, hooks);
  (void)response.serialize();
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto first = remora::config::loadRouteTable(text, 1);
  // The second load of the same text comes from the loader's per-document cache; it must give
  // the same answer as the first.
  auto second = remora::config::loadRouteTable(text, 2);
  if (first.ok() != second.ok()) std::abort();

  if (!first) {
    serveConfigDump(
        nlohmann::json{{"last_reload", {{"ok", false}, {"error", first.error().message}}}});
    return 0;
  }
  std::shared_ptr<const remora::routing::RouteTable> table = *first;
  serveConfigDump(nlohmann::json{{"route_table", table->toJson()}});

  auto router = remora::routing::makeRouter(table, 1);
  static const std::vector<SocketAddress> kDestinations = {
      *SocketAddress::parse("10.1.122.241:9999"), *SocketAddress::parse("10.244.1.168:80"),
      *SocketAddress::parse("10.96.0.10:53"), *SocketAddress::parse("[fd00::1]:80")};
  for (const auto& dst : kDestinations) {
    auto decision = router->route(dst);
    std::vector<SocketAddress> tried{decision.upstream};
    if (auto again = router->retry(decision, tried)) router->release(*again);
    router->release(decision);
  }
  return 0;
}
