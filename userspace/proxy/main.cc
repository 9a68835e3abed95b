// remora-proxy: flags in proxy/cli.cc, everything else in remora_proxy_lib.
#include "config/loader.h"
#include "proxy/cli.h"
#include "routing/route_table.h"

int main(int argc, char** argv) {
  return remora::proxy::proxyMain(
      argc, argv,
      [](std::string_view yaml, uint64_t generation, const remora::routing::ProxySettings& base) {
        return remora::config::loadRouteTable(yaml, generation, base);
      },
      [](std::shared_ptr<const remora::routing::RouteTable> table) {
        return remora::routing::makeRouter(std::move(table));
      });
}
