#include "kernels/gemm_bf16.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/ops.h"

namespace llmprune::kernels {

Compute parse_compute(const std::string& s) {
  if (s == "fp32") return Compute::F32;
  if (s == "bf16") return Compute::BF16;
  throw UserError("--compute '" + s + "' is not one of fp32, bf16");
}

const char* compute_name(Compute c) { return c == Compute::BF16 ? "bf16" : "fp32"; }

namespace {

std::atomic<Bf16Kernel> g_kernel{Bf16Kernel::Auto};

// Blocking. The micro-kernel computes an MR x NR tile of C from an A micro-panel (MR rows x
// 2*kpn k, in L2) and a B micro-panel (NR columns x 2*kpn k, in L1): per k pair, 2 B loads,
// 12 broadcasts and 24 vdpbf16ps into 24 accumulators (+3 registers of 32).
constexpr int kMR = 12, kNR = 32;
constexpr int kKP = 128;           // k pairs per block: a B micro-panel is 128*32*4 = 16 KiB
constexpr int kMCPanels = 16;      // A panels per L2 chunk: 16*12 rows x 256 k x 2 B = 96 KiB
constexpr int kNB = 8 * kNR;       // columns per task: a B block is 128 KiB (L2)

// A packed panel holds pairs of consecutive k as one uint32: low half k even, high half k odd,
// the layout vdpbf16ps multiplies pairwise. Layout [kp][width] for `width` rows (or columns).
inline uint32_t pair_bits(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

template <bool Bf16>
inline uint16_t element(const void* base, size_t idx) {
  if constexpr (Bf16) return static_cast<const uint16_t*>(base)[idx];
  else return f32_to_bf16(static_cast<const float*>(base)[idx]);
}

// Packs rows r0..r0+rows of an operand (rows <= width; rows past `rows` are zero), k pairs
// kp0..kp0+kpn, as dst[kp][r]; k >= K reads as 0. KContig: element (r, k) is data[r*ld + k],
// else data[k*ld + r].
template <bool Bf16, bool KContig>
void pack_impl(const void* data, int ld, int r0, int rows, int width, int kp0, int kpn, int K, uint32_t* dst) {
  const int k0 = 2 * kp0;
  const int k_end = std::min(K, k0 + 2 * kpn);
  const int full_pairs = std::max(0, (k_end - k0) / 2);  // pairs with both k < K
  if constexpr (KContig) {
    for (int r = 0; r < width; r++) {
      uint32_t* d = dst + r;
      int kp = 0;
      if (r < rows) {
        const size_t base = size_t(r0 + r) * size_t(ld) + size_t(k0);
        for (; kp < full_pairs; kp++)
          d[size_t(kp) * width] = pair_bits(element<Bf16>(data, base + 2 * kp), element<Bf16>(data, base + 2 * kp + 1));
        if (kp < kpn && k0 + 2 * kp < k_end) {
          d[size_t(kp) * width] = pair_bits(element<Bf16>(data, base + 2 * kp), 0);
          kp++;
        }
      }
      for (; kp < kpn; kp++) d[size_t(kp) * width] = 0;
    }
  } else {
    for (int kp = 0; kp < kpn; kp++) {
      uint32_t* d = dst + size_t(kp) * width;
      const int k = k0 + 2 * kp;
      int r = 0;
      if (kp < full_pairs) {
        const size_t lo = size_t(k) * size_t(ld) + size_t(r0), hi = lo + size_t(ld);
        for (; r < rows; r++) d[r] = pair_bits(element<Bf16>(data, lo + r), element<Bf16>(data, hi + r));
      } else if (k < k_end) {
        const size_t lo = size_t(k) * size_t(ld) + size_t(r0);
        for (; r < rows; r++) d[r] = pair_bits(element<Bf16>(data, lo + r), 0);
      }
      for (; r < width; r++) d[r] = 0;
    }
  }
}

void pack(const Operand& x, bool k_contig, int r0, int rows, int width, int kp0, int kpn, int K, uint32_t* dst) {
  if (x.bf16) {
    if (k_contig) pack_impl<true, true>(x.data, x.ld, r0, rows, width, kp0, kpn, K, dst);
    else pack_impl<true, false>(x.data, x.ld, r0, rows, width, kp0, kpn, K, dst);
  } else {
    if (k_contig) pack_impl<false, true>(x.data, x.ld, r0, rows, width, kp0, kpn, K, dst);
    else pack_impl<false, false>(x.data, x.ld, r0, rows, width, kp0, kpn, K, dst);
  }
}

// A 64-byte aligned uint32 buffer that keeps its capacity.
struct PackBuffer {
  std::vector<uint32_t> v;
  uint32_t* get(size_t n) {
    if (v.size() < n + 16) v.resize(n + 16);
    auto p = reinterpret_cast<uintptr_t>(v.data());
    return reinterpret_cast<uint32_t*>((p + 63) & ~uintptr_t(63));
  }
};

#define LLMPRUNE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// C[m, n] (m <= MR, n <= NR valid) (+)= A micro-panel . B micro-panel over kpn k pairs.
LLMPRUNE_BF16_TARGET
void micro_kernel(int kpn, const uint32_t* a, const uint32_t* b, float* C, int ldc, bool load_c, int m, int n) {
  __m512 acc[kMR][2];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int kp = 0; kp < kpn; kp++) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kMR; r++) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
    a += kMR;
    b += kNR;
  }
  const __mmask16 m0 = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  const __mmask16 m1 = n >= 32 ? __mmask16(0xffff) : n <= 16 ? __mmask16(0) : __mmask16((1u << (n - 16)) - 1);
#pragma GCC unroll 12
  for (int r = 0; r < kMR; r++) {
    if (r >= m) break;
    float* c = C + size_t(r) * ldc;
    __m512 v0 = acc[r][0], v1 = acc[r][1];
    if (load_c) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, c));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
  }
}

// B packed whole, sliver by sliver: sliver s (columns s*NR..) is [K2][NR] at s*K2*NR.
void pack_b_whole(const Operand& B, int N, int K, uint32_t* dst) {
  const int K2 = (K + 1) / 2, slivers = (N + kNR - 1) / kNR;
  for (int s = 0; s < slivers; s++)
    pack(B, B.trans, s * kNR, std::min(kNR, N - s * kNR), kNR, 0, K2, K, dst + size_t(s) * K2 * kNR);
}

// The blocked GEMM. B comes as an operand, packed per task and k block, or (b_whole) packed
// beforehand by pack_b_whole.
void gemm_native(int M, int N, int K, const Operand& A, const Operand* B, const uint32_t* b_whole, float beta, float* C,
                 int ldc) {
  const int K2 = (K + 1) / 2;
  const int n_panels = (M + kMR - 1) / kMR;
  const bool nested = omp_in_parallel();
  const int threads = nested ? 1 : omp_get_max_threads();
  const bool parallel = threads > 1 && 2.0 * M * N * K > 4e6;

  // A whole, panel by panel: panel p is [K2][MR] at p*K2*MR (the calling thread's buffer).
  static thread_local PackBuffer a_buf;
  uint32_t* ap = a_buf.get(size_t(n_panels) * K2 * kMR);
#pragma omp parallel for schedule(static) if (parallel)
  for (int p = 0; p < n_panels; p++)
    pack(A, !A.trans, p * kMR, std::min(kMR, M - p * kMR), kMR, 0, K2, K, ap + size_t(p) * K2 * kMR);

  // Tasks: column blocks, split by rows too when there are too few to feed every thread.
  const int n_jb = (N + kNB - 1) / kNB;
  int n_ib = 1;
  if (n_jb < 2 * threads) n_ib = std::min(n_panels, (2 * threads + n_jb - 1) / n_jb);
  const int panels_per_ib = (n_panels + n_ib - 1) / n_ib;
  n_ib = (n_panels + panels_per_ib - 1) / panels_per_ib;

#pragma omp parallel if (parallel)
  {
    PackBuffer b_buf;
    uint32_t* bp = b_whole ? nullptr : b_buf.get(size_t(kKP) * kNB);
#pragma omp for schedule(dynamic)
    for (int t = 0; t < n_jb * n_ib; t++) {
      const int jb = t / n_ib, ib = t % n_ib;
      const int j0 = jb * kNB, nb = std::min(kNB, N - j0);
      const int p0 = ib * panels_per_ib, p1 = std::min(n_panels, p0 + panels_per_ib);
      const int slivers = (nb + kNR - 1) / kNR;
      for (int kp0 = 0; kp0 < K2; kp0 += kKP) {
        const int kpn = std::min(kKP, K2 - kp0);
        auto sliver = [&](int s) -> const uint32_t* {
          if (b_whole) return b_whole + (size_t(j0 / kNR + s) * K2 + kp0) * kNR;
          return bp + size_t(s) * kpn * kNR;
        };
        if (!b_whole)
          for (int s = 0; s < slivers; s++)
            pack(*B, B->trans, j0 + s * kNR, std::min(kNR, nb - s * kNR), kNR, kp0, kpn, K, bp + size_t(s) * kpn * kNR);
        const bool load_c = kp0 > 0 || beta != 0.0f;
        for (int pc = p0; pc < p1; pc += kMCPanels)
          for (int s = 0; s < slivers; s++)
            for (int p = pc; p < std::min(p1, pc + kMCPanels); p++)
              micro_kernel(kpn, ap + (size_t(p) * K2 + kp0) * kMR, sliver(s), C + size_t(p) * kMR * ldc + j0 + s * kNR, ldc,
                           load_c, std::min(kMR, M - p * kMR), std::min(kNR, nb - s * kNR));
      }
    }
  }
}

// The stored matrix of an operand (rows x cols as stored), widened to fp32 with bf16 rounding.
void widen_rounded(const Operand& x, int rows, int cols, std::vector<float>& out) {
  out.resize(size_t(rows) * cols);
#pragma omp parallel for if (size_t(rows) * cols > (1 << 16) && !omp_in_parallel())
  for (int i = 0; i < rows; i++) {
    float* o = out.data() + size_t(i) * cols;
    for (int j = 0; j < cols; j++) {
      const size_t idx = size_t(i) * x.ld + j;
      o[j] = bf16_to_f32(x.bf16 ? static_cast<const uint16_t*>(x.data)[idx] : f32_to_bf16(static_cast<const float*>(x.data)[idx]));
    }
  }
}

// Without AVX512-BF16: the same bf16 x bf16 products (exact in fp32) summed by OpenBLAS sgemm.
void gemm_portable(int M, int N, int K, const Operand& A, const Operand& B, float beta, float* C, int ldc) {
  std::vector<float> a, b;
  widen_rounded(A, A.trans ? K : M, A.trans ? M : K, a);
  widen_rounded(B, B.trans ? N : K, B.trans ? K : N, b);
  cblas_sgemm(CblasRowMajor, A.trans ? CblasTrans : CblasNoTrans, B.trans ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
              a.data(), A.trans ? M : K, b.data(), B.trans ? K : N, beta, C, ldc);
}

bool use_native() { return g_kernel.load() == Bf16Kernel::Auto && cpu_has_avx512_bf16(); }

void zero_or_keep(int M, int N, float beta, float* C, int ldc) {
  if (beta != 0.0f) return;
  for (int i = 0; i < M; i++) std::memset(C + size_t(i) * ldc, 0, sizeof(float) * size_t(N));
}

}  // namespace

bool cpu_has_avx512_bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return has;
}

void set_bf16_kernel(Bf16Kernel k) { g_kernel.store(k); }

void gemm_bf16(int M, int N, int K, const Operand& A, const Operand& B, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return zero_or_keep(M, N, beta, C, ldc);
  if (use_native()) gemm_native(M, N, K, A, &B, nullptr, beta, C, ldc);
  else gemm_portable(M, N, K, A, B, beta, C, ldc);
}

void round_to_bf16(const float* src, uint16_t* dst, size_t n) {
#pragma omp parallel for if (n > (1 << 18) && !omp_in_parallel())
  for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

void linear_forward_bf16(float* out, const float* inp, Weight W, const float* bias, int N, int C, int O) {
  gemm_bf16(N, O, C, f32_operand(inp, C), Operand{W.data, W.bf16, C, true}, 0.0f, out, O);
  if (bias && N > 0) {
#pragma omp parallel for if (size_t(N) * O > (1 << 15))
    for (int n = 0; n < N; n++)
      for (int o = 0; o < O; o++) out[size_t(n) * O + o] += bias[o];
  }
}

void linear_backward_bf16(float* dinp, float* dW, const float* dout, const float* inp, Weight W, int N, int C, int O) {
  if (N == 0 || O == 0 || C == 0) return;
  if (dinp) gemm_bf16(N, C, O, f32_operand(dout, O), Operand{W.data, W.bf16, C, false}, 1.0f, dinp, C);
  if (dW) gemm_bf16(O, C, N, f32_operand(dout, O, true), f32_operand(inp, C), 1.0f, dW, C);
}

void linear_weight_grad_stats_bf16(float* g, float* a, const float* dout, const float* inp, int B, int T, int C, int O,
                                   const float* sample_scale) {
  if (O == 0 || C == 0 || T == 0) return;
  const bool native = use_native();
  // Each sample's input, packed once for every row block: [B][slivers][T/2][NR].
  const int K2 = (T + 1) / 2, slivers = (C + kNR - 1) / kNR;
  const size_t per_sample = size_t(slivers) * K2 * kNR;
  PackBuffer inp_buf;
  uint32_t* inp_packed = native ? inp_buf.get(per_sample * B) : nullptr;
  if (native) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < B; j++) pack_b_whole(f32_operand(inp + size_t(j) * T * C, C), C, T, inp_packed + size_t(j) * per_sample);
  }
  weight_grad_stats_blocked(g, a, B, C, O, [&](int j, int o0, int ob, float* tmp) {
    // tmp[ob, C] = s_j * dout_j[:, o0:o0+ob]^T . inp_j
    const Operand dj = f32_operand(dout + size_t(j) * T * O + o0, O, true);
    if (native) gemm_native(ob, C, T, dj, nullptr, inp_packed + size_t(j) * per_sample, 0.0f, tmp, C);
    else gemm_portable(ob, C, T, dj, f32_operand(inp + size_t(j) * T * C, C), 0.0f, tmp, C);
    const float s = sample_scale[j];
    for (size_t i = 0; i < size_t(ob) * C; i++) tmp[i] *= s;
  });
}

}  // namespace llmprune::kernels
