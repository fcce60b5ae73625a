#pragma once
// Shared helpers for the benchmark programs: timing, sgemm rate, FLOP counts.
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "model/model.h"

namespace llmprune::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best-of-`reps` sgemm rate for C[M,N] = A[M,K] . B[N,K]^T (the shape of a linear layer).
inline double sgemm_gflops(int M, int N, int K, int reps = 5) {
  std::vector<float> A(size_t(M) * K, 0.01f), B(size_t(N) * K, 0.02f), C(size_t(M) * N);
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    best = std::min(best, now_s() - t0);
  }
  return 2.0 * M * N * K / best / 1e9;
}

// "1.23 0.98 0.77": the machine's load averages (it is shared; print them beside timings).
inline std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// FLOPs of a forward pass over B sequences of T tokens (matmuls + attention as computed:
// full T x T score and value products per head) plus the lm_head.
inline double forward_flops(const Model& m, int B, int T) {
  double f = 0;
  const double N = double(B) * T, C = m.cfg.hidden;
  for (auto& lc : m.cfg.layers) {
    f += 2 * N * (C * lc.q_dim() + 2 * C * lc.kv_dim() + lc.q_dim() * C + 3 * C * lc.d_ff);
    f += 2.0 * 2.0 * B * double(T) * T * lc.head_dim * lc.n_head;
  }
  f += 2 * N * C * m.cfg.vocab;
  return f;
}

}  // namespace llmprune::bench
