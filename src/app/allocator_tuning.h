// TuneAllocatorForServer: glibc malloc settings for `joule serve`, applied once at start.
#pragma once

#include <cstddef>

namespace joule::app {

// Keeps glibc from handing freed memory back to the kernel after every burst and taking it
// again on the next one (each round trip costs an mprotect/brk and a page fault per touched
// page): trim only above 64 MiB of free top-of-heap, grow the heap 16 MiB at a time, and
// serve allocations up to 32 MiB (HTTP bodies, log batches) from the heap instead of
// fresh mmaps. Does nothing when the environment sets GLIBC_TUNABLES (the operator's
// settings win) or when the C library is not glibc. See src/app/README.md "Allocator".
void TuneAllocatorForServer();

// For a thread that will allocate a large, long-lived working set (a partition processor's
// window engine state): makes the calling thread's malloc arena `bytes` large at once (one
// mprotect instead of one per few KiB of growth) and asks the kernel for transparent huge
// pages in it (MADV_HUGEPAGE: one page fault per 2 MiB instead of per 4 KiB, fewer TLB
// misses). Nothing is touched, so resident memory does not grow until the memory is used.
// Same conditions as TuneAllocatorForServer. See src/app/README.md "Allocator".
void ReserveThreadArena(size_t bytes);

}  // namespace joule::app
