// LineAllocator<T>: a std::allocator that aligns every allocation to a cache line (64 bytes),
// for the engine's per-event arrays (a window's accumulators, a device's metric table), so
// that an array of n bytes spans ceil(n / 64) lines instead of up to one more.
#pragma once

#include <cstddef>
#include <new>

namespace joule::stream {

template <typename T>
struct LineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};

  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) noexcept {}  // NOLINT: rebinding, as std::allocator

  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) noexcept { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace joule::stream
