// The ChunkPool's slabs: 2 MB-aligned anonymous mappings advised for transparent huge pages.
#include "stream/chunked_log.h"

#include <sys/mman.h>

#include <cstdint>

namespace joule::stream {

void* AllocSlab(size_t bytes) {
  constexpr size_t kAlign = size_t{2} << 20;
  // Map one alignment more than needed and unmap what lies outside the aligned range.
  void* raw =
      mmap(nullptr, bytes + kAlign, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kAlign - 1) & ~(kAlign - 1);
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t end = begin + bytes + kAlign;
  if (end > aligned + bytes)
    munmap(reinterpret_cast<void*>(aligned + bytes), end - aligned - bytes);
  void* p = reinterpret_cast<void*>(aligned);
  (void)madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without it, 4 KB pages
  return p;
}

}  // namespace joule::stream
