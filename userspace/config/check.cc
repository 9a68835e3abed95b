#include "config/check.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "config/field_table.h"
#include "config/loader.h"

namespace remora::config {
namespace {

// "uri prefix /api and headers end-user exact jason", from one httpRoutes[].match[] entry.
std::string matchText(const nlohmann::json& m) {
  std::vector<std::string> parts;
  auto add = [&](const std::string& what, const nlohmann::json& sm) {
    for (const auto& [kind, value] : sm.items()) {
      if (kind == "ignoreCase") continue;
      std::string text = value.get<std::string>();
      parts.push_back(kind == "present" ? what + " present"
                                        : fmt::format("{} {} {}", what, kind, text));
    }
  };
  for (const char* key : {"uri", "scheme", "method", "authority"}) {
    if (m.contains(key)) add(key, m[key]);
  }
  for (const char* key : {"headers", "withoutHeaders", "queryParams"}) {
    if (!m.contains(key)) continue;
    for (const auto& [name, sm] : m[key].items()) add(fmt::format("{} {}", key, name), sm);
  }
  if (m.contains("port")) parts.push_back(fmt::format("port {}", m["port"].get<int>()));
  if (m.contains("sourceLabels")) parts.push_back("sourceLabels " + m["sourceLabels"].dump());
  if (m.contains("sourceNamespace")) {
    parts.push_back("sourceNamespace " + m["sourceNamespace"].get<std::string>());
  }
  if (m.contains("sourceHolds") && !m["sourceHolds"].get<bool>()) {
    parts.emplace_back("(never, for this proxy's workload)");
  }
  return parts.empty() ? "anything" : fmt::format("{}", fmt::join(parts, " and "));
}

// One line per http route: what it matches, then where it sends the request.
std::string httpRouteText(const nlohmann::json& r) {
  std::vector<std::string> matches;
  for (const auto& m : r.value("match", nlohmann::json::array())) {
    matches.push_back(matchText(m));
  }
  std::string out = fmt::format("  http {}: {} ->", r.value("field", ""),
                                matches.empty() ? std::string("every request")
                                                : fmt::format("{}", fmt::join(matches, " | ")));
  uint64_t total = 0;
  for (const auto& d : r.value("route", nlohmann::json::array())) total += d.value("weight", 0u);
  for (const auto& d : r.value("route", nlohmann::json::array())) {
    std::string subset = d.value("subset", "");
    out += fmt::format(" {} {:.3g}%", subset.empty() ? "(all endpoints)" : subset,
                       total == 0 ? 0.0 : 100.0 * d.value("weight", 0u) / total);
  }
  if (r.contains("redirect")) out += fmt::format(" redirect {}", r["redirect"].value("code", 301));
  if (r.contains("directResponse")) {
    out += fmt::format(" direct response {}", r["directResponse"].value("status", 200));
  }
  if (r.contains("fault")) {
    const auto& f = r["fault"];
    if (f.contains("delay")) {
      out += fmt::format(" delay {}ms {:.3g}%", f["delay"].value("fixedDelayMs", 0),
                         f["delay"].value("percent", 0.0));
    }
    if (f.contains("abort")) {
      out += fmt::format(" abort {} {:.3g}%", f["abort"].value("httpStatus", 0),
                         f["abort"].value("percent", 0.0));
    }
  }
  if (r.contains("mirrors")) {
    for (const auto& m : r["mirrors"]) {
      out += fmt::format(" mirror {} {:.3g}%", m.value("subset", ""), m.value("percent", 0.0));
    }
  }
  return out + "\n";
}

}  // namespace

std::string renderCheck(const nlohmann::json& dump) {
  std::string out;
  if (dump.contains("settings") && dump["settings"].contains("workload")) {
    const auto& w = dump["settings"]["workload"];
    std::string ns = w.value("namespace", "");
    std::string name = w.value("name", "");
    std::string labels = "unknown";
    if (w.contains("labels") && w["labels"].is_object()) {
      std::vector<std::string> kv;
      for (const auto& [k, v] : w["labels"].items()) kv.push_back(k + "=" + v.get<std::string>());
      labels =
          fmt::format("{} (from {})", kv.empty() ? "{}" : fmt::format("{}", fmt::join(kv, ",")),
                      w.value("labelsFrom", ""));
    }
    out += fmt::format("workload: namespace {}, pod {}, labels {}\n", ns.empty() ? "unknown" : ns,
                       name.empty() ? "unknown" : name, labels);
  }
  for (const auto& s : dump.value("services", nlohmann::json::array())) {
    std::vector<std::string> vips;
    for (const auto& ip : s.value("clusterIPs", nlohmann::json::array())) {
      vips.push_back(ip.get<std::string>());
    }
    out += fmt::format(
        "{} port {} ({}{}): {}\n", s.value("service", ""), s.value("port", 0),
        s.value("protocol", "TCP"),
        s.contains("name") ? fmt::format(", named {}", s["name"].get<std::string>()) : "",
        vips.empty() ? std::string("no VIP, pod addresses only")
                     : fmt::format("{}", fmt::join(vips, ", ")));
    const auto& subsets = s["subsets"];
    uint64_t total = 0;
    for (const auto& r : s["route"]) total += r.value("weight", 0u);
    for (const auto& r : s["route"]) {
      std::string name = r.value("subset", "");
      uint64_t weight = r.value("weight", 0u);
      size_t endpoints = 0;
      for (const auto& sub : subsets) {
        if (sub.value("name", "") == name) endpoints = sub["endpoints"].size();
      }
      out += fmt::format("  route {:>7.3f}%  {}{}\n", total == 0 ? 0.0 : 100.0 * weight / total,
                         name.empty() ? "(all endpoints)" : name,
                         endpoints == 0 ? "  [no endpoints: its share goes to the others]" : "");
    }
    for (const auto& r : s.value("httpRoutes", nlohmann::json::array())) {
      out += httpRouteText(r);
    }
    for (const auto& sub : subsets) {
      std::string name = sub.value("name", "");
      out +=
          fmt::format("  subset {} ({}):", name.empty() ? "(all)" : name, sub.value("policy", ""));
      if (sub["endpoints"].empty()) out += " none";
      for (const auto& e : sub["endpoints"]) {
        std::string pod = e.value("pod", "");
        out += fmt::format(" {}{}", e.value("address", ""), pod.empty() ? "" : " (" + pod + ")");
      }
      out += "\n";
    }
  }
  const auto& findings = dump.value("findings", nlohmann::json::array());
  size_t counts[3] = {0, 0, 0};
  for (const auto& f : findings) {
    std::string severity = f.value("severity", "warning");
    out += fmt::format("{}: {}\n", severity, f.value("message", ""));
    ++counts[severity == "error" ? 2 : severity == "warning" ? 1 : 0];
  }
  out += fmt::format("{} error{}, {} warning{}, {} info\n", counts[2], counts[2] == 1 ? "" : "s",
                     counts[1], counts[1] == 1 ? "" : "s", counts[0]);
  return out;
}

int checkExitCode(const std::vector<Finding>& findings, bool strict) {
  int code = 0;
  for (const auto& f : findings) {
    if (f.severity == Severity::kError) return 2;
    if (f.severity == Severity::kWarning && strict) code = 1;
  }
  return code;
}

std::string renderFieldTables() {
  std::string out;
  for (const char* kind :
       {"Service", "Pod", "EndpointSlice", "Endpoints", "VirtualService", "DestinationRule",
        "ServiceEntry", "WorkloadEntry", "ProxyConfig", "Namespace"}) {
    out += fmt::format(
        "\n### {}\n\n| field | support | what Remora does instead |\n|---|---|---|\n", kind);
    for (const auto& r : fieldTable(kind)) {
      const char* support = r.support == Support::kApplied      ? "applied"
                            : r.support == Support::kPartly     ? "partly (see findings)"
                            : r.support == Support::kNotApplied ? "not applied yet"
                                                                : "ignored by design";
      // Rows under a reported parent add nothing to read; keep the ones that say something.
      if (r.support == Support::kNotApplied && r.note.empty()) continue;
      out += fmt::format("| `{}` | {} | {} |\n", r.path, support, r.note);
    }
  }
  return out;
}

int checkMain(int argc, char** argv) {
  CLI::App app{"remora-proxy check: load a config as the proxy would and report on it"};
  std::string path;
  bool json = false;
  bool strict = false;
  bool fields = false;
  app.add_option("-c,--config", path, "the YAML file the proxy would read");
  app.add_flag("--fields", fields,
               "print every field of every kind Remora reads and whether it is applied");
  app.add_flag("--json", json, "print the table and findings as JSON (as /config_dump)");
  app.add_flag("--strict", strict, "exit 1 when there are warnings");
  routing::ProxySettings base;
  routing::WorkloadIdentity& w = base.workload;
  app.add_option("--pod-namespace", w.namespace_name,
                 "the proxy's workload namespace, as remora-proxy's flag")
      ->envname("POD_NAMESPACE");
  app.add_option("--pod-name", w.name, "the proxy's pod name, as remora-proxy's flag")
      ->envname("POD_NAME");
  app.add_option("--pod-labels-file", w.labels_file,
                 "the pod's labels (downward API file), as remora-proxy's flag")
      ->envname("REMORA_POD_LABELS_FILE");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (fields) {
    std::string out = renderFieldTables();
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  if (path.empty()) {
    std::fputs("check: --config FILE is required\n", stderr);
    return 2;
  }
  auto table = loadRouteTableFile(path, 1, base);
  if (!table) {
    if (json) {
      std::fputs((nlohmann::json{{"error", table.error().message}}.dump(
                      2, ' ', false, nlohmann::json::error_handler_t::replace) +
                  "\n")
                     .c_str(),
                 stdout);
    } else {
      std::fprintf(stdout, "error: %s\n", table.error().message.c_str());
    }
    return 2;
  }
  nlohmann::json dump = (*table)->toJson();
  std::string out = json ? dump.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                         : renderCheck(dump);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return checkExitCode((*table)->findings(), strict);
}

}  // namespace remora::config
