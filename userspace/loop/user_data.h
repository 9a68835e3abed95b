#pragma once

#include <cstdint>

namespace remora::loop {

// The 64-bit io_uring user_data, packed as [op:8][slot:24][generation:32]. The generation lets
// the owner of a slot table tell a late completion for a reused slot from a current one.
struct UserData {
  uint8_t op = 0;
  uint32_t slot = 0;  // < kMaxSlots
  uint32_t generation = 0;

  static constexpr uint32_t kMaxSlots = 1u << 24;

  constexpr uint64_t encode() const {
    return (uint64_t{op} << 56) | (uint64_t{slot & (kMaxSlots - 1)} << 32) | generation;
  }
  static constexpr UserData decode(uint64_t raw) {
    return UserData{static_cast<uint8_t>(raw >> 56),
                    static_cast<uint32_t>(raw >> 32) & (kMaxSlots - 1), static_cast<uint32_t>(raw)};
  }
  constexpr bool operator==(const UserData&) const = default;
};

// A user_data whose completion nobody needs (linked timeouts, fire-and-forget closes).
inline constexpr uint64_t kIgnoredUserData = 0;

}  // namespace remora::loop
