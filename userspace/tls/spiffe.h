#pragma once

// SPIFFE identities as Istio names workloads: spiffe://<trust-domain>/ns/<namespace>/sa/<sa>.

#include <optional>
#include <string>
#include <string_view>

namespace remora::tls {

inline constexpr const char* kDefaultTrustDomain = "cluster.local";

struct SpiffeId {
  std::string trust_domain;
  std::string namespace_name;  // empty when the path is not /ns/<ns>/sa/<sa>
  std::string service_account;
  std::string uri;  // the whole ID as written

  // Istio's "principal": the ID without its scheme ("cluster.local/ns/default/sa/sleep").
  std::string principal() const;
};

// spiffe://<td>/ns/<ns>/sa/<sa>; an empty service account becomes "default", as in Kubernetes.
std::string makeSpiffeId(std::string_view trust_domain, std::string_view namespace_name,
                         std::string_view service_account);

// nullopt unless `uri` is spiffe://<trust domain>[/path]. The namespace and service account are
// filled only for the /ns/<ns>/sa/<sa> form.
std::optional<SpiffeId> parseSpiffeId(std::string_view uri);

}  // namespace remora::tls
