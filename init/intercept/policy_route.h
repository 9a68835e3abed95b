#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ip_address.h"
#include "common/result.h"
#include "intercept/applier.h"
#include "intercept/plan.h"

namespace remora::intercept {

// The two parts of TPROXY mode's policy routing in one family: the `fwmark MARK lookup TABLE`
// rule and the `local default dev lo` route in TABLE.
struct PolicyRouteState {
  bool rule = false;
  bool route = false;
  bool any() const { return rule || route; }
  bool operator==(const PolicyRouteState&) const = default;
};

// What is in place now, in the calling thread's netns (through libnl, no `ip` process).
Result<PolicyRouteState> readPolicyRoute(Family family, const PolicyRoute& route);
// Adds the parts that are missing; returns the parts this call added, so a rollback removes
// only its own. Idempotent.
Result<PolicyRouteState> addPolicyRoute(Family family, const PolicyRoute& route);
// Removes the parts named in `which`; absent is success. Returns the parts it removed.
Result<PolicyRouteState> removePolicyRoute(Family family, const PolicyRoute& route,
                                           PolicyRouteState which = {true, true});

// The policy-routing parts an install added, per family, for its rollback.
using RoutesAdded = std::vector<std::pair<Family, PolicyRouteState>>;
// Removes what `routes` lists; returns text for an error message ("; removed ...").
std::string removeRoutes(const RoutesAdded& routes);
// What differs between the plan's policy routing (or its absence) and the netns, or nullopt.
std::optional<std::string> policyRouteDifference(const FamilyPlan& plan);
// Uninstall's part: removes TPROXY policy routing in both families (absent is success) and
// reports it.
Result<void> uninstallPolicyRoutes(ApplyReport& report);

// "fwmark 0x539 lookup 133: rule present, route present", for dump and reports.
std::string describePolicyRoute(Family family, const PolicyRoute& route,
                                const PolicyRouteState& state);

}  // namespace remora::intercept
