#pragma once

#include <string_view>
#include <vector>

namespace remora::config {

struct DocumentText {
  std::string_view text;
  // `text` without its trailing blank and column-0 comment lines: the cache key, so editing a
  // comment that introduces the next document does not make this one look changed.
  std::string_view key;
  int first_line = 0;  // 0-based line in the whole input
};

// Cuts a multi-document YAML stream at its `---` / `...` markers, so documents can be parsed
// (and cached) one by one. A marker at column 0 always ends a document in YAML, even inside a
// block or quoted scalar, so this never cuts a document in two. Comments and directives before
// a `---` stay with the document that follows; documents with no content at all are dropped.
std::vector<DocumentText> splitDocuments(std::string_view yaml);

}  // namespace remora::config
