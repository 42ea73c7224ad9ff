#include "core/util/memory.h"

#include <malloc.h>

namespace lowbit {

void ConfigureAllocatorForLargeBuffers() {
  mallopt(M_MMAP_MAX, 0);               // serve large blocks from the heap, where freed pages stay mapped
  mallopt(M_TRIM_THRESHOLD, 1 << 30);   // return memory to the OS only when over 1 GiB is free at the top
}

}  // namespace lowbit
