#include "app/allocator_tuning.h"

#include <cstdint>
#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#include <sys/mman.h>
#endif

namespace joule::app {

void TuneAllocatorForServer() {
#if defined(__GLIBC__)
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // also turns off glibc's dynamic threshold
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_TOP_PAD, 16 << 20);
#endif
}

void ReserveThreadArena(size_t bytes) {
#if defined(__GLIBC__)
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  // Blocks below the mmap threshold (32 MiB, TuneAllocatorForServer) come from the thread's
  // arena; a non-main arena is a chain of 64 MiB heaps, so two blocks fill most of one.
  constexpr size_t kBlock = 30u << 20;
  constexpr uintptr_t kHugePage = 2u << 20;
  void* blocks[4] = {};
  size_t n = 0;
  for (size_t reserved = 0; reserved < bytes && n < 4; reserved += kBlock) {
    void* p = std::malloc(kBlock);
    if (p == nullptr) break;
    blocks[n++] = p;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + kBlock) & ~(kHugePage - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
  // Freed blocks merge into the arena's top chunk, which stays mapped (it is below
  // M_TRIM_THRESHOLD): later allocations are carved from it without growing the heap.
  for (size_t i = n; i > 0; --i) std::free(blocks[i - 1]);
#else
  (void)bytes;
#endif
}

}  // namespace joule::app
