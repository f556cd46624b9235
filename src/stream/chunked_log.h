// ChunkedLog<T>: a sequence kept in fixed-size chunks, for the engine's per-metric sample
// histories. Appending never moves what is stored (no reallocation copies while a history
// grows) and dropping from the front frees whole chunks (no memmove of what is kept), so a
// history at steady state costs one write per sample. Random access is by index.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

namespace joule::stream {

// Chunks are recycled through a per-thread free list (an engine runs on one thread; a
// chunk freed on another thread simply joins that thread's list), so a history that grows
// at one end and expires at the other stops calling malloc once it is warm.
template <size_t kBytes>
class ChunkPool {
 public:
  static void* Alloc() {
    if (dead) return Malloc();
    auto& f = List();
    if (!f.items.empty()) {
      void* p = f.items.back();
      f.items.pop_back();
      return p;
    }
    return Malloc();
  }
  static void Free(void* p) {
    if (dead) {  // a log destroyed after this thread's list (thread or program exit)
      std::free(p);
      return;
    }
    auto& f = List();
    if (f.items.size() < kMaxFree) {
      f.items.push_back(p);
    } else {
      std::free(p);
    }
  }

 private:
  static constexpr size_t kMaxFree = (64u << 20) / kBytes;  // at most 64 MB kept per thread
  static void* Malloc() {
    void* p = std::malloc(kBytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  struct FreeList {
    std::vector<void*> items;
    ~FreeList() {
      for (void* p : items) std::free(p);
      dead = true;
    }
  };
  static inline thread_local bool dead = false;
  static FreeList& List() {
    static thread_local FreeList list;
    return list;
  }
};

template <typename T>
class ChunkedLog {
 public:
  static constexpr uint32_t kChunk = 64;  // elements per chunk (head_ has 6 bits)
  using Pool = ChunkPool<kChunk * sizeof(T)>;

  ChunkedLog() = default;
  ChunkedLog(const ChunkedLog&) = delete;
  ChunkedLog& operator=(const ChunkedLog&) = delete;
  ChunkedLog(ChunkedLog&& o) noexcept { Take(o); }
  ChunkedLog& operator=(ChunkedLog&& o) noexcept {
    if (this != &o) {
      clear();
      Take(o);
    }
    return *this;
  }
  ~ChunkedLog() { clear(); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) {
    const size_t j = head_ + i;
    return chunks_[j / kChunk][j % kChunk];
  }
  const T& operator[](size_t i) const {
    const size_t j = head_ + i;
    return chunks_[j / kChunk][j % kChunk];
  }
  // Element i and the number of elements stored contiguously from it (to the end of its
  // chunk or of the log), for loops that read a range without per-element index math.
  // REQUIRES: i < size().
  const T* span(size_t i, size_t* n) const {
    const size_t j = head_ + i;
    const size_t in_chunk = kChunk - j % kChunk;
    const size_t left = size_ - i;
    *n = in_chunk < left ? in_chunk : left;
    return chunks_[j / kChunk] + j % kChunk;
  }
  // REQUIRES: !empty(). The last element is always just before end_.
  T& back() { return end_[-1]; }
  const T& back() const { return end_[-1]; }
  // Where the next element goes (for prefetching); may be a chunk not yet allocated.
  const T* tail() const { return end_ == nullptr ? nullptr : end_ - 1; }

  void push_back(const T& v) {
    if ((head_ + size_) % kChunk == 0) AddChunk();
    *end_++ = v;
    ++size_;
  }
  // Inserts v before index pos (pos <= size()).
  void insert(size_t pos, const T& v) {
    if (pos == size_) {
      push_back(v);
      return;
    }
    push_back(back());
    for (size_t i = size_ - 2; i > pos; --i) (*this)[i] = (*this)[i - 1];
    (*this)[pos] = v;
  }
  // Drops the first n elements (n <= size()); chunks left empty are freed.
  void erase_front(size_t n) {
    size_ -= static_cast<uint32_t>(n);
    if (size_ == 0) {
      clear();
      return;
    }
    const size_t h = head_ + n;
    const uint32_t drop = static_cast<uint32_t>(h / kChunk);
    head_ = h % kChunk;
    if (drop == 0) return;
    for (uint32_t c = 0; c < drop; ++c) Pool::Free(chunks_[c]);
    std::memmove(chunks_, chunks_ + drop, (n_chunks_ - drop) * sizeof(T*));
    n_chunks_ -= drop;
  }
  void clear() {
    for (uint32_t c = 0; c < n_chunks_; ++c) Pool::Free(chunks_[c]);
    std::free(chunks_);
    chunks_ = nullptr;
    end_ = nullptr;
    n_chunks_ = 0;
    head_ = 0;
    size_ = 0;
  }
  size_t capacity_bytes() const {
    if (chunks_ == nullptr) return 0;
    return static_cast<size_t>(n_chunks_) * kChunk * sizeof(T) +
           ChunkTableCapacity(n_chunks_) * sizeof(T*);
  }

 private:
  static constexpr uint32_t kMaxChunks = (1u << 26) - 1;
  // The chunk table's capacity for n chunks: 4, else the power of two at or above n.
  static uint32_t ChunkTableCapacity(uint32_t n) { return n <= 4 ? 4 : std::bit_ceil(n); }
  [[gnu::noinline]] void AddChunk() {
    const uint32_t n = n_chunks_;
    if (chunks_ == nullptr || n == ChunkTableCapacity(n)) {
      if (n >= kMaxChunks / 2) throw std::length_error("ChunkedLog: too many chunks");
      const uint32_t cap = chunks_ == nullptr ? 4 : n * 2;
      auto** grown = static_cast<T**>(std::realloc(chunks_, cap * sizeof(T*)));
      if (grown == nullptr) throw std::bad_alloc();
      chunks_ = grown;
    }
    auto* c = static_cast<T*>(Pool::Alloc());
    chunks_[n_chunks_++] = c;
    end_ = c;
  }
  void Take(ChunkedLog& o) {
    chunks_ = std::exchange(o.chunks_, nullptr);
    end_ = std::exchange(o.end_, nullptr);
    n_chunks_ = o.n_chunks_;
    head_ = o.head_;
    size_ = o.size_;
    o.n_chunks_ = 0;
    o.head_ = 0;
    o.size_ = 0;
  }

  // 24 bytes (a device's metric table is read on every event: MetricState holds two logs).
  // The chunk table's capacity is not stored: it is at least ChunkTableCapacity(n_chunks_)
  // (grown to twice that when n_chunks_ reaches it; erase_front never shrinks the table).
  T** chunks_ = nullptr;
  T* end_ = nullptr;  // one past the last element
  uint32_t size_ = 0;
  uint32_t n_chunks_ : 26 = 0;
  uint32_t head_ : 6 = 0;  // index of the first element in chunks_[0] (< kChunk)
};

}  // namespace joule::stream
