#include "config/yaml_split.h"

namespace remora::config {
namespace {

bool isMarker(std::string_view line, std::string_view marker) {
  if (line.substr(0, 3) != marker) return false;
  if (line.size() == 3) return true;
  char c = line[3];
  return c == ' ' || c == '\t' || c == '\r';
}

// Blank, comment and directive lines do not make a document on their own.
bool isFiller(std::string_view line) {
  size_t i = line.find_first_not_of(" \t\r");
  if (i == std::string_view::npos) return true;
  if (line[i] == '#') return true;
  return i == 0 && line[0] == '%';
}

// Cuts the trailing run of blank and column-0 comment lines from its first comment on. Blank
// lines before that comment stay: they may be content of a `|+` block scalar, which only a
// less-indented line such as the comment ends.
std::string_view withoutTrailingComments(std::string_view text) {
  size_t cut = text.size();
  size_t end = text.size();
  while (end > 0) {
    size_t line_end = text[end - 1] == '\n' ? end - 1 : end;
    size_t start = line_end == 0 ? 0 : text.rfind('\n', line_end - 1);
    start = start == std::string_view::npos || line_end == 0 ? 0 : start + 1;
    std::string_view line = text.substr(start, line_end - start);
    if (!line.empty() && line.front() == '#') {
      cut = start;
    } else if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      break;
    }
    end = start;
  }
  return text.substr(0, cut);
}

}  // namespace

std::vector<DocumentText> splitDocuments(std::string_view yaml) {
  std::vector<DocumentText> out;
  size_t start = 0;  // of the current document
  int start_line = 0;
  bool has_content = false;
  auto flush = [&](size_t end) {
    if (!has_content) return;
    std::string_view text = yaml.substr(start, end - start);
    out.push_back({text, withoutTrailingComments(text), start_line});
  };

  size_t pos = 0;
  int line_no = 0;
  while (pos < yaml.size()) {
    size_t eol = yaml.find('\n', pos);
    size_t next = eol == std::string_view::npos ? yaml.size() : eol + 1;
    std::string_view line = yaml.substr(pos, next - pos);
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);

    if (isMarker(line, "---")) {
      if (has_content) {
        flush(pos);
        start = pos;
        start_line = line_no;
      }
      // The marker starts a document even when nothing follows it.
      has_content = true;
    } else if (isMarker(line, "...")) {
      flush(next);
      start = next;
      start_line = line_no + 1;
      has_content = false;
    } else if (!has_content && !isFiller(line)) {
      has_content = true;
    }
    pos = next;
    ++line_no;
  }
  flush(yaml.size());
  return out;
}

}  // namespace remora::config
