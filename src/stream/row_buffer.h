// RowBuffer: a growable array of 64-bit words for a device's staged rows (engine_state.h,
// kRowSkew). Unlike std::vector it hands out room for a row without zero-filling it first,
// it starts a cache line (rows are padded to lines), and it is 16 bytes (it sits in a line
// of Device that every event reads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace joule::stream {

class RowBuffer {
 public:
  RowBuffer() = default;
  RowBuffer(const RowBuffer&) = delete;
  RowBuffer& operator=(const RowBuffer&) = delete;
  RowBuffer(RowBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        cap_(std::exchange(o.cap_, 0)) {}
  RowBuffer& operator=(RowBuffer&& o) noexcept {
    if (this != &o) {
      Free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      cap_ = std::exchange(o.cap_, 0);
    }
    return *this;
  }
  ~RowBuffer() { Free(data_); }

  // Room for `words` more words, to be written by the caller (their content is undefined
  // until then).
  uint64_t* Append(size_t words) {
    if (size_ + words > cap_) [[unlikely]]
      Grow(words);
    uint64_t* p = data_ + size_;
    size_ += static_cast<uint32_t>(words);
    return p;
  }
  const uint64_t* data() const { return data_; }
  // Where the next row goes (for prefetching; may be past the allocation).
  const uint64_t* next() const { return data_ + size_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return cap_; }
  void clear() { size_ = 0; }

 private:
  [[gnu::noinline]] void Grow(size_t words) {
    size_t cap = static_cast<size_t>(cap_) * 2;
    if (cap < size_ + words) cap = size_ + words;
    if (cap < 128) cap = 128;  // 16 rows of up to 8 words: ~10 s of events at 1 Hz
    if (cap > UINT32_MAX) throw std::bad_alloc();
    auto* grown = static_cast<uint64_t*>(::operator new(cap * sizeof(uint64_t), kAlign));
    if (size_ > 0) std::memcpy(grown, data_, size_ * sizeof(uint64_t));
    Free(data_);
    data_ = grown;
    cap_ = static_cast<uint32_t>(cap);
  }

  static constexpr std::align_val_t kAlign{64};
  static void Free(uint64_t* p) {
    if (p != nullptr) ::operator delete(p, kAlign);
  }

  uint64_t* data_ = nullptr;
  uint32_t size_ = 0;
  uint32_t cap_ = 0;
};

}  // namespace joule::stream
