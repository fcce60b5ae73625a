#pragma once
// Shared helpers for the benchmark programs: timing, sgemm rate, FLOP counts.
#include <cblas.h>
#include <omp.h>

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

// Weight bytes a decode step reads: every layer's tensors and the lm_head as stored (the
// embedding contributes one row per token, left out).
inline double decode_weight_bytes(const Model& m) {
  double b = 0;
  for (const LayerWeights& L : m.layers)
    for (const Tensor& t : L.w) b += double(t.numel()) * double(dtype_size(t.dtype));
  const Tensor& head = m.lm_head();
  return b + double(head.numel()) * double(dtype_size(head.dtype));
}

// Memory read bandwidth (GB/s) with `threads` OpenMP threads: best of `reps` sums over a
// buffer of `bytes` (>> L3). Each thread reads a contiguous slice (first-touched by the same
// thread), the way a decode step streams its rows of W: the figure a GEMV can reach.
inline double read_bandwidth_gbs(int threads, size_t bytes = size_t(1) << 30, int reps = 5) {
  constexpr size_t kChunk = 1024;  // floats per iteration (4 KiB)
  const size_t n_chunks = bytes / sizeof(float) / kChunk, n = n_chunks * kChunk;
  std::vector<float> buf(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n_chunks; i++)
    for (size_t j = 0; j < kChunk; j++) buf[i * kChunk + j] = float(j & 7);
  double best = 1e30, sink = 0;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s(), total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
    for (size_t i = 0; i < n_chunks; i++) {
      float s[64] = {};  // 64 independent sums: vector adds, not a latency chain
      const float* p = buf.data() + i * kChunk;
      for (size_t j = 0; j < kChunk; j += 64) {
        // Software prefetch one chunk ahead, as the decode kernels do: without it the hardware
        // prefetcher restarts at every 4 KiB page and the probe reads ~30% below what loads reach.
        for (int k = 0; k < 64; k += 16) __builtin_prefetch(p + kChunk + j + size_t(k));
        for (int k = 0; k < 64; k++) s[k] += p[j + size_t(k)];
      }
      float t = 0;
      for (float v : s) t += v;
      total += t;
    }
    best = std::min(best, now_s() - t0);
    sink += total;
  }
  if (sink < 0) std::printf("%f", sink);  // keeps the sums observable
  return double(n * sizeof(float)) / best / 1e9;
}

}  // namespace llmprune::bench
