// Loads one Service with many ports and many endpoints through the real config loader and
// reports what the route table costs: load time, resident memory gained, and lookups.
//
//   remora-endpoint-scale-bench [ports=100] [endpoints=10000] [max_rss_mb max_cpu_ms]
//
// The Service's endpoints come from EndpointSlices (10 slices, each listing every port) whose
// targetRefs name labelled Pods; a DestinationRule defines subsets v1 and v2 and a
// VirtualService splits connections 90/10 between them. Every port therefore has three
// endpoint lists (the whole Service, v1, v2) and every pod address is a route key on every
// port. With the optional bounds the program exits 1 when the load grows RSS by more than
// max_rss_mb or takes more than max_cpu_ms of CPU: the ctest endpoint_scale_bench asserts the
// issue's "100 ports x 10,000 endpoints in <= 50 MB and <= 1 s" that way.

#include <fmt/format.h>
#include <malloc.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config/loader.h"
#include "routing/route_table.h"

namespace {

using remora::IpAddress;
using remora::SocketAddress;

constexpr uint16_t kFirstPort = 1000;
constexpr uint16_t kFirstTarget = 20000;
constexpr int kSlices = 10;

uint32_t podIp(int i) {
  // 10.244.0.0/16 upwards: 10.244.0.1, 10.244.0.2, ...
  return (10u << 24) | (244u << 16) | static_cast<uint32_t>(i + 1);
}

std::string ipText(uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
}

std::string configYaml(int ports, int endpoints) {
  std::string out = R"(apiVersion: v1
kind: Service
metadata: {name: big, namespace: bench}
spec:
  clusterIP: 10.96.0.10
  selector: {app: big}
  ports:
)";
  for (int p = 0; p < ports; ++p) {
    out += fmt::format("  - {{name: tcp-{0}, port: {1}, targetPort: {2}}}\n", p, kFirstPort + p,
                       kFirstTarget + p);
  }
  for (int i = 0; i < endpoints; ++i) {
    out += fmt::format(R"(---
apiVersion: v1
kind: Pod
metadata: {{name: big-{0}, namespace: bench, labels: {{app: big, version: v{1}}}}}
spec: {{containers: [{{name: app, image: app}}]}}
status: {{podIP: {2}}}
)",
                       i, i % 10 == 0 ? 2 : 1, ipText(podIp(i)));
  }
  std::string slice_ports = "ports:\n";
  for (int p = 0; p < ports; ++p) {
    slice_ports +=
        fmt::format("- {{name: tcp-{}, port: {}, protocol: TCP}}\n", p, kFirstTarget + p);
  }
  int per_slice = (endpoints + kSlices - 1) / kSlices;
  for (int s = 0; s < kSlices && s * per_slice < endpoints; ++s) {
    out += fmt::format(R"(---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-{}
  namespace: bench
  labels: {{kubernetes.io/service-name: big}}
addressType: IPv4
)",
                       s);
    out += slice_ports;
    out += "endpoints:\n";
    for (int i = s * per_slice; i < std::min(endpoints, (s + 1) * per_slice); ++i) {
      out += fmt::format(
          "- {{addresses: [{}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: "
          "big-{}, namespace: bench}}}}\n",
          ipText(podIp(i)), i);
    }
  }
  out += R"(---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: big, namespace: bench}
spec:
  host: big
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: big, namespace: bench}
spec:
  hosts: [big]
  tcp:
  - route:
    - {destination: {host: big, subset: v1}, weight: 90}
    - {destination: {host: big, subset: v2}, weight: 10}
)";
  return out;
}

// Resident set size in kB from /proc/self/status; `field` is "VmRSS:" or "VmHWM:".
long statusKb(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kb = -1;
  size_t n = std::strlen(field);
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, field, n) == 0) {
      kb = std::strtol(line + n, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb;
}

double cpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double sinceMs(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  int ports = argc > 1 ? std::atoi(argv[1]) : 100;
  int endpoints = argc > 2 ? std::atoi(argv[2]) : 10000;
  double max_rss_mb = argc > 4 ? std::atof(argv[3]) : 0;
  double max_cpu_ms = argc > 4 ? std::atof(argv[4]) : 0;
  if (ports < 1 || ports > 1000 || endpoints < 1 || endpoints > 60000) {
    fmt::print(stderr,
               "usage: remora-endpoint-scale-bench [ports 1..1000] [endpoints 1..60000] "
               "[max_rss_mb max_cpu_ms]\n");
    return 2;
  }
  std::string text = configYaml(ports, endpoints);
  fmt::print("remora-endpoint-scale-bench: 1 Service, {} ports x {} endpoints, {:.1f} MB of YAML\n",
             ports, endpoints, static_cast<double>(text.size()) / 1e6);

  // The YAML text itself is resident already; what the load adds is the parse, the cached
  // documents and the table.
  long rss_before = statusKb("VmRSS:");
  size_t heap_before = mallinfo2().uordblks;
  remora::config::Loader loader;
  double cpu_start = cpuMs();
  auto start = std::chrono::steady_clock::now();
  auto table = loader.load(text, 1);
  double wall_ms = sinceMs(start);
  double cpu_ms = cpuMs() - cpu_start;
  if (!table.ok()) {
    fmt::print(stderr, "load failed: {}\n", table.error().message);
    return 1;
  }
  long rss_after = statusKb("VmRSS:");
  double heap_mb = static_cast<double>(mallinfo2().uordblks - heap_before) / 1048576.0;
  double rss_mb = static_cast<double>(rss_after - rss_before) / 1024.0;
  const auto& stats = loader.lastStats();
  fmt::print(
      "load                 {:8.1f} ms wall, {:8.1f} ms CPU (split {:.1f} + YAML parse {:.1f} "
      "+ build {:.1f}, wall)\n",
      wall_ms, cpu_ms, stats.split_ms, stats.parse_ms, stats.build_ms);
  fmt::print("RSS growth           {:8.1f} MB  (VmRSS {} -> {} kB, peak VmHWM {} kB)\n", rss_mb,
             rss_before, rss_after, statusKb("VmHWM:"));
  fmt::print("heap in use growth   {:8.1f} MB  (mallinfo2 uordblks: what the loader keeps)\n",
             heap_mb);

  // Lookups: the service address on every port, and a pod address (a pinned destination).
  // CPU time per call: wall time on a machine shared with builds says little.
  double lookup_start = 0;
  constexpr int kLookups = 1'000'000;
  SocketAddress service{*IpAddress::parse("10.96.0.10"), kFirstPort};
  size_t found = 0;
  lookup_start = cpuMs();
  for (int i = 0; i < kLookups; ++i) {
    service.port = static_cast<uint16_t>(kFirstPort + i % ports);
    found += (*table)->find(service) != nullptr;
  }
  double service_ns = (cpuMs() - lookup_start) * 1e6 / kLookups;
  size_t pinned = 0;
  lookup_start = cpuMs();
  for (int i = 0; i < kLookups; ++i) {
    int p = i % ports;
    SocketAddress pod{IpAddress::v4(podIp(static_cast<int>((i * 7919LL) % endpoints))),
                      static_cast<uint16_t>(kFirstTarget + p)};
    pinned += (*table)->match(pod).endpoint ? 1 : 0;
  }
  double pod_ns = (cpuMs() - lookup_start) * 1e6 / kLookups;
  auto router = remora::routing::makeRouter(*table, 1);
  size_t routed = 0;
  lookup_start = cpuMs();
  for (int i = 0; i < kLookups; ++i) {
    service.port = static_cast<uint16_t>(kFirstPort + i % ports);
    auto decision = router->route(service);
    routed += decision.kind == remora::routing::RouteDecision::Kind::kService ? 1 : 0;
    router->release(decision);
  }
  double route_ns = (cpuMs() - lookup_start) * 1e6 / kLookups;
  fmt::print("find(service)        {:8.0f} ns CPU ({} of {} found)\n", service_ns, found, kLookups);
  fmt::print("match(pod IP:port)   {:8.0f} ns CPU ({} of {} pinned)\n", pod_ns, pinned, kLookups);
  fmt::print("route()+release()    {:8.0f} ns CPU ({} of {} routed)\n", route_ns, routed, kLookups);

  bool ok = found == kLookups && pinned == kLookups && routed == kLookups;
  if (!ok) fmt::print("FAIL: some lookups missed\n");
  if (max_rss_mb > 0 && rss_mb > max_rss_mb) {
    fmt::print("FAIL: RSS grew {:.1f} MB, bound {:.0f} MB\n", rss_mb, max_rss_mb);
    ok = false;
  }
  if (max_cpu_ms > 0 && cpu_ms > max_cpu_ms) {
    fmt::print("FAIL: load took {:.0f} ms of CPU, bound {:.0f} ms\n", cpu_ms, max_cpu_ms);
    ok = false;
  }
  return ok ? 0 : 1;
}
