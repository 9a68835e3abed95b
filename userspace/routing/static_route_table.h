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

struct IpAddressHash {
  size_t operator()(const IpAddress& ip) const noexcept;
};

struct SocketAddressHash {
  size_t operator()(const SocketAddress& address) const noexcept;
};

// One ServicePort with the addresses that lead to it.
struct ServicePortEntry {
  ServicePort port;
  std::vector<IpAddress> cluster_ips;  // each gives clusterIP:port.port
  // Every endpoint of the service on this port: dialling one (or its other-family address)
  // reaches the ServicePort with that pod pinned. Entries of one Service share its pool.
  EndpointList endpoints;
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

  // Where a pool index sits in one entry: its position in entry.endpoints (kAbsent when the
  // pod is not an endpoint on this port) and in the subsets. One vector per entry, indexed by
  // pool index; entries with equal vectors (the ports of one Service, usually) share one.
  struct Slot {
    static constexpr uint32_t kAbsent = UINT32_MAX;
    uint32_t list_pos = kAbsent;
    uint32_t subset_index = RouteMatch::kNoSubset;
    uint32_t endpoint_index = 0;
    bool operator==(const Slot&) const = default;
  };

 private:
  // The entries whose endpoints come from one pool, in build order: those whose endpoints all
  // listen on one port, sorted by (port, entry), and the others, scanned.
  struct Group {
    std::vector<std::pair<uint16_t, uint32_t>> by_port;
    std::vector<uint32_t> mixed;
  };
  // A pod IP: its group and pool index; `next` chains the IP's other groups (kEnd ends).
  struct PodRef {
    static constexpr uint32_t kEnd = UINT32_MAX;
    uint32_t group = 0;
    uint32_t member = 0;
    uint32_t next = kEnd;
  };

  StaticRouteTable(ProxySettings settings, uint64_t generation,
                   std::vector<ServicePortEntry> entries, std::vector<Finding> findings);
  void indexPods();
  // The entry's slot for `member` when that endpoint listens on `port`.
  const Slot* slotFor(uint32_t entry, uint32_t member, uint16_t port) const;

  ProxySettings settings_;
  uint64_t generation_;
  std::vector<ServicePortEntry> entries_;
  std::vector<Finding> findings_;
  std::unordered_map<SocketAddress, uint32_t, SocketAddressHash> services_;  // clusterIP:port
  std::unordered_map<IpAddress, uint32_t, IpAddressHash> pods_;  // first PodRef of the IP
  std::vector<PodRef> pod_refs_;
  std::vector<Group> groups_;
  std::vector<std::shared_ptr<const std::vector<Slot>>> slots_;  // per entry
};

const char* toString(LbPolicy policy);
const char* toString(OutboundPolicy policy);
// The workload identity as /config_dump shows it (labels null when unknown).
nlohmann::json toJson(const WorkloadIdentity& workload);
nlohmann::json toJson(const ProxySettings& settings);
// {"severity", "kind", "namespace", "name", "field", "line", "message"} per finding.
nlohmann::json toJson(const std::vector<Finding>& findings);

}  // namespace remora::routing
