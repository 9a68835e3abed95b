#pragma once

// The typed form of security.istio.io/v1 PeerAuthentication and AuthorizationPolicy, and the
// TLS part of a DestinationRule's traffic policy. Kept apart from documents.h so the security
// kinds stay in files of their own (security_parser.cc reads them).

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "security/security_policy.h"

namespace remora::config {

struct PeerAuthenticationSpec {
  security::PeerAuthenticationRule rule;
};

struct AuthorizationPolicySpec {
  security::AuthorizationPolicyRule rule;  // counters are attached by the builder
};

// trafficPolicy.tls and portLevelSettings[].tls of a DestinationRule.
struct DestinationTls {
  std::optional<security::ClientTlsSettings> settings;
  std::vector<std::pair<uint16_t, security::ClientTlsSettings>> ports;
};

}  // namespace remora::config
