#pragma once

// Fixtures for the iptables-save parser, trace and dump tests: files under test/fixtures
// (REMORA_FIXTURES_DIR, set by the tests' CMake).

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "intercept/iptables_save.h"

namespace remora::intercept::fixtures {

inline std::string readFixture(const std::string& name) {
  std::ifstream f(std::string(REMORA_FIXTURES_DIR) + "/" + name);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The nat table of an iptables-save text; a parse failure fails the calling test.
inline SavedTable natFromText(const std::string& text) {
  auto r = parseIptablesSave(text);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok() || r->table("nat") == nullptr) return {};
  return *r->table("nat");
}

inline SavedTable natFromFixture(const std::string& name) { return natFromText(readFixture(name)); }

}  // namespace remora::intercept::fixtures
