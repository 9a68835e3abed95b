#include "node/conflist.h"

#include <fmt/format.h>

#include <algorithm>

#include "plugin/config.h"

namespace remora::cni {
namespace {

using json = nlohmann::ordered_json;

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool isRemora(const json& plugin) {
  return plugin.is_object() && plugin.contains("type") && plugin["type"].is_string() &&
         plugin["type"].get<std::string>() == kPluginType;
}

}  // namespace

bool isNetworkConfigName(std::string_view name) {
  if (name.empty() || name[0] == '.') return false;
  return endsWith(name, ".conf") || endsWith(name, ".conflist") || endsWith(name, ".json");
}

std::vector<std::string> networkConfigOrder(std::vector<std::string> names) {
  std::erase_if(names, [](const std::string& n) { return !isNetworkConfigName(n); });
  std::sort(names.begin(), names.end());
  return names;
}

std::string conflistNameFor(std::string_view file_name) {
  if (endsWith(file_name, ".conflist")) return std::string(file_name);
  size_t dot = file_name.rfind('.');
  return std::string(file_name.substr(0, dot)) + ".conflist";
}

Result<ConfList> parseNetworkConfig(std::string_view file_name, std::string_view text) {
  auto parsed = parseJsonText(text);
  if (!parsed) return makeError(fmt::format("{}: {}", file_name, parsed.error().message));
  json doc = std::move(parsed).value();
  if (!doc.is_object()) return makeError(fmt::format("{}: not a JSON object", file_name));
  ConfList out;
  if (endsWith(file_name, ".conflist")) {
    if (!doc.contains("plugins") || !doc["plugins"].is_array()) {
      return makeError(fmt::format("{}: a .conflist needs a \"plugins\" list", file_name));
    }
    out.doc = std::move(doc);
    return out;
  }
  if (!doc.contains("type") || !doc["type"].is_string()) {
    return makeError(fmt::format("{}: a single network config needs a \"type\"", file_name));
  }
  // Wrap: the list keeps the network-level keys, the plugin keeps the rest.
  json plugin = doc;
  json list = json::object();
  for (const char* key : {"cniVersion", "name"}) {
    if (plugin.contains(key)) {
      list[key] = plugin[key];
      plugin.erase(key);
    }
  }
  list["plugins"] = json::array({plugin});
  out.doc = std::move(list);
  out.from_single_conf = true;
  return out;
}

bool hasRemoraEntry(const json& conflist) {
  if (!conflist.contains("plugins") || !conflist["plugins"].is_array()) return false;
  return std::any_of(conflist["plugins"].begin(), conflist["plugins"].end(), isRemora);
}

bool upsertRemoraEntry(json& conflist, const json& entry) {
  json& plugins = conflist["plugins"];
  json updated = json::array();
  bool placed = false;
  for (const auto& plugin : plugins) {
    if (!isRemora(plugin)) {
      updated.push_back(plugin);
    } else if (!placed) {
      updated.push_back(entry);
      placed = true;
    }
  }
  if (!placed) updated.push_back(entry);
  if (updated == plugins) return false;
  plugins = std::move(updated);
  return true;
}

size_t removeRemoraEntries(json& conflist) {
  if (!conflist.contains("plugins") || !conflist["plugins"].is_array()) return 0;
  json& plugins = conflist["plugins"];
  size_t before = plugins.size();
  json kept = json::array();
  for (const auto& plugin : plugins) {
    if (!isRemora(plugin)) kept.push_back(plugin);
  }
  plugins = std::move(kept);
  return before - plugins.size();
}

std::string renderLike(const json& doc, std::string_view original_text) {
  // The indent unit is the leading whitespace of the first indented line.
  int indent = -1;
  char indent_char = ' ';
  size_t nl = original_text.find('\n');
  while (nl != std::string_view::npos && nl + 1 < original_text.size()) {
    size_t start = nl + 1;
    size_t end = original_text.find_first_not_of(" \t", start);
    if (end != std::string_view::npos && end > start && original_text[end] != '\n') {
      indent = static_cast<int>(end - start);
      indent_char = original_text[start];
      break;
    }
    nl = original_text.find('\n', start);
  }
  if (indent < 0) {
    // Multi-line without indentation still gets one key per line.
    size_t first_nl = original_text.find('\n');
    if (first_nl != std::string_view::npos && first_nl + 1 < original_text.size()) indent = 0;
  }
  std::string out = doc.dump(indent, indent_char);
  bool final_newline = !original_text.empty() && original_text.back() == '\n';
  if (final_newline) out += '\n';
  return out;
}

}  // namespace remora::cni
