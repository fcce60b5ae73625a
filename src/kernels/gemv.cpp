#include "kernels/gemv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LLMPRUNE_GEMV_AVX512 1
// g++ 12's AVX-512 headers build their results from self-initialised "undefined" registers
// (`__m512 __Y = __Y;`), which -Wuninitialized reports at every inlined use: silenced for them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace llmprune::kernels {

namespace {

// Output rows per work item: a thread streams whole row blocks, and two threads take two
// contiguous halves of W (static schedule).
constexpr int kRowBlock = 4;
// Below this many weights a parallel region costs more than the GEMV.
constexpr size_t kParallelMinWeights = size_t(1) << 16;

// Rows o0..o1 of the portable kernel: widen one weight row into `row` (fp32), then one dot
// product per input row with four partial sums.
void scalar_rows(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M, int C,
                 int o0, int o1, std::vector<float>& row) {
  row.resize(size_t(C));
  const size_t es = dtype_size(wt);
  for (int o = o0; o < o1; o++) {
    to_f32(wt, static_cast<const uint8_t*>(W) + size_t(o) * size_t(C) * es, row.data(), size_t(C));
    for (int m = 0; m < M; m++) {
      const float* x = inp + size_t(m) * size_t(C);
      float s[4] = {0, 0, 0, 0};
      int c = 0;
      for (; c + 4 <= C; c += 4)
        for (int j = 0; j < 4; j++) s[j] += row[size_t(c + j)] * x[c + j];
      for (; c < C; c++) s[0] += row[size_t(c)] * x[c];
      out[size_t(m) * size_t(ldo) + size_t(o)] = (s[0] + s[1]) + (s[2] + s[3]) + (bias ? bias[o] : 0.0f);
    }
  }
}

#ifdef LLMPRUNE_GEMV_AVX512

// 16 consecutive weights of a row as fp32 (masked: lanes outside `mask` read as 0, not touched).
template <DType WT>
inline __m512 load_w16(const void* W, size_t idx, __mmask16 mask) {
  if constexpr (WT == DType::F32) {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(W) + idx);
  } else {
    __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(W) + idx);
    if constexpr (WT == DType::BF16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));  // bf16 = top half of f32
    else
      return _mm512_cvtph_ps(h);
  }
}
template <DType WT>
inline __m512 load_w16(const void* W, size_t idx) {
  if constexpr (WT == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(W) + idx);
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(W) + idx));
    if constexpr (WT == DType::BF16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  }
}

// Each chunk step also prefetches the same columns of the next R rows (the tile this thread
// streams next). A bf16 row of a 2048-wide layer is one 4 KiB page: the hardware prefetcher
// restarts at each new row, and without this decode of the 1B shape streamed ~26 GB/s instead of ~42
// (bench_forward, 12.7 -> 19-20 tok/s; f32 +8%). Past the thread's (or W's) last row the prefetch is a
// no-op hint: prefetches never fault.
template <DType WT>
inline void prefetch_w(const void* W, size_t idx) {
  _mm_prefetch(static_cast<const char*>(W) + idx * (WT == DType::F32 ? 4 : 2), _MM_HINT_T0);
}

// out[m0..m0+MB, o..o+R] from W rows o..o+R and input rows m0..m0+MB: each 16-column chunk of
// the R weight rows is widened once and used for all MB input rows (R*MB accumulators).
template <DType WT, int R, int MB>
void tile(float* out, int ldo, const float* inp, const void* W, const float* bias, int C, int o, int m0) {
  __m512 acc[R][MB];
  for (int r = 0; r < R; r++)
    for (int mb = 0; mb < MB; mb++) acc[r][mb] = _mm512_setzero_ps();
  const size_t wrow = size_t(o) * size_t(C);
  const float* x = inp + size_t(m0) * size_t(C);
  int c = 0;
  for (; c + 16 <= C; c += 16) {
    __m512 w[R];
    for (int r = 0; r < R; r++) w[r] = load_w16<WT>(W, wrow + size_t(r) * size_t(C) + size_t(c));
    for (int r = 0; r < R; r++) prefetch_w<WT>(W, wrow + size_t(R + r) * size_t(C) + size_t(c));
    for (int mb = 0; mb < MB; mb++) {
      const __m512 xv = _mm512_loadu_ps(x + size_t(mb) * size_t(C) + size_t(c));
      for (int r = 0; r < R; r++) acc[r][mb] = _mm512_fmadd_ps(w[r], xv, acc[r][mb]);
    }
  }
  if (c < C) {
    const __mmask16 mask = __mmask16((1u << (C - c)) - 1u);
    __m512 w[R];
    for (int r = 0; r < R; r++) w[r] = load_w16<WT>(W, wrow + size_t(r) * size_t(C) + size_t(c), mask);
    for (int mb = 0; mb < MB; mb++) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + size_t(mb) * size_t(C) + size_t(c));
      for (int r = 0; r < R; r++) acc[r][mb] = _mm512_fmadd_ps(w[r], xv, acc[r][mb]);
    }
  }
  for (int mb = 0; mb < MB; mb++)
    for (int r = 0; r < R; r++)
      out[size_t(m0 + mb) * size_t(ldo) + size_t(o + r)] =
          _mm512_reduce_add_ps(acc[r][mb]) + (bias ? bias[o + r] : 0.0f);
}

// All input rows for weight rows o..o+R, in chunks of up to 4 input rows (the R rows of W stay
// in L1/L2 between chunks).
template <DType WT, int R>
void rows_block(float* out, int ldo, const float* inp, const void* W, const float* bias, int M, int C, int o) {
  int m0 = 0;
  for (; m0 + 4 <= M; m0 += 4) tile<WT, R, 4>(out, ldo, inp, W, bias, C, o, m0);
  switch (M - m0) {
    case 3: tile<WT, R, 3>(out, ldo, inp, W, bias, C, o, m0); break;
    case 2: tile<WT, R, 2>(out, ldo, inp, W, bias, C, o, m0); break;
    case 1: tile<WT, R, 1>(out, ldo, inp, W, bias, C, o, m0); break;
    default: break;
  }
}

template <DType WT>
void simd_rows(float* out, int ldo, const float* inp, const void* W, const float* bias, int M, int C, int o0,
               int o1) {
  int o = o0;
  for (; o + kRowBlock <= o1; o += kRowBlock) rows_block<WT, kRowBlock>(out, ldo, inp, W, bias, M, C, o);
  for (; o < o1; o++) rows_block<WT, 1>(out, ldo, inp, W, bias, M, C, o);
}

#endif  // LLMPRUNE_GEMV_AVX512

// Rows o0..o1 with the best kernel this build has.
void rows(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M, int C, int o0,
          int o1, std::vector<float>& row) {
#ifdef LLMPRUNE_GEMV_AVX512
  (void)row;
  switch (wt) {
    case DType::F32: simd_rows<DType::F32>(out, ldo, inp, W, bias, M, C, o0, o1); return;
    case DType::BF16: simd_rows<DType::BF16>(out, ldo, inp, W, bias, M, C, o0, o1); return;
    case DType::F16: simd_rows<DType::F16>(out, ldo, inp, W, bias, M, C, o0, o1); return;
  }
#else
  scalar_rows(out, ldo, inp, W, wt, bias, M, C, o0, o1, row);
#endif
}

}  // namespace

bool small_m_simd_compiled() {
#ifdef LLMPRUNE_GEMV_AVX512
  return true;
#else
  return false;
#endif
}

void linear_small_m_scalar(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M,
                           int C, int O) {
  std::vector<float> row;
  scalar_rows(out, ldo, inp, W, wt, bias, M, C, 0, O, row);
}

void linear_small_m(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M, int C,
                    int O) {
  if (M <= 0 || O <= 0) return;
  const int n_blocks = (O + kRowBlock - 1) / kRowBlock;
  const bool parallel = size_t(O) * size_t(C) >= kParallelMinWeights && omp_get_max_threads() > 1;
#pragma omp parallel if (parallel)
  {
    std::vector<float> row;
    // Contiguous block ranges per thread (each thread streams its own part of W).
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int b0 = int(int64_t(n_blocks) * t / nt), b1 = int(int64_t(n_blocks) * (t + 1) / nt);
    const int o0 = b0 * kRowBlock, o1 = std::min(O, b1 * kRowBlock);
    if (o0 < o1) rows(out, ldo, inp, W, wt, bias, M, C, o0, o1, row);
  }
}

}  // namespace llmprune::kernels
