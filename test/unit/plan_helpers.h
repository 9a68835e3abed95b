#pragma once

// Helpers shared by the planner's unit tests: options from flag strings, a chain's rules as text.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "intercept/cli.h"
#include "intercept/plan.h"

namespace remora::intercept::testing {

inline std::vector<std::string> chainLines(const FamilyPlan& plan, const std::string& chain) {
  std::vector<std::string> out;
  for (const auto& r : plan.rules) {
    if (r.chain == chain) out.push_back(r.toString());
  }
  return out;
}

inline InterceptOptions with(std::initializer_list<std::pair<const char*, const char*>> flags) {
  InterceptOptions o;
  for (const auto& [flag, value] : flags) {
    auto set = setOption(o, flag, value);
    EXPECT_TRUE(set.ok()) << flag << "=" << value << ": " << (set ? "" : set.error().message);
  }
  return o;
}

inline bool has(const std::vector<std::string>& v, const std::string& line) {
  return std::find(v.begin(), v.end(), line) != v.end();
}

}  // namespace remora::intercept::testing
