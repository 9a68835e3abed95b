// Per-worker counters, their aggregation and the Prometheus text.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "proxy/stats.h"

namespace remora::proxy {
namespace {

TEST(StatsTest, AggregatesWorkersAndRendersIstioLikeMetrics) {
  WorkerStats a, b;
  EndpointKey v1{"bill-service.istio-demo", "v1", "10.244.1.168:80"};
  a.endpoint(v1).opened.add(3);
  a.endpoint(v1).closed.add(1);
  b.endpoint(v1).opened.add(2);
  b.endpoint(v1).received_bytes.add(100);
  b.endpoint(v1).sent_bytes.add(250);
  b.endpoint({kPassthroughCluster, "", ""}).connect_failures.inc();
  a.counters().passthrough.inc();
  b.counters().refused_registry.add(4);
  ProcessSample p;
  p.config_generation = 7;
  p.config_reload_failures = 2;
  p.config_last_reload_ok = false;
  p.ready = true;
  p.workers = 2;
  std::string text = renderPrometheus(aggregate({&a, &b}, p));
  const std::string labels =
      "{destination_service=\"bill-service.istio-demo\",destination_subset=\"v1\","
      "destination_endpoint=\"10.244.1.168:80\"}";
  for (const std::string& line : {
           "remora_tcp_connections_opened_total" + labels + " 5",
           "remora_tcp_connections_closed_total" + labels + " 1",
           "remora_tcp_active_connections" + labels + " 4",
           "remora_tcp_received_bytes_total" + labels + " 100",
           "remora_tcp_sent_bytes_total" + labels + " 250",
           std::string(
               "remora_tcp_connect_failures_total{destination_service=\"PassthroughCluster\","
               "destination_subset=\"\",destination_endpoint=\"\"} 1"),
           std::string("remora_tcp_passthrough_total 1"),
           std::string("remora_tcp_refused_total{reason=\"registry_only\"} 4"),
           std::string("remora_config_generation 7"),
           std::string("remora_config_reload_failures_total 2"),
           std::string("remora_config_last_reload_success 0"),
           std::string("# TYPE remora_tcp_active_connections gauge"),
           std::string("# TYPE remora_tcp_sent_bytes_total counter"),
       }) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << text;
  }
}

// --relay auto's hand-over counters (worker_kernel_relay.cc) are summed over the workers.
TEST(StatsTest, RelayHandoverCountersAreSummed) {
  WorkerStats a, b;
  a.counters().relay_handovers.add(2);
  b.counters().relay_handovers.inc();
  b.counters().relay_handover_races.add(4);
  a.counters().relay_kept_short.add(5);
  b.counters().relay_kept_short.add(6);
  a.counters().relay_kept_bulk.inc();
  b.counters().relay_kept_raced.add(2);
  a.counters().relay_backpressure_pauses.add(3);
  b.counters().relay_backpressure_pauses.inc();
  b.counters().relay_pause_losses.inc();
  const std::string text = renderPrometheus(aggregate({&a, &b}, ProcessSample{}));
  for (const std::string& line : std::vector<std::string>{
           "remora_relay_handovers_total 3",
           "remora_relay_backpressure_pauses_total 4",
           "remora_relay_pause_losses_total 1",
           "remora_relay_handover_races_total 4",
           "remora_relay_kept_in_user_space_total{reason=\"short\"} 11",
           "remora_relay_kept_in_user_space_total{reason=\"bulk\"} 1",
           "remora_relay_kept_in_user_space_total{reason=\"raced\"} 2",
           "# TYPE remora_relay_kept_in_user_space_total counter",
       }) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << "missing: " << line << "\n" << text;
  }
}

TEST(StatsTest, InboundSeriesCarryTheSourcePrincipal) {
  WorkerStats w;
  w.endpoint({kInboundCluster, "", "10.0.0.1:80", "cluster.local/ns/a/sa/b"}).opened.inc();
  w.endpoint({kInboundCluster, "", "10.0.0.1:80", "unknown"}).opened.add(2);
  w.endpoint({kInboundCluster, "", "10.0.0.1:81"}).opened.add(3);
  const std::string text = renderPrometheus(aggregate({&w}, ProcessSample{}));
  const std::string base =
      "remora_tcp_connections_opened_total{destination_service=\"InboundPassthroughCluster\","
      "destination_subset=\"\",destination_endpoint=";
  EXPECT_NE(text.find(base + "\"10.0.0.1:80\",source_principal=\"cluster.local/ns/a/sa/b\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(base + "\"10.0.0.1:80\",source_principal=\"unknown\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find(base + "\"10.0.0.1:81\"} 3"), std::string::npos) << text;
}

TEST(StatsTest, LabelValuesAreEscaped) {
  WorkerStats a;
  a.endpoint({"we\"ird\\", "", "x"}).opened.inc();
  std::string text = renderPrometheus(aggregate({&a}, {}));
  EXPECT_NE(text.find("destination_service=\"we\\\"ird\\\\\""), std::string::npos) << text;
}

// The writer never locks; a concurrent reader sees a consistent, growing list.
TEST(StatsTest, ReaderRunsWhileTheWorkerAddsEndpoints) {
  WorkerStats w;
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop.load()) {
      auto s = aggregate({&w}, {});
      for (const auto& [k, t] : s.endpoints) ASSERT_LE(t.closed, t.opened + 1);
    }
  });
  for (int i = 0; i < 2000; ++i) {
    auto& c = w.endpoint({"svc", "", std::to_string(i % 300)});
    c.opened.inc();
    c.closed.inc();
  }
  stop = true;
  reader.join();
  EXPECT_EQ(aggregate({&w}, {}).endpoints.size(), 300u);
}

}  // namespace
}  // namespace remora::proxy
