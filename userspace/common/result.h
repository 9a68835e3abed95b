#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace remora {

// An error that crossed a system or input boundary: errno (0 when not a system error) and a
// message that names what was wrong.
struct Error {
  int code = 0;
  std::string message;
};

// A value or an error (an Error unless a module needs its own, like the CNI plugin's coded
// errors). Remora's functions that can fail on input or environment return this instead of
// throwing; callers must check ok() before value().
template <typename T, typename E = Error>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(E error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  const E& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, E> state_;
};

template <typename E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(E error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const E& error() const { return error_; }

 private:
  E error_;
  bool ok_ = true;
};

inline Error makeError(std::string message) { return Error{0, std::move(message)}; }
// Builds an Error from the current errno, prefixed with what was being attempted.
Error errnoError(const std::string& what);

}  // namespace remora
