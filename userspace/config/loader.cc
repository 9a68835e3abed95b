#include "config/loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <thread>

#include "common/file.h"
#include "config/document_parser.h"
#include "config/documents.h"
#include "config/table_builder.h"
#include "config/yaml_split.h"

namespace remora::config {
namespace {

using Clock = std::chrono::steady_clock;
using ModelResult = Result<std::shared_ptr<const DocumentModel>>;

// Below this many new documents, starting threads costs more than it saves.
constexpr size_t kParallelThreshold = 64;
constexpr unsigned kMaxThreads = 8;

// How the last good versions are keyed: "Kind namespace/name".
std::string objectKey(std::string_view kind, std::string_view ns, std::string_view name) {
  return fmt::format("{} {}/{}", kind, ns, name);
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Parses the documents at `misses` into `results`, on several threads when there are many: a
// first load of a large file is almost all YAML parsing, and documents are independent.
void parseMisses(const std::vector<DocumentText>& texts, const std::vector<Placement>& placements,
                 const std::vector<size_t>& misses,
                 std::vector<std::optional<ModelResult>>& results) {
  unsigned threads =
      std::min({std::max(1u, std::thread::hardware_concurrency()), kMaxThreads,
                static_cast<unsigned>(misses.size() / (kParallelThreshold / 2) + 1)});
  if (misses.size() < kParallelThreshold) threads = 1;
  auto work = [&](unsigned t) {
    for (size_t k = t; k < misses.size(); k += threads) {
      size_t i = misses[k];
      results[i].emplace(parseDocument(texts[i].text, placements[i]));
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
}

}  // namespace

Result<std::shared_ptr<const routing::RouteTable>> Loader::load(
    std::string_view yaml_text, uint64_t generation, const routing::ProxySettings& base) {
  std::lock_guard lock(mutex_);
  Stats stats;
  auto start = Clock::now();
  std::vector<DocumentText> texts = splitDocuments(yaml_text);
  std::vector<Placement> placements(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) placements[i] = {i + 1, texts[i].first_line};
  stats.documents = texts.size();
  stats.split_ms = msSince(start);

  start = Clock::now();
  std::vector<std::optional<ModelResult>> results(texts.size());
  std::vector<size_t> misses;
  // The cache follows the latest text, good or bad: the next edit starts from it. Hits move
  // their node across, so an unchanged document costs a hash and a compare, not a copy.
  Cache next_cache;
  next_cache.reserve(texts.size());
  std::vector<TextView> keys(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    keys[i] = {std::hash<std::string_view>{}(texts[i].key), texts[i].key};
    if (auto hit = cache_.find(keys[i]); hit != cache_.end()) {
      auto node = cache_.extract(hit);
      results[i].emplace(node.mapped());
      next_cache.insert(std::move(node));
    } else if (auto it = next_cache.find(keys[i]); it != next_cache.end()) {
      results[i].emplace(it->second);  // the same text twice in one file
    } else {
      misses.push_back(i);
    }
  }
  stats.parsed = misses.size();
  parseMisses(texts, placements, misses, results);

  // One bad object is rejected alone. A YAML syntax error fails the whole load, and the last
  // good table stays: such a file is usually half written, and its other documents cannot be
  // trusted to be the whole intent.
  std::optional<Error> first_error;
  std::vector<Finding> findings;
  std::map<std::string, size_t> skipped;
  std::vector<PlacedDocument> documents;
  documents.reserve(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    ModelResult& r = *results[i];
    if (!r) {
      if (!first_error) first_error = r.error();
      continue;
    }
    const DocumentModel& model = **r;
    documents.push_back({placements[i], *r});
    for (const auto& kind : model.skipped) ++skipped[kind];
    for (const auto& rejected : model.rejected) {
      std::string key = objectKey(rejected.kind, rejected.namespace_name, rejected.name);
      auto good = rejected.name.empty() ? last_good_.end() : last_good_.find(key);
      Finding f{Severity::kError, rejected.kind,  rejected.namespace_name,
                rejected.name,    rejected.field, placements[i].first_line + rejected.line + 1,
                rejected.message};
      if (good == last_good_.end()) {
        f.text += "; the object is left out";
      } else {
        f.text += "; its last good version keeps serving";
        auto fallback = std::make_shared<DocumentModel>();
        fallback->objects.push_back(good->second.model->objects[good->second.index]);
        documents.push_back({good->second.placement, std::move(fallback)});
      }
      findings.push_back(std::move(f));
    }
  }
  for (size_t i : misses) {
    // A document with a rejected object is parsed again next time: its messages carry lines.
    if (results[i]->ok() && results[i]->value()->rejected.empty()) {
      next_cache.try_emplace(TextKey{keys[i].hash, std::string(keys[i].text)}, results[i]->value());
    }
  }
  cache_ = std::move(next_cache);
  stats.parse_ms = msSince(start);
  if (first_error) {
    stats_ = stats;
    return *first_error;
  }
  for (const auto& [kind, count] : skipped) {
    if (kind.rfind("RequestAuthentication ", 0) == 0) {
      // Not a kind to skip quietly: AuthorizationPolicies may count on it (docs/TLS.md).
      findings.push_back(
          {Severity::kWarning, "", "", "", "", 0,
           fmt::format("{} object{} of kind {} not applied: Remora does no JWT authentication, "
                       "so no request has a request principal or request.auth claims",
                       count, count == 1 ? "" : "s", kind)});
      continue;
    }
    findings.push_back({Severity::kInfo, "", "", "", "", 0,
                        fmt::format("skipped {} object{} of kind {}: the proxy does not read it",
                                    count, count == 1 ? "" : "s", kind)});
  }

  start = Clock::now();
  // Remember the objects of newly parsed documents; unchanged ones are there from before, so a
  // reload costs O(changes). Entries of objects no longer in the file are pruned now and then.
  auto remember = [&](const Placement& placement, const std::shared_ptr<const DocumentModel>& m) {
    for (size_t k = 0; k < m->objects.size(); ++k) {
      const Object& o = m->objects[k];
      if (o.kind == Kind::kPod) continue;  // many, and a bad Pod just is not an endpoint
      last_good_[objectKey(toString(o.kind), o.namespace_name, o.name)] = {placement, m, k};
    }
  };
  size_t objects = 0;
  for (const auto& doc : documents) objects += doc.model->objects.size();
  if (last_good_.size() > 2 * objects + 64) {
    last_good_.clear();
    for (const auto& doc : documents) remember(doc.placement, doc.model);
  } else {
    for (size_t i : misses) {
      if (results[i]->ok()) remember(placements[i], results[i]->value());
    }
  }
  auto table = buildRouteTable(documents, generation, base, std::move(findings), resolve_);
  stats.build_ms = msSince(start);
  stats_ = stats;
  return table;
}

void Loader::setResolver(HostResolver resolve) {
  std::lock_guard lock(mutex_);
  resolve_ = std::move(resolve);
}

Result<std::shared_ptr<const routing::RouteTable>> Loader::loadFile(
    const std::string& path, uint64_t generation, const routing::ProxySettings& base) {
  auto text = readFile(path);
  if (!text) return text.error();
  auto table = load(*text, generation, base);
  if (!table) return makeError(path + ": " + table.error().message);
  return table;
}

Loader::Stats Loader::lastStats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

namespace {

Loader& sharedLoader() {
  static Loader loader;
  return loader;
}

}  // namespace

void setHostResolver(HostResolver resolve) { sharedLoader().setResolver(std::move(resolve)); }

Result<std::shared_ptr<const routing::RouteTable>> loadRouteTable(
    std::string_view yaml_text, uint64_t generation, const routing::ProxySettings& base) {
  return sharedLoader().load(yaml_text, generation, base);
}

Result<std::shared_ptr<const routing::RouteTable>> loadRouteTableFile(
    const std::string& path, uint64_t generation, const routing::ProxySettings& base) {
  return sharedLoader().loadFile(path, generation, base);
}

}  // namespace remora::config
