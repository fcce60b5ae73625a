// This machine's fp32 GEMM rate (OpenBLAS, all OpenMP threads) at the shapes of a prune's
// gradient pass, for comparing achieved GFLOP/s against. Usage: bench_sgemm [N_TOKENS HIDDEN MLP]
// Prints one line per shape and a final "sgemm_gflops X" (the best of the layer shapes).
#include <omp.h>

#include <algorithm>
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"

using namespace llmprune;

// C[M,N] (+)= op(A) op(B) with the given transposes, best of reps.
static double rate(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, int reps = 3) {
  std::vector<float> A(size_t(M) * K, 0.01f), B(size_t(N) * K, 0.02f), C(size_t(M) * N, 0.0f);
  const int lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = bench::now_s();
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 1.0f, C.data(), N);
    best = std::min(best, bench::now_s() - t0);
  }
  return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 640, c = argc > 2 ? std::atoi(argv[2]) : 4096,
            f = argc > 3 ? std::atoi(argv[3]) : 11008;
  std::printf("threads %d\n", omp_get_max_threads());
  struct S {
    const char* what;
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K;
  } shapes[] = {
      {"forward  x W^T  [N,F] = [N,C][F,C]^T", CblasNoTrans, CblasTrans, n, f, c},
      {"input grad dy W [N,C] = [N,F][F,C]  ", CblasNoTrans, CblasNoTrans, n, c, f},
      {"weight grad dy^T x [F,C] = [N,F]^T[N,C]", CblasTrans, CblasNoTrans, f, c, n},
  };
  double best = 0;
  for (auto& s : shapes) {
    double g = rate(s.ta, s.tb, s.M, s.N, s.K);
    best = std::max(best, g);
    std::printf("  %-42s M=%d N=%d K=%d: %7.1f GFLOP/s\n", s.what, s.M, s.N, s.K, g);
  }
  std::printf("sgemm_gflops %.1f\n", best);
  return 0;
}
