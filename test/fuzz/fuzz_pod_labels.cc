// libFuzzer target: the downward API labels file remora-proxy reads for its own workload
// (remora::routing::parseDownwardApiLabels, `--pod-labels-file`). It checks that whatever it
// accepts is a label list the route matcher can use: sorted by key, each key once and non-empty
// without blanks or quotes; and that an error names the file and a line.
//
// Input: the file's bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "routing/workload_identity.h"

namespace rr = remora::routing;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): libFuzzer's entry point
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto labels = rr::parseDownwardApiLabels(text, "labels");
  if (!labels) {
    check(labels.error().message.rfind("labels line ", 0) == 0);
    return 0;
  }
  for (size_t i = 0; i < labels->size(); ++i) {
    const auto& key = (*labels)[i].first;
    check(!key.empty() && key.find_first_of(" \t\"") == std::string_view::npos);
    if (i > 0) check((*labels)[i - 1].first < key);
  }
  (void)rr::labelsText(*labels);
  return 0;
}
