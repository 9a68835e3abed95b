#include "plugin/bounded_json.h"

#include <fmt/format.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace remora::cni {
namespace {

using json = nlohmann::ordered_json;

// Objects up to this size are searched for a repeated key; larger ones get a hash index.
constexpr size_t kLinearSearchKeys = 16;

// The i-th member (ordered_map's operator[] takes a key, not an index).
template <typename Object>
auto& entry(Object& object, size_t i) {
  return *(object.begin() + static_cast<std::ptrdiff_t>(i));
}

// Builds the document from SAX events with an explicit stack, so depth costs no recursion.
class Builder {
 public:
  explicit Builder(size_t max_depth) : max_depth_(max_depth) {}

  // nlohmann's SAX interface names these.
  // NOLINTBEGIN(readability-identifier-naming)
  bool null() { return put(json(nullptr)); }
  bool boolean(bool v) { return put(json(v)); }
  bool number_integer(json::number_integer_t v) { return put(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) { return put(json(v)); }
  bool string(json::string_t& v) { return put(json(std::move(v))); }
  bool binary(json::binary_t& v) { return put(json::binary(std::move(v))); }
  bool start_object(std::size_t /*size*/) { return open(json::object()); }
  bool key(json::string_t& k) {
    frames_.back().key = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*size*/) { return open(json::array()); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& e) {
    error_ = e.what();
    return false;
  }
  // NOLINTEND(readability-identifier-naming)

  const std::string& error() const { return error_; }
  json take() { return std::move(root_); }

 private:
  struct Frame {
    json value;
    std::string key;
    std::optional<std::unordered_map<std::string, size_t>> index;
  };

  bool open(json container) {
    if (frames_.size() >= max_depth_) {
      error_ = fmt::format("nested deeper than {} levels", max_depth_);
      return false;
    }
    frames_.push_back(Frame{std::move(container), {}, std::nullopt});
    return true;
  }

  bool close() {
    json done = std::move(frames_.back().value);
    frames_.pop_back();
    return put(std::move(done));
  }

  bool put(json v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      return true;
    }
    Frame& top = frames_.back();
    if (top.value.is_array()) {
      top.value.get_ref<json::array_t&>().push_back(std::move(v));
      return true;
    }
    auto& object = top.value.get_ref<json::object_t&>();
    if (auto at = find(top, object)) {
      entry(object, *at).second = std::move(v);
      return true;
    }
    if (top.index) top.index->emplace(top.key, object.size());
    // Appended without ordered_map's own (linear) search: find() has ruled out a duplicate.
    object.json::object_t::Container::emplace_back(std::move(top.key), std::move(v));
    return true;
  }

  static std::optional<size_t> find(Frame& top, const json::object_t& object) {
    if (!top.index && object.size() >= kLinearSearchKeys) {
      top.index.emplace();
      top.index->reserve(object.size() * 2);
      for (size_t i = 0; i < object.size(); ++i) top.index->emplace(entry(object, i).first, i);
    }
    if (top.index) {
      auto it = top.index->find(top.key);
      if (it == top.index->end()) return std::nullopt;
      return it->second;
    }
    for (size_t i = 0; i < object.size(); ++i) {
      if (entry(object, i).first == top.key) return i;
    }
    return std::nullopt;
  }

  size_t max_depth_;
  std::vector<Frame> frames_;
  json root_;
  std::string error_;
};

}  // namespace

Result<json> parseBoundedJson(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    return makeError(
        fmt::format("{} bytes is more than the limit of {} bytes", text.size(), limits.max_bytes));
  }
  Builder builder(limits.max_depth);
  try {
    if (!json::sax_parse(text.begin(), text.end(), &builder)) {
      return makeError(builder.error().empty() ? "invalid JSON" : builder.error());
    }
  } catch (const std::exception& e) {
    return makeError(e.what());
  }
  return builder.take();
}

}  // namespace remora::cni
