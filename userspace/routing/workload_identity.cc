#include "routing/workload_identity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "common/file.h"
#include "common/hex.h"

namespace remora::routing {
namespace {

void appendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A Go double-quoted string literal, the whole of `text` (strconv.Unquote's rules): the
// escapes \a \b \f \n \r \t \v \\ \" , \NNN (octal, at most 255), \xHH, \uHHHH and
// \UHHHHHHHH (a Unicode code point, not a surrogate). The error says what is wrong.
Result<std::string> unquote(std::string_view text) {
  if (text.size() < 2 || text.front() != '"' || text.back() != '"') {
    return makeError("the value must be one double-quoted string, as the kubelet writes it");
  }
  std::string_view body = text.substr(1, text.size() - 2);
  std::string out;
  out.reserve(body.size());
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '"') return makeError("an unescaped '\"' inside the value");
    if (c != '\\') {
      out.push_back(c);
      continue;
    }
    if (i + 1 >= body.size()) return makeError("the value ends in a lone '\\'");
    const char e = body[++i];
    switch (e) {
      case 'a':
        out.push_back('\a');
        continue;
      case 'b':
        out.push_back('\b');
        continue;
      case 'f':
        out.push_back('\f');
        continue;
      case 'n':
        out.push_back('\n');
        continue;
      case 'r':
        out.push_back('\r');
        continue;
      case 't':
        out.push_back('\t');
        continue;
      case 'v':
        out.push_back('\v');
        continue;
      case '\\':
      case '"':
        out.push_back(e);
        continue;
      default:
        break;
    }
    if (e >= '0' && e <= '7') {
      if (i + 2 >= body.size()) return makeError("an octal escape needs three digits");
      uint32_t v = 0;
      for (size_t k = 0; k < 3; ++k) {
        const char d = body[i + k];
        if (d < '0' || d > '7') return makeError("an octal escape needs three digits 0-7");
        v = v * 8 + static_cast<uint32_t>(d - '0');
      }
      if (v > 255)
        return makeError(fmt::format("octal escape \\{} is over 255", body.substr(i, 3)));
      out.push_back(static_cast<char>(v));
      i += 2;
      continue;
    }
    const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (digits == 0) return makeError(fmt::format("unknown escape '\\{}'", e));
    if (i + digits >= body.size()) {
      return makeError(fmt::format("escape \\{} needs {} hex digits", e, digits));
    }
    uint32_t v = 0;
    for (size_t k = 1; k <= digits; ++k) {
      const int h = hexDigitValue(body[i + k]);
      if (h < 0) return makeError(fmt::format("escape \\{} needs {} hex digits", e, digits));
      v = v * 16 + static_cast<uint32_t>(h);
    }
    i += digits;
    if (e == 'x') {
      out.push_back(static_cast<char>(v));
      continue;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
      return makeError(fmt::format("escape \\{}{:0{}X} is not a Unicode code point", e, v, digits));
    }
    appendUtf8(out, v);
  }
  return out;
}

}  // namespace

Result<LabelList> parseDownwardApiLabels(std::string_view text, std::string_view path) {
  LabelList labels;
  size_t number = 0;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    auto fail = [&](std::string_view what) {
      return makeError(fmt::format("{} line {}: {} (in '{}')", path, number, what, line));
    };
    const size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail("expected key=\"value\"");
    const std::string_view key = line.substr(0, eq);
    if (key.empty()) return fail("the label key is empty");
    if (key.find_first_of(" \t\"") != std::string_view::npos) {
      return fail("a label key holds no blank or quote");
    }
    auto value = unquote(line.substr(eq + 1));
    if (!value) return fail(value.error().message);
    const bool seen =
        std::any_of(labels.begin(), labels.end(), [&](const auto& l) { return l.first == key; });
    if (seen) return fail(fmt::format("label '{}' is given twice", key));
    labels.emplace_back(std::string(key), std::move(*value));
  }
  std::sort(labels.begin(), labels.end());
  return labels;
}

Result<LabelList> readLabelsFile(const std::string& path) {
  // Labels are at most a few KiB; a huge file is not a labels file.
  auto text = readFile(path, size_t{1} << 20);
  if (!text) return text.error();
  return parseDownwardApiLabels(*text, path);
}

std::string labelsText(const LabelList& labels) {
  std::string out;
  for (const auto& [k, v] : labels) out += fmt::format("{}{}={}", out.empty() ? "" : ",", k, v);
  return out.empty() ? "{}" : out;
}

}  // namespace remora::routing
