#include "tls/spiffe.h"

#include <fmt/format.h>

namespace remora::tls {

std::string SpiffeId::principal() const {
  constexpr std::string_view kScheme = "spiffe://";
  return std::string(std::string_view(uri).substr(kScheme.size()));
}

std::string makeSpiffeId(std::string_view trust_domain, std::string_view namespace_name,
                         std::string_view service_account) {
  return fmt::format("spiffe://{}/ns/{}/sa/{}", trust_domain, namespace_name,
                     service_account.empty() ? "default" : service_account);
}

std::optional<SpiffeId> parseSpiffeId(std::string_view uri) {
  constexpr std::string_view kScheme = "spiffe://";
  if (uri.substr(0, kScheme.size()) != kScheme) return std::nullopt;
  std::string_view rest = uri.substr(kScheme.size());
  const size_t slash = rest.find('/');
  SpiffeId id;
  id.uri = std::string(uri);
  id.trust_domain = std::string(rest.substr(0, slash));
  if (id.trust_domain.empty()) return std::nullopt;
  if (slash == std::string_view::npos) return id;
  std::string_view path = rest.substr(slash + 1);
  // ns/<ns>/sa/<sa>, nothing after.
  auto take = [&path](std::string_view key) -> std::optional<std::string_view> {
    if (path.substr(0, key.size() + 1) != std::string(key) + "/") return std::nullopt;
    path.remove_prefix(key.size() + 1);
    const size_t end = path.find('/');
    std::string_view value = path.substr(0, end);
    path = end == std::string_view::npos ? std::string_view() : path.substr(end + 1);
    if (value.empty()) return std::nullopt;
    return value;
  };
  auto ns = take("ns");
  auto sa = ns ? take("sa") : std::nullopt;
  if (ns && sa && path.empty()) {
    id.namespace_name = std::string(*ns);
    id.service_account = std::string(*sa);
  }
  return id;
}

}  // namespace remora::tls
