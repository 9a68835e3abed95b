// remora-proxy: flags in proxy/cli.cc, everything else in remora_proxy_lib.
// `remora-proxy check --config FILE` reports on a config without running the proxy.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>

#include "config/check.h"
#include "config/loader.h"
#include "dns/dns_cache.h"
#include "dns/resolver.h"
#include "proxy/cli.h"
#include "routing/route_table.h"

namespace {

// ServiceEntries with resolution DNS are resolved on the loading thread, never on the data
// path, through a cache that honours each record's TTL within bounds.
void installResolver() {
  auto resolver = remora::dns::Resolver::create();
  if (!resolver) return;  // the loader then reports DNS names as unresolved
  auto cache = std::make_shared<remora::dns::DnsCache>(
      [r = std::shared_ptr<remora::dns::Resolver>(std::move(*resolver))](std::string_view host) {
        return r->resolve(host);
      });
  remora::config::setHostResolver(
      [cache](const std::string& host) -> remora::Result<std::vector<remora::IpAddress>> {
        auto answer = cache->lookup(host);
        if (!answer) return answer.error();
        return answer->resolved.addresses;
      });
}

}  // namespace

int main(int argc, char** argv) {
  // An exception that reaches here (an allocation failing at start) gets a message and exit 1
  // rather than std::terminate's abort.
  try {
    installResolver();
    if (argc > 1 && std::strcmp(argv[1], "check") == 0) {
      return remora::config::checkMain(argc - 1, argv + 1);
    }
    return remora::proxy::proxyMain(
        argc, argv,
        [](std::string_view yaml, uint64_t generation, const remora::routing::ProxySettings& base) {
          return remora::config::loadRouteTable(yaml, generation, base);
        },
        [](std::shared_ptr<const remora::routing::RouteTable> table) {
          return remora::routing::makeRouter(std::move(table));
        });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remora-proxy: fatal: %s\n", e.what());
    return 1;
  }
}
