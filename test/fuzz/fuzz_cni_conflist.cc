// libFuzzer target: the node installer's conflist editor (remora::cni::parseNetworkConfig,
// upsertRemoraEntry, removeRemoraEntries, renderLike), the steps install-node and
// uninstall-node apply to the primary network config.
//
// Input: the first byte picks the file name (.conflist, .conf or .json); the rest is the file.
// Checked: after the upsert the document has exactly one remora-cni entry and its rendering
// parses back as a conflist with that entry; after the removal it has none.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "node/conflist.h"

namespace rc = remora::cni;
using json = nlohmann::ordered_json;

namespace {

size_t remoraEntries(const json& doc) {
  size_t n = 0;
  for (const auto& plugin : doc["plugins"]) {
    if (plugin.is_object() && plugin.contains("type") && plugin["type"] == rc::kPluginType) ++n;
  }
  return n;
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const char* const kNames[] = {"10-net.conflist", "10-net.conf", "10-net.json"};
  std::string name = kNames[data[0] % 3];
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)rc::isNetworkConfigName(name);

  auto parsed = rc::parseNetworkConfig(name, text);
  if (!parsed) return 0;
  json doc = parsed->doc;

  static const json kEntry = json::parse(
      R"({"type": "remora-cni", "exclude-outbound-cidrs": ["10.0.0.0/8"], "logLevel": "warn"})");
  rc::upsertRemoraEntry(doc, kEntry);
  if (!rc::hasRemoraEntry(doc) || remoraEntries(doc) != 1) std::abort();
  // A second upsert of the same entry changes nothing.
  if (rc::upsertRemoraEntry(doc, kEntry)) std::abort();

  std::string rendered = rc::renderLike(doc, text);
  auto reread = rc::parseNetworkConfig(rc::conflistNameFor(name), rendered);
  if (!reread || remoraEntries(reread->doc) != 1) std::abort();

  if (rc::removeRemoraEntries(doc) != 1 || rc::hasRemoraEntry(doc)) std::abort();
  (void)rc::renderLike(doc, text);
  return 0;
}
