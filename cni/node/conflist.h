#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace remora::cni {

// The plugin's type in a conflist, which is also its file name in the CNI bin dir.
inline constexpr std::string_view kPluginType = "remora-cni";

// Whether libcni (and so the kubelet's runtime) loads a file of this name from a conf dir:
// .conf, .conflist or .json, not hidden.
bool isNetworkConfigName(std::string_view name);

// The network config names among `names`, in the order the runtime tries them (byte-wise
// lexical); the first is the primary network.
std::vector<std::string> networkConfigOrder(std::vector<std::string> names);

// A network config file's content in conflist form.
// nlohmann::json's move constructor is noexcept, but clang-tidy cannot see that through its
// invariant assertions and flags the implicit move constructor here.
struct ConfList {                 // NOLINT(bugprone-exception-escape)
  nlohmann::ordered_json doc;     // {"cniVersion", "name", "plugins": [...], ...}
  bool from_single_conf = false;  // the file held one plugin config (.conf/.json) and was wrapped
};

// Parses a config file (within parseJsonText's size and depth limits). A .conflist must hold a
// non-empty "plugins" list (an empty one has no interface plugin for remora-cni to follow); a .conf
// or .json holds one plugin config (with "type") and is wrapped into a conflist of one plugin.
// Errors name the file and what is wrong.
Result<ConfList> parseNetworkConfig(std::string_view file_name, std::string_view text);

// Whether any entry of `conflist`'s plugins has type remora-cni.
bool hasRemoraEntry(const nlohmann::ordered_json& conflist);

// Makes `entry` the one remora-cni entry in the plugins: the first existing one is replaced
// in place, any others are dropped, and with none it is appended. Returns whether the document
// changed.
bool upsertRemoraEntry(nlohmann::ordered_json& conflist, const nlohmann::ordered_json& entry);

// Drops every remora-cni entry; returns how many there were.
size_t removeRemoraEntries(nlohmann::ordered_json& conflist);

// Text edits that change only remora-cni's entry: every byte of every other entry and key
// (number spellings such as 1e2 or 12345678901234567890123 included) stays as it was, and only
// the whitespace between plugins entries is laid out anew. `text` is a file parseNetworkConfig
// accepts under `file_name`.
//   chainIntoText    the file's text with `entry` as its one remora-cni entry: the first one
//                    replaced, any others dropped, else appended; a single .conf/.json comes back
//                    wrapped as a conflist (to be written as conflistNameFor(file_name)).
//   unchainFromText  the file's text without any remora-cni entry.
// Each result is parsed back and compared with the same edit done on the parsed document; a
// difference is an error, never a file written.
Result<std::string> chainIntoText(std::string_view file_name, std::string_view text,
                                  const nlohmann::ordered_json& entry);
Result<std::string> unchainFromText(std::string_view file_name, std::string_view text);

// Serializes `doc` in the style of `original_text`: the same indent unit (spaces or tabs, or
// none for a one-line file) and a final newline only if the original had one.
std::string renderLike(const nlohmann::ordered_json& doc, std::string_view original_text);

// The name a wrapped single config is written under: "10-x.conf" -> "10-x.conflist".
std::string conflistNameFor(std::string_view file_name);

}  // namespace remora::cni
