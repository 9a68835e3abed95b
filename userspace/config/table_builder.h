#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/finding.h"
#include "common/result.h"
#include "config/documents.h"
#include "routing/route_table.h"

namespace remora::config {

struct PlacedDocument {
  Placement placement;
  std::shared_ptr<const DocumentModel> model;
};

// Resolves a DNS name (ServiceEntry resolution DNS) to addresses; runs on the loading thread,
// never on the data path. Without one, DNS names are reported and left unresolved.
using HostResolver = std::function<Result<std::vector<IpAddress>>(const std::string& host)>;

// Istio's protocol for a port, from appProtocol first, then the port name's prefix
// ("http-web" → "HTTP"): HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, TCP, MONGO, MYSQL, REDIS;
// "" when neither says (Istio then sniffs the protocol).
std::string portProtocol(std::string_view name, std::string_view app_protocol);
bool isHttpProtocol(std::string_view protocol);
bool isTlsProtocol(std::string_view protocol);
// Whether spec.http applies per request on a port of this protocol: HTTP (HTTP/1.1), and ""
// (sniffed: connections that start with an HTTP/1.x request line). HTTP/2 and gRPC ports are
// routed per connection.
bool perRequestProtocol(std::string_view protocol);

// Relates the parsed objects to each other and builds the table: Services' (and
// ServiceEntries') endpoints from ready Pods, WorkloadEntries, EndpointSlices or Endpoints,
// VirtualService routes over DestinationRule subsets per port protocol, and the optional
// ProxyConfig over `base`. An object that cannot be applied is left out alone, with an error
// finding; what is applied differently from Istio is a warning. `findings` (the loader's:
// rejected objects, skipped kinds) come first in the table's list.
Result<std::shared_ptr<const routing::RouteTable>> buildRouteTable(
    const std::vector<PlacedDocument>& documents, uint64_t generation,
    const routing::ProxySettings& base, std::vector<Finding> findings = {},
    const HostResolver& resolve = {});

// A finding about an object, worded like every other error: "document 3 (Kind ns/name),
// field, line N: message".
Finding makeFinding(Severity severity, const Placement& placement, const Object& object,
                    std::string_view field, int relative_line, std::string_view message);

}  // namespace remora::config
