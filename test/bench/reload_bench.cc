// Measures how long the proxy takes to load a large configuration and to reload it after a
// one-Service edit: N Services (one clusterIP and port each) with two ready Pods apiece.
//
//   remora-reload-bench [services=10000] [runs=5]
//
// A cold load parses every document; a reload re-parses only the documents whose text
// changed and rebuilds the table from the cached rest.

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "config/loader.h"
#include "routing/route_table.h"

namespace {

using remora::config::Loader;

std::string serviceYaml(int i) {
  int a = i / 250;
  int b = i % 250 + 1;
  std::string out = fmt::format(R"(apiVersion: v1
kind: Service
metadata:
  name: svc-{0}
  namespace: bench
spec:
  clusterIP: 10.96.{1}.{2}
  selector:
    app: svc-{0}
  ports:
  - name: http
    port: 80
    targetPort: 8080
)",
                                i, a, b);
  for (int j = 0; j < 2; ++j) {
    out += fmt::format(R"(---
apiVersion: v1
kind: Pod
metadata:
  name: svc-{0}-{1}
  namespace: bench
  labels:
    app: svc-{0}
spec:
  containers:
  - name: app
    image: nginx
    ports:
    - containerPort: 8080
status:
  podIP: 10.{2}.{3}.{4}
)",
                       i, j, j + 1, a, b);
  }
  return out;
}

std::string configYaml(int services) {
  std::string out;
  for (int i = 0; i < services; ++i) {
    if (i > 0) out += "---\n";
    out += serviceYaml(i);
  }
  return out;
}

struct Sample {
  double total_ms = 0;
  double cpu_ms = 0;  // this process's CPU time: steadier than wall time on a shared machine
  Loader::Stats stats;
};

double cpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

Sample timeLoad(Loader& loader, const std::string& text, uint64_t generation) {
  double cpu_start = cpuMs();
  auto start = std::chrono::steady_clock::now();
  auto table = loader.load(text, generation);
  Sample s;
  s.total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  s.cpu_ms = cpuMs() - cpu_start;
  if (!table.ok()) {
    fmt::print(stderr, "load failed: {}\n", table.error().message);
    std::exit(1);
  }
  s.stats = loader.lastStats();
  return s;
}

void report(const char* what, const std::vector<Sample>& samples) {
  std::vector<double> total, cpu, split, parse, build;
  for (const auto& s : samples) {
    total.push_back(s.total_ms);
    cpu.push_back(s.cpu_ms);
    split.push_back(s.stats.split_ms);
    parse.push_back(s.stats.parse_ms);
    build.push_back(s.stats.build_ms);
  }
  fmt::print(
      "{:<18} median {:7.1f} ms wall, {:7.1f} ms CPU  (split {:.1f} + YAML parse {:.1f} "
      "[{} docs] + build {:.1f}, wall)  over {} runs\n",
      what, median(total), median(cpu), median(split), median(parse), samples.back().stats.parsed,
      median(build), samples.size());
}

}  // namespace

int main(int argc, char** argv) {
  int services = argc > 1 ? std::atoi(argv[1]) : 10000;
  int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  if (services < 1 || runs < 1) {
    fmt::print(stderr, "usage: remora-reload-bench [services>=1] [runs>=1]\n");
    return 2;
  }
  std::string base = configYaml(services);
  std::string extra = "---\n" + serviceYaml(services);
  std::string added = base + extra;
  fmt::print("remora-reload-bench: {} Services, {} Pods, {:.1f} MB of YAML\n", services,
             services * 2, static_cast<double>(base.size()) / 1e6);

  std::vector<Sample> cold;
  uint64_t generation = 1;
  for (int r = 0; r < runs; ++r) {
    Loader loader;  // nothing cached: every document is parsed
    cold.push_back(timeLoad(loader, base, generation++));
  }
  report("cold load", cold);

  Loader loader;
  timeLoad(loader, base, generation++);
  std::vector<Sample> add, remove;
  for (int r = 0; r < runs; ++r) {
    add.push_back(timeLoad(loader, added, generation++));
    remove.push_back(timeLoad(loader, base, generation++));
  }
  report("reload +1 Service", add);
  report("reload -1 Service", remove);

  auto table = loader.load(added, generation++);
  auto start = std::chrono::steady_clock::now();
  size_t found = 0;
  constexpr int kLookups = 1'000'000;
  for (int i = 0; i < kLookups; ++i) {
    int s = i % (services + 1);
    remora::SocketAddress dst{
        remora::IpAddress::v4((10u << 24) | (96u << 16) | (static_cast<uint32_t>(s / 250) << 8) |
                              static_cast<uint32_t>(s % 250 + 1)),
        80};
    found += (*table)->find(dst) != nullptr;
  }
  double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
      kLookups;
  fmt::print("{:<22} {:.0f} ns per find() ({} of {} found)\n", "lookup", ns, found, kLookups);
  return found == kLookups ? 0 : 1;
}
