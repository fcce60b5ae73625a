// Large heap blocks on transparent huge pages.
//
// The gradient pass allocates activations and buffers of tens to hundreds of MB per layer. With
// 4 KiB pages every first touch is a page fault in which the kernel zeroes the page: on the 1B
// benchmark shape that was ~10% of the importance time (perf: memset -> exc_page_fault). Debian's
// kernels default THP to "madvise", so we advise every block of at least kHugeMin bytes (the same
// thing glibc's `glibc.malloc.hugetlb=1` tunable does, which a program cannot set for itself):
// bench/peer_torch.py's 1B run went 30.9 s -> 24.6 s in importance, same scores and bytes.
//
// Only the executable replaces operator new (tests and benches keep the default allocator), and
// every block still comes from malloc/aligned_alloc and goes back through free().
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;
constexpr std::size_t kHugeMin = std::size_t(4) << 20;

void* allocate(std::size_t n) {
  if (n == 0) n = 1;
  void* p;
  if (n >= kHugeMin) {
    const std::size_t rounded = (n + kHugePage - 1) & ~(kHugePage - 1);
    p = std::aligned_alloc(kHugePage, rounded);
    if (p) ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure changes nothing
  } else {
    p = std::malloc(n);
  }
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return allocate(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
