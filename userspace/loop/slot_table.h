#pragma once

// The bookkeeping every owner of ring operations needs for the objects those operations belong
// to (a proxied connection, an admin connection): one implementation, one set of rules.
//
// - An entry never moves once created (entries live in fixed-size chunks that are never
//   reallocated), so the
//   kernel may write into an entry's memory (a read buffer, an iovec, a msghdr) while an
//   operation on it is pending, however many slots are added meanwhile.
// - Every operation armed on a slot is counted in flight until its final completion; the one way
//   to get a slot's user_data for a new operation is track(), which counts it.
// - A released slot goes back to the free list only once nothing is in flight on it, and its
//   generation changes then, so a late completion for an earlier occupant is recognised
//   (resolve() answers nullopt) instead of being applied to the new one.
//
// Single-threaded, like the ring whose completions drive it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "loop/user_data.h"

namespace remora::loop {

template <typename T>
class SlotTable {
 public:
  // At most `capacity` slots in use at once (never more than UserData can address).
  explicit SlotTable(uint32_t capacity = UserData::kMaxSlots)
      : capacity_(std::min(capacity, UserData::kMaxSlots)) {}

  // A free slot, now in use, or nullopt when `capacity` slots are in use. The value keeps what
  // its previous occupant left in it (so buffers can be reused); the caller resets what it needs.
  std::optional<uint32_t> acquire() {
    if (in_use_ >= capacity_) return std::nullopt;
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      entries_.grow();
      slot = static_cast<uint32_t>(entries_.size() - 1);
    }
    Entry& e = entries_[slot];
    e.in_use = true;
    e.released = false;
    e.inflight = 0;
    ++in_use_;
    return slot;
  }

  T& operator[](uint32_t slot) { return entries_[slot].value; }
  const T& operator[](uint32_t slot) const { return entries_[slot].value; }

  // The user_data for a new operation on `slot`, counted in flight until its final completion.
  // `completions`: how many final completions the operation posts (3 for a linked
  // cancel -> shutdown -> close teardown).
  uint64_t track(uint8_t op, uint32_t slot, uint32_t completions = 1) {
    entries_[slot].inflight += completions;
    return userData(op, slot);
  }

  // The user_data an operation on `slot` carries, counting nothing: the target of a cancel.
  uint64_t userData(uint8_t op, uint32_t slot) const {
    return UserData{op, slot, entries_[slot].generation}.encode();
  }

  // The slot a completion belongs to when it is for the slot's current occupant, nullopt for a
  // late completion of an earlier one. A final completion (no IORING_CQE_F_MORE) is counted
  // done; call settle() once the completion has been handled.
  std::optional<uint32_t> resolve(const UserData& ud, bool final) {
    if (ud.slot >= entries_.size()) return std::nullopt;
    Entry& e = entries_[ud.slot];
    if (!e.in_use || e.generation != ud.generation) return std::nullopt;
    if (final && e.inflight > 0) --e.inflight;
    return ud.slot;
  }

  // The occupant is done with the slot: it is freed as soon as nothing is in flight on it.
  // Returns true when that is already the case (the slot is free now).
  bool release(uint32_t slot) {
    entries_[slot].released = true;
    return settle(slot);
  }

  // Frees a released slot whose last operation has completed; returns true when it did.
  bool settle(uint32_t slot) {
    Entry& e = entries_[slot];
    if (!e.in_use || !e.released || e.inflight != 0) return false;
    e.in_use = false;
    e.released = false;
    ++e.generation;
    free_.push_back(slot);
    --in_use_;
    return true;
  }

  // In use: acquired and not yet freed (a released slot waiting for completions is in use).
  bool inUse(uint32_t slot) const { return slot < entries_.size() && entries_[slot].in_use; }
  bool released(uint32_t slot) const { return entries_[slot].released; }
  uint32_t inflight(uint32_t slot) const { return entries_[slot].inflight; }
  uint32_t generation(uint32_t slot) const { return entries_[slot].generation; }
  size_t inUse() const { return in_use_; }
  // Slots ever created; every index below it can be passed to inUse(slot).
  size_t size() const { return entries_.size(); }
  uint32_t capacity() const { return capacity_; }

 private:
  struct Entry {
    uint32_t generation = 1;
    uint32_t inflight = 0;
    bool in_use = false;
    bool released = false;
    T value{};
  };

  // Entries in chunks of a power-of-two size: an index is a shift and a mask, inlined (a
  // std::deque's operator[] was an out-of-line call and a division on the L7 path's every
  // completion, about 1 % of the proxy's CPU per request).
  class Entries {
   public:
    Entry& operator[](uint32_t i) { return chunks_[i >> kChunkBits][i & kChunkMask]; }
    const Entry& operator[](uint32_t i) const { return chunks_[i >> kChunkBits][i & kChunkMask]; }
    size_t size() const { return size_; }
    void grow() {
      if ((size_ & kChunkMask) == 0) chunks_.push_back(std::make_unique<Entry[]>(kChunk));
      ++size_;
    }

   private:
    static constexpr uint32_t kChunkBits = 5;
    static constexpr uint32_t kChunk = 1U << kChunkBits;
    static constexpr uint32_t kChunkMask = kChunk - 1;
    std::vector<std::unique_ptr<Entry[]>> chunks_;
    uint32_t size_ = 0;
  };

  uint32_t capacity_;
  Entries entries_;
  std::vector<uint32_t> free_;
  size_t in_use_ = 0;
};

}  // namespace remora::loop
