// This machine's fp32 GEMM rate (OpenBLAS, all OpenMP threads) at the shapes of a prune's
// gradient pass, for comparing achieved GFLOP/s against. Usage: bench_sgemm [N_TOKENS HIDDEN MLP]
// Prints one line per shape and a final "sgemm_gflops X" (the best of the layer shapes). With a
// 4th argument `bf16`, also kernels::gemm_bf16 at the same shapes and "bf16_gflops X".
#include <omp.h>

#include <algorithm>
#include <cblas.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/gemm_bf16.h"

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

// The same with kernels::gemm_bf16 (bf16 inputs, fp32 sums): fp32 activations rounded while
// packed, as a layer's GEMMs see them; the weight (forward and input gradient) as stored bf16.
static double rate_bf16(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, bool weight_b, int reps = 3) {
  std::vector<float> A(size_t(M) * K, 0.01f), B(size_t(N) * K, 0.02f), C(size_t(M) * N, 0.0f);
  std::vector<uint16_t> Bh(size_t(N) * K, 0x3ca3);
  const int lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
  const kernels::Operand a = kernels::f32_operand(A.data(), lda, ta == CblasTrans);
  const kernels::Operand b = weight_b ? kernels::bf16_operand(Bh.data(), ldb, tb == CblasTrans)
                                      : kernels::f32_operand(B.data(), ldb, tb == CblasTrans);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = bench::now_s();
    kernels::gemm_bf16(M, N, K, a, b, 1.0f, C.data(), N);
    best = std::min(best, bench::now_s() - t0);
  }
  return 2.0 * M * N * K / best / 1e9;
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 640, c = argc > 2 ? std::atoi(argv[2]) : 4096,
            f = argc > 3 ? std::atoi(argv[3]) : 11008;
  std::printf("threads %d\n", omp_get_max_threads());
  const bool bf16 = argc > 4 && std::string(argv[4]) == "bf16";
  struct S {
    const char* what;
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K;
    bool weight_b;
  } shapes[] = {
      {"forward  x W^T  [N,F] = [N,C][F,C]^T", CblasNoTrans, CblasTrans, n, f, c, true},
      {"input grad dy W [N,C] = [N,F][F,C]  ", CblasNoTrans, CblasNoTrans, n, c, f, true},
      {"weight grad dy^T x [F,C] = [N,F]^T[N,C]", CblasTrans, CblasNoTrans, f, c, n, false},
  };
  double best = 0, best_bf16 = 0;
  for (auto& s : shapes) {
    double g = rate(s.ta, s.tb, s.M, s.N, s.K);
    best = std::max(best, g);
    std::printf("  %-42s M=%d N=%d K=%d: %7.1f GFLOP/s", s.what, s.M, s.N, s.K, g);
    if (bf16) {
      double h = rate_bf16(s.ta, s.tb, s.M, s.N, s.K, s.weight_b);
      best_bf16 = std::max(best_bf16, h);
      std::printf("   bf16 %7.1f GFLOP/s (%.2fx)", h, h / g);
    }
    std::printf("\n");
  }
  std::printf("sgemm_gflops %.1f\n", best);
  if (bf16) std::printf("bf16_gflops %.1f (AVX512-BF16: %s)\n", best_bf16, kernels::cpu_has_avx512_bf16() ? "yes" : "no");
  return 0;
}
