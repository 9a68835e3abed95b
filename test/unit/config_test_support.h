#pragma once

// What the config and L7 routing unit tests share: reading a fixture from test/fixtures
// (REMORA_FIXTURES_DIR, set by each test target), loading a config that must load, and a
// table's findings as text.

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "config/loader.h"
#include "routing/route_table.h"

namespace remora::config::testing {

inline SocketAddress addr(const char* text) { return *SocketAddress::parse(text); }

inline std::string fixture(const std::string& name) {
  std::ifstream in(std::string(REMORA_FIXTURES_DIR) + "/" + name);
  EXPECT_TRUE(in) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Loads `text` with `loader` (a fresh one when null); a load that fails as a whole is a test
// failure and gives nullptr.
inline std::shared_ptr<const routing::RouteTable> mustLoad(const std::string& text,
                                                           const routing::ProxySettings& base = {},
                                                           Loader* loader = nullptr) {
  Loader fresh;
  auto table = (loader != nullptr ? *loader : fresh).load(text, 1, base);
  EXPECT_TRUE(table.ok()) << table.error().message;
  return table.ok() ? *table : nullptr;
}

// Every finding as "severity: text", one per line.
inline std::string allFindings(const routing::RouteTable& table) {
  std::string out;
  for (const auto& f : table.findings()) {
    out += std::string(toString(f.severity)) + ": " + f.text + "\n";
  }
  return out;
}

}  // namespace remora::config::testing
