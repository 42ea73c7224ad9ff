// Process-wide allocator settings for a service that churns tensor-sized buffers.
#ifndef LOWBIT_CORE_UTIL_MEMORY_H_
#define LOWBIT_CORE_UTIL_MEMORY_H_

namespace lowbit {

// glibc serves large blocks with fresh mmaps and unmaps them on free, so every tensor pays first-touch
// page faults again (measured: 2.6 ms per MB on a lazily backed VM, 15x the quantization itself).
// This keeps freed memory in the process for reuse, in at most two arenas shared by all threads; peak
// RSS still follows the largest tensors in flight, not the model. Call once at the start of main().
void ConfigureAllocatorForLargeBuffers();

}  // namespace lowbit

#endif  // LOWBIT_CORE_UTIL_MEMORY_H_
