#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace remora {

enum class Family { kIpv4, kIpv6 };

// An IPv4 or IPv6 address, held in network byte order.
struct IpAddress {
  Family family = Family::kIpv4;
  std::array<uint8_t, 16> bytes{};  // v4 uses the first 4

  static Result<IpAddress> parse(std::string_view text);
  static IpAddress v4(uint32_t host_order);
  std::string toString() const;
  size_t size() const { return family == Family::kIpv4 ? 4 : 16; }
  // IPv4 before IPv6, then by bytes: a strict order for maps and sorted lists. (clang-tidy 14
  // takes the literal 0 its defaulted comparisons are written against for a null pointer.)
  // NOLINTNEXTLINE(modernize-use-nullptr)
  auto operator<=>(const IpAddress&) const = default;
};

// A network in CIDR form. A bare address parses as a host route (/32 or /128).
struct Cidr {
  IpAddress address;
  int prefix = 0;

  static Result<Cidr> parse(std::string_view text);
  bool contains(const IpAddress& ip) const;
  std::string toString() const;
  bool operator==(const Cidr&) const = default;
};

// An address and a TCP port.
struct SocketAddress {
  IpAddress ip;
  uint16_t port = 0;

  // Accepts "1.2.3.4:80" and "[::1]:80".
  static Result<SocketAddress> parse(std::string_view text);
  static std::optional<SocketAddress> fromSockaddr(const sockaddr* sa);
  // Fills storage and returns the length to pass to bind/connect.
  socklen_t toSockaddr(sockaddr_storage& storage) const;
  std::string toString() const;
  // By address, then port.
  // NOLINTNEXTLINE(modernize-use-nullptr): see IpAddress
  auto operator<=>(const SocketAddress&) const = default;
};

}  // namespace remora
