#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.h"
#include "config/table_builder.h"
#include "routing/route_table.h"

namespace remora::config {

struct DocumentModel;

// Loads route tables and remembers the parsed form of each document of the last load, so a
// reload re-parses only the documents whose text changed (YAML parsing is most of the cost of a
// large file) and rebuilds the table from the rest. Thread-safe: loads are serialised.
class Loader {
 public:
  // Timings of the last load, for the reload benchmark and the admin endpoint.
  struct Stats {
    size_t documents = 0;  // in the file
    size_t parsed = 0;     // not found in the cache
    double split_ms = 0;
    double parse_ms = 0;
    double build_ms = 0;
  };

  Result<std::shared_ptr<const routing::RouteTable>> load(std::string_view yaml_text,
                                                          uint64_t generation,
                                                          const routing::ProxySettings& base = {});
  Result<std::shared_ptr<const routing::RouteTable>> loadFile(
      const std::string& path, uint64_t generation, const routing::ProxySettings& base = {});
  Stats lastStats() const;
  // Resolves DNS names of ServiceEntries on later loads (none by default: they are reported).
  void setResolver(HostResolver resolve);

 private:
  // Documents by text. The hash is computed once per document and kept in the key, so moving
  // an entry into the next load's cache does not hash the text again.
  struct TextKey {
    size_t hash = 0;
    std::string text;
  };
  struct TextView {
    size_t hash = 0;
    std::string_view text;
  };
  struct TextHash {
    using is_transparent = void;
    size_t operator()(const TextKey& k) const noexcept { return k.hash; }
    size_t operator()(const TextView& k) const noexcept { return k.hash; }
  };
  struct TextEqual {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const noexcept {
      return a.hash == b.hash && std::string_view(a.text) == std::string_view(b.text);
    }
  };
  using Cache =
      std::unordered_map<TextKey, std::shared_ptr<const DocumentModel>, TextHash, TextEqual>;

  // The last version of each object that loaded, by "Kind namespace/name": a later version
  // that fails validation is replaced by it, so one bad edit never takes a rule away.
  struct LastGood {
    Placement placement;
    std::shared_ptr<const DocumentModel> model;
    size_t index = 0;
  };

  mutable std::mutex mutex_;
  Cache cache_;
  Stats stats_;
  std::unordered_map<std::string, LastGood> last_good_;
  HostResolver resolve_;
};

// Builds a RouteTable from multi-document YAML (or a `kind: List`) of Service, Pod,
// EndpointSlice, VirtualService, DestinationRule and the optional remora.dev ProxyConfig.
// Errors name the document (index and kind/name), the field path and the line. `base` supplies
// defaults for settings the ProxyConfig does not set (flags are applied by the caller after).
// Uses one process-wide Loader, so reloading the same large file stays cheap.
Result<std::shared_ptr<const routing::RouteTable>> loadRouteTable(
    std::string_view yaml_text, uint64_t generation, const routing::ProxySettings& base = {});

// Sets the shared Loader's DNS resolver (see Loader::setResolver).
void setHostResolver(HostResolver resolve);

// Reads the file (following symlinks, as a ConfigMap volume's ..data swap needs) and loads it.
Result<std::shared_ptr<const routing::RouteTable>> loadRouteTableFile(
    const std::string& path, uint64_t generation, const routing::ProxySettings& base = {});

}  // namespace remora::config
