// TuneAllocatorForServer: glibc malloc settings for `joule serve`, applied once at start.
#pragma once

namespace joule::app {

// Keeps glibc from handing freed memory back to the kernel after every burst and taking it
// again on the next one (each round trip costs an mprotect/brk and a page fault per touched
// page): trim only above 64 MiB of free top-of-heap, grow the heap 16 MiB at a time, and
// serve allocations up to 32 MiB (HTTP bodies, log batches) from the heap instead of
// fresh mmaps. Does nothing when the environment sets GLIBC_TUNABLES (the operator's
// settings win) or when the C library is not glibc. See src/app/README.md "Allocator".
void TuneAllocatorForServer();

}  // namespace joule::app
