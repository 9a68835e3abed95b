#include "common/ip_address.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <charconv>
#include <cstring>

namespace remora {

Error errnoError(const std::string& what) {
  int saved = errno;
  return Error{saved, fmt::format("{}: {}", what, std::strerror(saved))};
}

Result<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = Family::kIpv4;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) {
    ip.family = Family::kIpv6;
    return ip;
  }
  return makeError(fmt::format("'{}' is not an IPv4 or IPv6 address", text));
}

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress ip;
  uint32_t n = htonl(host_order);
  std::memcpy(ip.bytes.data(), &n, 4);
  return ip;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == Family::kIpv4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof(buf));
  return buf;
}

Result<Cidr> Cidr::parse(std::string_view text) {
  auto slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) return makeError(fmt::format("invalid CIDR '{}': {}", text, ip.error().message));
  int max_prefix = ip->family == Family::kIpv4 ? 32 : 128;
  int prefix = max_prefix;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || prefix < 0 ||
        prefix > max_prefix) {
      return makeError(
          fmt::format("invalid CIDR '{}': prefix length must be 0..{}", text, max_prefix));
    }
  }
  Cidr cidr{*ip, prefix};
  // Normalise host bits away so equal networks compare equal and print canonically.
  for (size_t i = 0; i < cidr.address.size(); ++i) {
    int bits_left = prefix - static_cast<int>(i) * 8;
    if (bits_left >= 8) continue;
    uint8_t mask = bits_left <= 0 ? 0 : static_cast<uint8_t>(0xFF << (8 - bits_left));
    cidr.address.bytes[i] &= mask;
  }
  return cidr;
}

bool Cidr::contains(const IpAddress& ip) const {
  if (ip.family != address.family) return false;
  for (size_t i = 0; i < ip.size(); ++i) {
    int bits_left = prefix - static_cast<int>(i) * 8;
    if (bits_left <= 0) return true;
    uint8_t mask = bits_left >= 8 ? 0xFF : static_cast<uint8_t>(0xFF << (8 - bits_left));
    if ((ip.bytes[i] & mask) != (address.bytes[i] & mask)) return false;
  }
  return true;
}

std::string Cidr::toString() const { return fmt::format("{}/{}", address.toString(), prefix); }

Result<SocketAddress> SocketAddress::parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find("]:");
    if (close == std::string_view::npos) {
      return makeError(fmt::format("'{}' is not [IPv6]:PORT", text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return makeError(fmt::format("'{}' is not IP:PORT", text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto ip = IpAddress::parse(host);
  if (!ip) return ip.error();
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    return makeError(fmt::format("'{}' is not a port in 1..65535", port));
  }
  return SocketAddress{*ip, static_cast<uint16_t>(value)};
}

std::optional<SocketAddress> SocketAddress::fromSockaddr(const sockaddr* sa) {
  SocketAddress out;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.ip.family = Family::kIpv4;
    std::memcpy(out.ip.bytes.data(), &in->sin_addr, 4);
    out.port = ntohs(in->sin_port);
    return out;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out.ip.family = Family::kIpv6;
    std::memcpy(out.ip.bytes.data(), &in6->sin6_addr, 16);
    out.port = ntohs(in6->sin6_port);
    return out;
  }
  return std::nullopt;
}

socklen_t SocketAddress::toSockaddr(sockaddr_storage& storage) const {
  std::memset(&storage, 0, sizeof(storage));
  if (ip.family == Family::kIpv4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, ip.bytes.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  std::memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
  return sizeof(sockaddr_in6);
}

std::string SocketAddress::toString() const {
  if (ip.family == Family::kIpv6) return fmt::format("[{}]:{}", ip.toString(), port);
  return fmt::format("{}:{}", ip.toString(), port);
}

}  // namespace remora

#include "common/original_dst.h"

namespace remora {

Result<SocketAddress> originalDestination(int fd, Family family) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  int rc = family == Family::kIpv6 ? getsockopt(fd, SOL_IPV6, kSoOriginalDst, &ss, &len)
                                   : getsockopt(fd, SOL_IP, kSoOriginalDst, &ss, &len);
  if (rc != 0) return errnoError("SO_ORIGINAL_DST");
  auto sa = SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss));
  if (!sa) return makeError("SO_ORIGINAL_DST returned an unknown address family");
  return *sa;
}

}  // namespace remora
