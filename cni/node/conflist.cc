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

// ---- byte spans of a validated JSON text ----------------------------------------------------

struct Span {
  size_t begin = 0;
  size_t end = 0;  // one past the last byte
};

// An object or array: where it opens and closes, and each member ("key": value) or element.
struct Container {
  size_t open = 0;
  size_t close = 0;
  std::vector<Span> items;
  std::vector<Span> keys;  // objects only: each member's key, quotes included
};

size_t skipSpace(std::string_view text, size_t pos) {
  while (pos < text.size() &&
         (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) {
    ++pos;
  }
  return pos;
}

// `pos` is at the opening quote; returns the position after the closing one.
size_t skipString(std::string_view text, size_t pos) {
  for (++pos; pos < text.size(); ++pos) {
    if (text[pos] == '\\') {
      ++pos;
    } else if (text[pos] == '"') {
      return pos + 1;
    }
  }
  return text.size();
}

// Returns the position after the value starting at `pos`. Iterative, so depth costs no stack.
size_t skipValue(std::string_view text, size_t pos) {
  if (pos >= text.size()) return pos;
  if (text[pos] == '"') return skipString(text, pos);
  if (text[pos] != '{' && text[pos] != '[') {
    while (pos < text.size() &&
           std::string_view(",]} \t\r\n").find(text[pos]) == std::string_view::npos) {
      ++pos;
    }
    return pos;
  }
  size_t depth = 0;
  while (pos < text.size()) {
    char c = text[pos];
    if (c == '"') {
      pos = skipString(text, pos);
      continue;
    }
    if (c == '{' || c == '[') ++depth;
    if ((c == '}' || c == ']') && --depth == 0) return pos + 1;
    ++pos;
  }
  return pos;
}

Container scanContainer(std::string_view text, size_t open) {
  Container c;
  c.open = open;
  bool object = text[open] == '{';
  size_t pos = skipSpace(text, open + 1);
  while (pos < text.size() && text[pos] != '}' && text[pos] != ']') {
    size_t begin = pos;
    if (object) {
      size_t key_end = skipString(text, pos);
      c.keys.push_back({pos, key_end});
      pos = skipSpace(text, key_end) + 1;  // the ':'
      pos = skipSpace(text, pos);
    }
    pos = skipValue(text, pos);
    c.items.push_back({begin, pos});
    pos = skipSpace(text, pos);
    if (pos < text.size() && text[pos] == ',') pos = skipSpace(text, pos + 1);
  }
  c.close = pos;
  return c;
}

std::string_view slice(std::string_view text, Span s) {
  return text.substr(s.begin, s.end - s.begin);
}

// The value part of an object member span ("key": value).
Span valueOf(std::string_view text, const Container& c, size_t i) {
  size_t pos = skipSpace(text, c.keys[i].end) + 1;
  return {skipSpace(text, pos), c.items[i].end};
}

std::string keyOf(std::string_view text, const Container& c, size_t i) {
  auto key = json::parse(slice(text, c.keys[i]), nullptr, false);
  return key.is_string() ? key.get<std::string>() : std::string();
}

// The last member named `key` (the one a parser keeps), or -1.
int findMember(std::string_view text, const Container& c, std::string_view key) {
  int found = -1;
  for (size_t i = 0; i < c.keys.size(); ++i) {
    if (keyOf(text, c, i) == key) found = static_cast<int>(i);
  }
  return found;
}

// The container's text with `items` as its members or elements, laid out like the original:
// the whitespace after the opening bracket, between items and before the closing one.
std::string renderContainer(std::string_view text, const Container& c,
                            const std::vector<std::string>& items) {
  char open = text[c.open];
  char close = text[c.close];
  if (items.empty()) return {open, close};
  std::string prefix;
  std::string suffix;
  std::string sep = ",";
  if (!c.items.empty()) {
    prefix = std::string(text.substr(c.open + 1, c.items.front().begin - c.open - 1));
    suffix = std::string(text.substr(c.items.back().end, c.close - c.items.back().end));
    if (c.items.size() >= 2) {
      sep = std::string(text.substr(c.items[0].end, c.items[1].begin - c.items[0].end));
    } else {
      sep += prefix;
    }
  }
  std::string out(1, open);
  out += prefix;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  out += suffix;
  out += close;
  return out;
}

// The indent unit of a text: the leading whitespace of its first indented line ("" if none).
std::string indentUnit(std::string_view text) {
  size_t nl = text.find('\n');
  while (nl != std::string_view::npos && nl + 1 < text.size()) {
    size_t start = nl + 1;
    size_t end = text.find_first_not_of(" \t", start);
    if (end != std::string_view::npos && end > start && text[end] != '\n') {
      return std::string(text.substr(start, end - start));
    }
    nl = text.find('\n', start);
  }
  return {};
}

// Indents every line but the first by `by`.
std::string indentLines(std::string_view text, std::string_view by) {
  std::string out;
  for (char ch : text) {
    out += ch;
    if (ch == '\n') out += by;
  }
  return out;
}

// `entry` rendered to sit as an element whose line starts with `base` indentation; compact when
// the surrounding text is on one line.
std::string renderEntry(const json& entry, std::string_view file_text, bool multiline,
                        std::string_view base) {
  if (!multiline) return entry.dump();
  std::string unit = indentUnit(file_text);
  if (unit.empty()) unit = "  ";
  std::string text = entry.dump(static_cast<int>(unit.size()), unit[0]);
  return indentLines(text, base);
}

// The text after the last newline of `s` (the indentation of the next line), and whether any.
std::pair<bool, std::string> lineIndent(std::string_view s) {
  size_t nl = s.rfind('\n');
  if (nl == std::string_view::npos) return {false, {}};
  return {true, std::string(s.substr(nl + 1))};
}

size_t documentStart(std::string_view text) {
  size_t pos = text.starts_with("\xEF\xBB\xBF") ? 3 : 0;
  return skipSpace(text, pos);
}

// Replaces the "plugins" array of a conflist text with `entry` placed (or with no remora-cni
// entry when `entry` is null).
Result<std::string> editPlugins(std::string_view text, const json& doc, const json* entry) {
  Container root = scanContainer(text, documentStart(text));
  int member = findMember(text, root, "plugins");
  if (member < 0) return makeError("no \"plugins\" member");
  Span value = valueOf(text, root, static_cast<size_t>(member));
  Container plugins = scanContainer(text, value.begin);
  const json& parsed = doc["plugins"];
  if (plugins.items.size() != parsed.size()) return makeError("the plugins list did not scan");
  std::string before(text.substr(
      plugins.open + 1, plugins.items.empty() ? plugins.close - plugins.open - 1
                                              : plugins.items[0].begin - plugins.open - 1));
  auto [multiline, base] = lineIndent(before);
  std::vector<std::string> items;
  bool placed = false;
  for (size_t i = 0; i < plugins.items.size(); ++i) {
    if (!isRemora(parsed[i])) {
      items.emplace_back(slice(text, plugins.items[i]));
    } else if (entry != nullptr && !placed) {
      items.push_back(renderEntry(*entry, text, multiline, base));
      placed = true;
    }
  }
  if (entry != nullptr && !placed) items.push_back(renderEntry(*entry, text, multiline, base));
  std::string out(text.substr(0, plugins.open));
  out += renderContainer(text, plugins, items);
  out += text.substr(plugins.close + 1);
  return out;
}

// A single plugin config's text wrapped into a conflist holding it and `entry`.
std::string wrapText(std::string_view text, const json& entry) {
  Container root = scanContainer(text, documentStart(text));
  std::vector<std::string> members;
  std::string list_keys;
  bool multiline = lineIndent(text.substr(root.open, root.close - root.open)).first;
  std::string unit = multiline ? indentUnit(text) : "";
  if (multiline && unit.empty()) unit = "  ";
  std::string nl = multiline ? "\n" : "";
  std::string colon = multiline ? ": " : ":";
  for (const char* key : {"cniVersion", "name"}) {
    int i = findMember(text, root, key);
    if (i < 0) continue;
    list_keys += nl + unit + fmt::format("\"{}\"{}", key, colon) +
                 std::string(slice(text, valueOf(text, root, static_cast<size_t>(i)))) + ",";
  }
  for (size_t i = 0; i < root.items.size(); ++i) {
    std::string key = keyOf(text, root, i);
    if (key != "cniVersion" && key != "name") members.emplace_back(slice(text, root.items[i]));
  }
  std::string plugin = renderContainer(text, root, members);
  std::string inner = unit + unit;
  std::string out = "{" + list_keys + nl + unit + "\"plugins\"" + colon + "[" + nl + inner +
                    indentLines(plugin, inner) + "," + nl + inner +
                    renderEntry(entry, text, multiline, inner) + nl + unit + "]" + nl + "}";
  if (text.ends_with('\n')) out += '\n';
  return out;
}

Result<std::string> checkedEdit(std::string_view file_name, const Result<std::string>& edited,
                                const json& expected) {
  if (!edited) {
    return makeError(
        fmt::format("{}: cannot edit the text: {}", file_name, edited.error().message));
  }
  auto back = parseJsonText(*edited);
  if (!back || *back != expected) {
    return makeError(
        fmt::format("{}: editing the text in place would change more than "
                    "remora-cni's entry; nothing written",
                    file_name));
  }
  return *edited;
}

}  // namespace

Result<std::string> chainIntoText(std::string_view file_name, std::string_view text,
                                  const json& entry) {
  auto parsed = parseNetworkConfig(file_name, text);
  if (!parsed) return parsed.error();
  json expected = parsed->doc;
  upsertRemoraEntry(expected, entry);
  if (parsed->from_single_conf) {
    return checkedEdit(file_name, wrapText(text, entry), expected);
  }
  return checkedEdit(file_name, editPlugins(text, parsed->doc, &entry), expected);
}

Result<std::string> unchainFromText(std::string_view file_name, std::string_view text) {
  auto parsed = parseNetworkConfig(file_name, text);
  if (!parsed) return parsed.error();
  if (!hasRemoraEntry(parsed->doc)) return std::string(text);
  if (parsed->from_single_conf) {
    return makeError(
        fmt::format("{}: a single network config cannot hold a remora-cni entry", file_name));
  }
  json expected = parsed->doc;
  removeRemoraEntries(expected);
  return checkedEdit(file_name, editPlugins(text, parsed->doc, nullptr), expected);
}

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
    if (doc["plugins"].empty()) {
      return makeError(
          fmt::format("{}: the \"plugins\" list is empty: there is no interface plugin to chain "
                      "remora-cni after",
                      file_name));
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
