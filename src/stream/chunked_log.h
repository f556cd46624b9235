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
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

namespace joule::stream {

// `bytes` (a multiple of 2 MB) of fresh memory, aligned to 2 MB and advised for
// transparent huge pages (an anonymous mapping, chunked_log.cc); nullptr when the system
// has none left. Never freed.
void* AllocSlab(size_t bytes);

// Chunks of kBytes, carved from 32 MB slabs (AllocSlab) of 2 MB pages: one page fault and
// TLB entry per 2 MB of histories instead of a malloc per chunk and a page per 4 KB
// (src/stream README, "Eighth pass"). Freed chunks go to a per-thread free list (an engine runs on
// one thread; a chunk freed on another thread simply joins that thread's list), so a history that
// grows at one end and expires at the other stops allocating once it is warm. Chunks are never
// returned to the system: the pool keeps the histories' high-water mark. When a thread exits, its
// list and the rest of its slab go to a shared list, from which any thread takes chunks before it
// maps a new slab.
template <size_t kBytes>
class ChunkPool {
 public:
  // A slab is 16 transparent huge pages where the kernel allows them (THP "madvise"
  // mode), each faulted in when first touched. One mapping per 2 MB measured slower in
  // bench/core_throughput: the parse step in the engine's thread took 0.28–0.33 s
  // against 0.18–0.22 s (src/stream README, "Eighth pass").
  static constexpr size_t kSlabBytes = size_t{32} << 20;
  static constexpr size_t kSlabChunks = kSlabBytes / kBytes;

  static void* Alloc() {
    if (dead) return AllocShared();
    Local& l = local;
    if (!l.free.empty()) {
      void* p = l.free.back();
      l.free.pop_back();
      return p;
    }
    if (l.slab_left == 0) return Refill(l);
    --l.slab_left;
    void* p = l.slab_next;
    l.slab_next += kBytes;
    return p;
  }
  static void Free(void* p) {
    if (dead) {  // a log destroyed after this thread's list (thread exit)
      Shared& g = Global();
      std::lock_guard<std::mutex> lock(g.mu);
      g.free.push_back(p);
      return;
    }
    local.free.push_back(p);
  }

 private:
  static_assert(kBytes % alignof(std::max_align_t) == 0);
  struct Shared {
    std::mutex mu;
    std::vector<void*> free;
    std::vector<void*> slabs;  // every slab, so that they stay reachable
  };
  static Shared& Global() {
    static auto* g = new Shared;  // never destroyed: threads may exit during static destruction
    return *g;
  }
  static char* NewSlab(Shared& g) {  // REQUIRES: g.mu held
    g.slabs.reserve(g.slabs.size() + 1);
    void* slab = AllocSlab(kSlabBytes);
    if (slab == nullptr) throw std::bad_alloc();
    g.slabs.push_back(slab);
    return static_cast<char*>(slab);
  }
  static void* AllocShared() {
    Shared& g = Global();
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.free.empty()) {
      void* p = g.free.back();
      g.free.pop_back();
      return p;
    }
    g.slabs.reserve(g.slabs.size() + 1);
    void* p = std::malloc(kBytes);
    if (p == nullptr) throw std::bad_alloc();
    g.slabs.push_back(p);
    return p;
  }
  struct Local {
    std::vector<void*> free;
    char* slab_next = nullptr;
    size_t slab_left = 0;
    ~Local() {  // thread exit: the rest of the slab and the free list go to the shared list
      dead = true;
      for (; slab_left > 0; --slab_left, slab_next += kBytes) free.push_back(slab_next);
      Shared& g = Global();
      std::lock_guard<std::mutex> lock(g.mu);
      g.free.insert(g.free.end(), free.begin(), free.end());
    }
  };
  // Takes up to a slab's worth of the chunks that exited threads left, else carves a new
  // slab; returns one chunk. REQUIRES: the thread's list and slab are empty.
  [[gnu::noinline]] static void* Refill(Local& l) {
    Shared& g = Global();
    std::lock_guard<std::mutex> lock(g.mu);
    if (!g.free.empty()) {
      const size_t take = g.free.size() < kSlabChunks ? g.free.size() : kSlabChunks;
      l.free.assign(g.free.end() - static_cast<ptrdiff_t>(take), g.free.end());
      g.free.resize(g.free.size() - take);
      void* p = l.free.back();
      l.free.pop_back();
      return p;
    }
    char* slab = NewSlab(g);
    l.slab_next = slab + kBytes;
    l.slab_left = kSlabChunks - 1;
    return slab;
  }
  static inline thread_local Local local;
  static inline thread_local bool dead = false;
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
  // The first index whose element fails `pred` (the elements for which it holds must
  // come first): as std::partition_point, by index. The engine looks for positions near
  // the end (an out-of-order sample a few places back, the start of the open window), so
  // the search gallops back from the last element (1, 2, 4, 8… places) and then bisects
  // the range found: O(log d) reads for a position d places from the end, all in the
  // tail's cache lines when d is small, where bisecting the whole log reads one line
  // per step across it (a cache miss each; 11 % of a whole server's CPU samples, all in
  // out-of-order events, before this).
  template <typename Pred>
  size_t partition_point(Pred pred) const {
    size_t hi = size_;  // every element at or after hi fails pred
    size_t lo = 0;
    for (size_t step = 1; hi > 0; step *= 2) {
      const size_t probe = hi > step ? hi - step : 0;
      if (pred((*this)[probe])) {
        lo = probe + 1;  // the answer is in [probe + 1, hi]
        break;
      }
      hi = probe;
    }
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (pred((*this)[mid])) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }
  // The number of elements before the first element of a later chunk for which `pred`
  // holds, choosing the last such chunk start while `pred` holds for every chunk start up
  // to it (pred must hold for a prefix of the log): whole chunks that can be dropped
  // from the front, reading one element per chunk instead of every element.
  template <typename Pred>
  size_t WholeChunksBefore(Pred pred) const {
    size_t n = 0;
    for (uint32_t c = 1; c < n_chunks_; ++c) {
      const size_t start = c * size_t{kChunk} - head_;  // index of chunk c's first element
      if (start >= size_ || !pred(chunks_[c][0])) break;
      n = start;
    }
    return n;
  }
  // REQUIRES: !empty(). The last element is always just before end_.
  T& back() { return end_[-1]; }
  const T& back() const { return end_[-1]; }
  // Where the next element goes (for prefetching); may be a chunk not yet allocated.
  const T* tail() const { return end_ == nullptr ? nullptr : end_ - 1; }

  [[gnu::always_inline]] void push_back(const T& v) {
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
    if (size_ == 0) {  // every chunk back to the pool; the chunk table stays for reuse
      for (uint32_t c = 0; c < n_chunks_; ++c) Pool::Free(chunks_[c]);
      end_ = nullptr;
      n_chunks_ = 0;
      head_ = 0;
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
