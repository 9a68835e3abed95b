#pragma once

#include "common/ip_address.h"
#include "common/result.h"

namespace remora::intercept {

// The proxy's IPv6 inbound passthrough source (::6, Istio's counterpart of 127.0.0.6). Unlike
// 127.0.0.0/8, ::6 is not local until it is put on lo; without it the replies to the proxy's
// connections toward the app would be routed off the pod.
IpAddress passthroughSourceV6();

// Adds `address`/128 to lo in the calling thread's netns; already present is success. Returns
// whether this call added it (false: it was there already), so a rollback removes only its own.
Result<bool> addLoopbackAddress(const IpAddress& address);
// Removes it; absent is success.
Result<void> removeLoopbackAddress(const IpAddress& address);

}  // namespace remora::intercept
