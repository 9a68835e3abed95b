#pragma once

// The RouteTable the config loader builds: every lookup key is resolved at construction, so
// find() is one hash probe.

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "routing/route_table.h"

namespace remora::routing {

struct SocketAddressHash {
  size_t operator()(const SocketAddress& address) const noexcept;
};

// A pod address that should reach a ServicePort. `endpoint` is the address the pod appears
// under in the subsets; it differs from `address` for the other family of a dual-stack pod.
struct PodAddress {
  SocketAddress address;
  SocketAddress endpoint;
};

// One ServicePort with the addresses that lead to it.
struct ServicePortEntry {
  ServicePort port;
  std::vector<IpAddress> cluster_ips;     // each gives clusterIP:port.port
  std::vector<PodAddress> pod_addresses;  // every endpoint of the service on this port
};

class StaticRouteTable final : public RouteTable {
 public:
  // Fails when two entries claim one clusterIP:port. A service address always wins over a pod
  // address, and a pod address claimed by two ServicePorts (two Services selecting one pod)
  // goes to the first entry, so the result does not depend on hash order.
  static Result<std::shared_ptr<const StaticRouteTable>> create(
      ProxySettings settings, uint64_t generation, std::vector<ServicePortEntry> entries,
      std::vector<Finding> findings = {});

  const ServicePort* find(const SocketAddress& original_dst) const override;
  RouteMatch match(const SocketAddress& original_dst) const override;
  const ProxySettings& settings() const override { return settings_; }
  uint64_t generation() const override { return generation_; }
  nlohmann::json toJson() const override;
  const std::vector<Finding>& findings() const override { return findings_; }

  size_t servicePortCount() const { return entries_.size(); }
  // Every ServicePort in build order (document order of Services, then of ports).
  const std::vector<ServicePortEntry>& entries() const { return entries_; }

 private:
  struct Target {
    uint32_t entry = 0;
    bool endpoint = false;
    uint32_t subset_index = RouteMatch::kNoSubset;
    uint32_t endpoint_index = 0;
  };

  StaticRouteTable(ProxySettings settings, uint64_t generation,
                   std::vector<ServicePortEntry> entries, std::vector<Finding> findings);

  ProxySettings settings_;
  uint64_t generation_;
  std::vector<ServicePortEntry> entries_;
  std::vector<Finding> findings_;
  std::unordered_map<SocketAddress, Target, SocketAddressHash> index_;
};

const char* toString(LbPolicy policy);
const char* toString(OutboundPolicy policy);
nlohmann::json toJson(const ProxySettings& settings);
// {"severity", "kind", "namespace", "name", "field", "line", "message"} per finding.
nlohmann::json toJson(const std::vector<Finding>& findings);

}  // namespace remora::routing
