// STREAM-like memory bandwidth probe: a read-only sum (what a decode GEMV does to its weights)
// and the STREAM triad a[i] = b[i] + s*c[i], over buffers far larger than L3, with 1 thread and
// with all OpenMP threads. Usage: bench_membw [MiB per buffer, default 1024]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"

using namespace llmprune;

// Best-of-5 triad rate in GB/s, counting 3 arrays moved (2 read, 1 written), as STREAM does.
static double triad_gbs(int threads, size_t bytes) {
  const size_t n = bytes / sizeof(float);
  std::vector<float> a(n), b(n), c(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; i++) a[i] = 0, b[i] = 1, c[i] = 2;
  double best = 1e30;
  for (int r = 0; r < 5; r++) {
    double t0 = bench::now_s();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
    best = std::min(best, bench::now_s() - t0);
  }
  if (a[n / 2] != 7.0f) std::printf("triad check failed\n");
  return 3.0 * double(n * sizeof(float)) / best / 1e9;
}

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? size_t(std::atol(argv[1])) : 1024;
  const size_t bytes = mib << 20;
  const int nt = omp_get_max_threads();
  std::printf("buffer %zu MiB; threads available: %d\n", mib, nt);
  for (int t : {1, nt}) {
    if (t == nt && nt == 1) break;
    std::printf("threads %d: read-only sum %6.1f GB/s   triad %6.1f GB/s\n", t, bench::read_bandwidth_gbs(t, bytes),
                triad_gbs(t, bytes / 2));
  }
  return 0;
}
