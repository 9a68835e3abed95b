#include "intercept/rule_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace remora::intercept {
namespace {

// Options whose single value may itself look like an option ("--comment -x"), so they always
// take exactly one word.
bool takesOneFreeValue(std::string_view option) {
  return option == "--comment" || option == "--log-prefix" || option == "--nflog-prefix";
}

bool looksLikeOption(std::string_view word) {
  return word == "!" || (word.size() > 1 && word.front() == '-');
}

}  // namespace

const std::string& RuleOption::value() const {
  static const std::string kEmpty;
  return values.empty() ? kEmpty : values.front();
}

const RuleOption* RuleModule::option(std::string_view wanted) const {
  for (const auto& o : options) {
    if (o.name == wanted) return &o;
  }
  return nullptr;
}

const RuleModule* RuleSpec::module(std::string_view wanted) const {
  for (const auto& m : modules) {
    if (m.name == wanted) return &m;
  }
  return nullptr;
}

const RuleOption* RuleSpec::targetOption(std::string_view wanted) const {
  for (const auto& o : target_options) {
    if (o.name == wanted) return &o;
  }
  return nullptr;
}

Result<RuleSpec> parseRuleSpec(const std::vector<std::string>& args) {
  RuleSpec spec;
  enum class Context { kNone, kModule, kTarget } context = Context::kNone;
  bool negate = false;
  size_t i = 0;
  auto value = [&](std::string_view flag) -> Result<std::string> {
    if (i + 1 >= args.size()) return makeError(fmt::format("'{}' needs a value", flag));
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "!") {
      if (negate) return makeError("two '!' in a row");
      negate = true;
      continue;
    }
    std::optional<RuleCondition>* condition = nullptr;
    if (a == "-s" || a == "--source" || a == "--src") condition = &spec.source;
    if (a == "-d" || a == "--destination" || a == "--dst") condition = &spec.destination;
    if (a == "-i" || a == "--in-interface") condition = &spec.in_interface;
    if (a == "-o" || a == "--out-interface") condition = &spec.out_interface;
    if (a == "-p" || a == "--protocol") condition = &spec.protocol;
    if (condition != nullptr) {
      auto v = value(a);
      if (!v) return v.error();
      *condition = RuleCondition{std::move(*v), negate};
      negate = false;
      continue;
    }
    if (a == "-f" || a == "--fragment") {
      spec.fragment = !negate;
      negate = false;
      continue;
    }
    if (negate &&
        (a == "-m" || a == "--match" || a == "-j" || a == "--jump" || a == "-g" || a == "--goto")) {
      return makeError(fmt::format("'!' before '{}'", a));
    }
    if (a == "-m" || a == "--match") {
      auto v = value(a);
      if (!v) return v.error();
      spec.modules.push_back(RuleModule{std::move(*v), {}});
      context = Context::kModule;
      continue;
    }
    if (a == "-j" || a == "--jump" || a == "-g" || a == "--goto") {
      if (spec.jump != JumpKind::kNone) return makeError("more than one -j/-g");
      auto v = value(a);
      if (!v) return v.error();
      spec.target = std::move(*v);
      spec.jump = (a == "-g" || a == "--goto") ? JumpKind::kGoto : JumpKind::kJump;
      context = Context::kTarget;
      continue;
    }
    if (a == "-c" || a == "--set-counters") {
      // Counters given inline (iptables-restore accepts them); they are not a match.
      i += 2;
      if (i >= args.size()) return makeError(fmt::format("'{}' needs packets and bytes", a));
      continue;
    }
    if (a.size() > 2 && a.starts_with("--")) {
      RuleOption option{a, {}, negate};
      negate = false;
      if (takesOneFreeValue(a)) {
        auto v = value(a);
        if (!v) return v.error();
        option.values.push_back(std::move(*v));
      } else {
        while (i + 1 < args.size() && !looksLikeOption(args[i + 1]))
          option.values.push_back(args[++i]);
      }
      if (context == Context::kTarget) {
        spec.target_options.push_back(std::move(option));
      } else if (context == Context::kModule) {
        spec.modules.back().options.push_back(std::move(option));
      } else if (spec.protocol && !spec.protocol->negated) {
        // "-p tcp --dport 80" loads the protocol's match implicitly.
        spec.modules.push_back(RuleModule{spec.protocol->value, {std::move(option)}});
        context = Context::kModule;
      } else {
        return makeError(fmt::format("option '{}' before any -m or -j", a));
      }
      continue;
    }
    return makeError(fmt::format("unexpected '{}'", a));
  }
  if (negate) return makeError("'!' at the end of the rule");
  return spec;
}

Result<AddressMask> parseAddressMask(std::string_view text) {
  auto slash = text.find('/');
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) return makeError(fmt::format("'{}' is not an address or network", text));
  AddressMask out;
  out.address = *ip;
  const int max_prefix = ip->family == Family::kIpv4 ? 32 : 128;
  int prefix = max_prefix;
  if (slash != std::string_view::npos) {
    auto rest = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), prefix);
    if (ec == std::errc() && end == rest.data() + rest.size() && !rest.empty()) {
      if (prefix < 0 || prefix > max_prefix) {
        return makeError(fmt::format("'{}' has a prefix outside 0..{}", text, max_prefix));
      }
    } else {
      // A dotted (possibly non-contiguous) mask, which iptables accepts as is.
      auto mask = IpAddress::parse(rest);
      if (!mask || mask->family != ip->family) {
        return makeError(fmt::format("'{}' has an invalid mask", text));
      }
      out.mask = mask->bytes;
      return out;
    }
  }
  for (int b = 0; b < prefix; ++b) out.mask[b / 8] |= static_cast<uint8_t>(0x80 >> (b % 8));
  return out;
}

bool AddressMask::contains(const IpAddress& ip) const {
  if (ip.family != address.family) return false;
  for (size_t i = 0; i < ip.size(); ++i) {
    if ((ip.bytes[i] & mask[i]) != (address.bytes[i] & mask[i])) return false;
  }
  return true;
}

bool AddressMask::matchesEverything() const {
  return std::all_of(mask.begin(), mask.end(), [](uint8_t b) { return b == 0; });
}

bool AddressMask::isHost() const {
  for (size_t i = 0; i < address.size(); ++i) {
    if (mask[i] != 0xFF) return false;
  }
  return true;
}

Result<PortRange> parseIptablesPortRange(std::string_view text) {
  auto number = [&](std::string_view s, uint16_t fallback) -> std::optional<uint16_t> {
    if (s.empty()) return fallback;
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v > 65535) return std::nullopt;
    return static_cast<uint16_t>(v);
  };
  auto colon = text.find(':');
  auto first = number(text.substr(0, colon), 0);
  auto last = colon == std::string_view::npos ? first : number(text.substr(colon + 1), 65535);
  if (text.empty() || text == ":" || !first || !last) {
    return makeError(fmt::format("'{}' is not a port or port range", text));
  }
  // iptables swaps a reversed range rather than rejecting it.
  return PortRange{std::min(*first, *last), std::max(*first, *last)};
}

bool interfaceMatches(std::string_view pattern, std::string_view name) {
  if (!pattern.empty() && pattern.back() == '+') {
    return name.starts_with(pattern.substr(0, pattern.size() - 1));
  }
  return pattern == name;
}

std::string joinArgs(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out += ' ';
    bool quote = a.empty() || a.find_first_of(" \t\"\\") != std::string::npos;
    if (!quote) {
      out += a;
      continue;
    }
    out += '"';
    for (char c : a) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out;
}

std::string ruleBody(const std::string& text, const std::string& chain) {
  for (std::string_view prefix : {"-A ", "--append "}) {
    std::string head = std::string(prefix) + chain;
    if (text.starts_with(head) && (text.size() == head.size() || text[head.size()] == ' ')) {
      size_t start = text.find_first_not_of(' ', head.size());
      return start == std::string::npos ? std::string() : text.substr(start);
    }
  }
  return text;
}

}  // namespace remora::intercept
