// libFuzzer target: how install reads its own nftables table back. The text listing of `inet
// remora` (libnftables' `list table inet remora`, with or without `-a` handles) is parsed and
// compared rule by rule with the tables three plans render to (remora::intercept::nftDifferences:
// the default plan, TPROXY inbound, and IPv4 only with drop-invalid off).
//
// Input: the text listing of one nftables table.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "intercept/cli.h"
#include "intercept/nftables_applier.h"

namespace ri = remora::intercept;

namespace {

std::vector<ri::FamilyPlan> plansFor(
    std::initializer_list<std::pair<const char*, const char*>> flags,
    const std::vector<remora::Family>& families) {
  ri::InterceptOptions o;
  for (const auto& [flag, value] : flags) {
    if (!ri::setOption(o, flag, value).ok()) std::abort();  // a harness bug
  }
  std::vector<ri::FamilyPlan> plans;
  plans.reserve(families.size());
  for (auto f : families) plans.push_back(ri::planFamily(o, f));
  return plans;
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::vector<ri::FamilyPlan>> kPlans = {
      plansFor({}, {remora::Family::kIpv4, remora::Family::kIpv6}),
      plansFor({{"inbound-interception-mode", "TPROXY"}},
               {remora::Family::kIpv4, remora::Family::kIpv6}),
      plansFor({{"drop-invalid", "false"}}, {remora::Family::kIpv4}),
  };
  const std::optional<std::string> listing(std::string(reinterpret_cast<const char*>(data), size));
  for (const auto& plans : kPlans) {
    auto diffs = ri::nftDifferences(listing, plans);
    // The plans are fixed and valid, so only the listing varies: rendering them never fails,
    // and a table that is there is never reported as missing.
    if (!diffs) std::abort();
    // (The listing's own text is quoted in other differences, so only the exact line counts.)
    for (const auto& d : *diffs) {
      if (d == "table inet remora is not installed") std::abort();
    }
  }
  return 0;
}
