#pragma once

// `remora-proxy check`: loads a config file the way the proxy would and prints the routing
// table it would serve (per Service port: protocol, VIPs, routes with their effective shares,
// subsets and endpoints), then every finding with its severity.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/finding.h"
#include "routing/route_table.h"

namespace remora::config {

// The table as text, from its /config_dump JSON (RouteTable::toJson), findings last.
std::string renderCheck(const nlohmann::json& dump);

// 2 when a finding is an error, 1 when one is a warning and `strict`, else 0.
int checkExitCode(const std::vector<Finding>& findings, bool strict);

// Every field of every kind, as Markdown tables (docs/CONFIG.md holds this output).
std::string renderFieldTables();

// The subcommand: `check --config FILE [--json] [--strict]`. Returns the exit code; writes
// the report to stdout and usage errors to stderr.
int checkMain(int argc, char** argv);

}  // namespace remora::config
