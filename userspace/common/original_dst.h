#pragma once

#include "common/ip_address.h"
#include "common/result.h"

namespace remora {

// SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST (SOL_IPV6) share the value 80. They are
// spelled out here because <linux/netfilter_ipv4.h> clashes with glibc's <netinet/in.h>.
inline constexpr int kSoOriginalDst = 80;

// The destination a REDIRECTed (or eBPF-rewritten) connection was originally sent to, for an
// accepted socket of the given family. ENOENT when the connection was not redirected.
Result<SocketAddress> originalDestination(int fd, Family family);

}  // namespace remora
