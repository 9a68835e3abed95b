#pragma once

// Character classes of RFC 9110 5.6 and 9112, shared by the parser and the serializer.

#include <array>
#include <cstdint>
#include <string_view>

namespace remora::http::detail {

// ALPHA, DIGIT and the bytes of `extra`.
constexpr std::array<bool, 256> alnumAnd(std::string_view extra) {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : extra) t[static_cast<uint8_t>(c)] = true;
  return t;
}
inline constexpr std::array<bool, 256> kTchar = alnumAnd("!#$%&'*+-.^_`|~");
// Host: reg-name, IPv4 or IP-literal, and a port.
inline constexpr std::array<bool, 256> kAuthorityChar = alnumAnd("-._~!$&'()*+,;=:[]%");

inline bool isTchar(char c) { return kTchar[static_cast<uint8_t>(c)]; }
inline bool isOws(char c) { return c == ' ' || c == '\t'; }
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

inline bool isToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!isTchar(c)) return false;
  }
  return true;
}

// A field value a serializer may write: no CR, LF or NUL (header injection from config).
inline bool isSafeValue(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

inline std::string_view trimOws(std::string_view s) {
  while (!s.empty() && isOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && isOws(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace remora::http::detail
