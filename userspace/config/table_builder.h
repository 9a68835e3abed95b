#pragma once

#include <memory>
#include <vector>

#include "common/result.h"
#include "config/documents.h"
#include "routing/route_table.h"

namespace remora::config {

struct PlacedDocument {
  Placement placement;
  std::shared_ptr<const DocumentModel> model;
};

// Relates the parsed objects to each other and builds the table: Services' endpoints from
// ready Pods (or EndpointSlices), VirtualService weights over DestinationRule subsets, and
// the optional ProxyConfig over `base`. Fails, naming the document, field and line, on
// duplicates, undefined subsets, subsets that match no pod, unknown destination hosts and
// clusterIP:port clashes.
Result<std::shared_ptr<const routing::RouteTable>> buildRouteTable(
    const std::vector<PlacedDocument>& documents, uint64_t generation,
    const routing::ProxySettings& base);

}  // namespace remora::config
