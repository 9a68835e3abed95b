#include "intercept/loopback.h"

#include <fmt/format.h>
#include <net/if.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>

#include <memory>

namespace remora::intercept {
namespace {

struct SocketDeleter {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct AddrDeleter {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};

// Runs `op` (rtnl_addr_add or rtnl_addr_delete) for address/128 on lo; `ok_error` is the libnl
// error that means "already as wanted".
// Returns false when the address already was as wanted.
template <typename Op>
Result<bool> changeLoopback(const IpAddress& address, Op op, int ok_error, const char* what) {
  std::unique_ptr<nl_sock, SocketDeleter> sock(nl_socket_alloc());
  if (!sock) return makeError("netlink: out of memory");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return makeError(fmt::format("netlink connect: {}", nl_geterror(err)));
  }
  unsigned lo = if_nametoindex("lo");
  if (lo == 0) return errnoError("lo");
  std::unique_ptr<rtnl_addr, AddrDeleter> addr(rtnl_addr_alloc());
  std::unique_ptr<nl_addr, NlAddrDeleter> local(
      nl_addr_build(address.family == Family::kIpv6 ? AF_INET6 : AF_INET,
                    const_cast<uint8_t*>(address.bytes.data()), address.size()));
  if (!addr || !local) return makeError("netlink: out of memory");
  nl_addr_set_prefixlen(local.get(), static_cast<int>(address.size() * 8));
  rtnl_addr_set_ifindex(addr.get(), static_cast<int>(lo));
  rtnl_addr_set_local(addr.get(), local.get());
  int err = op(sock.get(), addr.get());
  if (err == -ok_error) return false;
  if (err < 0) {
    return makeError(fmt::format("{} {} on lo: {}", what, address.toString(), nl_geterror(err)));
  }
  return true;
}

}  // namespace

IpAddress passthroughSourceV6() { return *IpAddress::parse("::6"); }

Result<bool> addLoopbackAddress(const IpAddress& address) {
  return changeLoopback(
      address, [](nl_sock* s, rtnl_addr* a) { return rtnl_addr_add(s, a, 0); }, NLE_EXIST,
      "adding");
}

Result<void> removeLoopbackAddress(const IpAddress& address) {
  auto removed = changeLoopback(
      address, [](nl_sock* s, rtnl_addr* a) { return rtnl_addr_delete(s, a, 0); }, NLE_NOADDR,
      "removing");
  if (!removed) return removed.error();
  return {};
}

}  // namespace remora::intercept
