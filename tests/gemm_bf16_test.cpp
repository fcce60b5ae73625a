// bf16 GEMM kernels (kernels/gemm_bf16.h) against a scalar reference: odd sizes, tails in every
// dimension (M vs the 12-row panels, N vs the 32-column slivers, K odd and across the 256-k blocks),
// every transpose and operand dtype, on the AVX512-BF16 path and the portable one.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/gemm_bf16.h"
#include "kernels/ops.h"

using namespace llmprune;
namespace k = llmprune::kernels;

namespace {

// A stored matrix in both dtypes: f32 values and their bf16 bits.
struct Mat {
  int rows, cols;
  std::vector<float> f;
  std::vector<uint16_t> h;
  Mat(int r, int c, std::mt19937& rng) : rows(r), cols(c), f(size_t(r) * c), h(size_t(r) * c) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (size_t i = 0; i < f.size(); i++) f[i] = d(rng), h[i] = f32_to_bf16(f[i]);
  }
  // Element (i, k) of op(X) rounded to bf16, as the kernel sees it.
  double at(int i, int j, bool trans) const {
    const size_t idx = trans ? size_t(j) * cols + i : size_t(i) * cols + j;
    return bf16_to_f32(h[idx]);
  }
};

// Restores the automatic kernel choice after a test that forced one.
struct KernelGuard {
  explicit KernelGuard(k::Bf16Kernel kk) { k::set_bf16_kernel(kk); }
  ~KernelGuard() { k::set_bf16_kernel(k::Bf16Kernel::Auto); }
};

void check_gemm(int M, int N, int K, bool ta, bool tb, bool a_bf16, bool b_bf16, float beta, std::mt19937& rng) {
  Mat A(ta ? K : M, ta ? M : K, rng), B(tb ? N : K, tb ? K : N, rng);
  const int ldc = N + 3;  // a C with spare columns: they must stay untouched
  std::vector<float> C(size_t(M) * ldc);
  for (size_t i = 0; i < C.size(); i++) C[i] = float(i % 7) - 3.0f;
  const std::vector<float> C0 = C;
  const k::Operand a = a_bf16 ? k::bf16_operand(A.h.data(), A.cols, ta) : k::f32_operand(A.f.data(), A.cols, ta);
  const k::Operand b = b_bf16 ? k::bf16_operand(B.h.data(), B.cols, tb) : k::f32_operand(B.f.data(), B.cols, tb);
  k::gemm_bf16(M, N, K, a, b, beta, C.data(), ldc);
  double worst = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < ldc; j++) {
      const float got = C[size_t(i) * ldc + j];
      if (j >= N) {
        ASSERT_EQ(got, C0[size_t(i) * ldc + j]) << "column past N written at " << i << "," << j;
        continue;
      }
      double ref = beta * C0[size_t(i) * ldc + j], mag = std::abs(ref);
      for (int kk = 0; kk < K; kk++) {
        const double p = A.at(i, kk, ta) * B.at(kk, j, tb);
        ref += p;
        mag += std::abs(p);
      }
      // fp32 accumulation of exact products: error grows with K and the magnitudes summed.
      const double tol = 1e-6 + 2e-6 * std::sqrt(double(K) + 1) * mag;
      worst = std::max(worst, std::abs(got - ref) / tol);
      ASSERT_LE(std::abs(got - ref), tol) << "M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb
                                          << " at " << i << "," << j << ": " << got << " vs " << ref;
    }
}

void run_shapes(std::mt19937& rng) {
  struct S { int M, N, K; } shapes[] = {{1, 1, 1}, {13, 33, 7}, {12, 32, 256}, {25, 70, 513}, {40, 31, 2}, {3, 300, 17}, {130, 65, 300}};
  for (auto s : shapes)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) check_gemm(s.M, s.N, s.K, ta, tb, (s.M + ta) % 2, (s.N + tb) % 2, (s.K % 2) ? 1.0f : 0.0f, rng);
  // Both dtypes on both sides for one shape with every tail.
  for (int ab = 0; ab < 2; ab++)
    for (int bb = 0; bb < 2; bb++) check_gemm(27, 45, 261, false, true, ab, bb, 0.0f, rng);
}

}  // namespace

TEST(GemmBf16, MatchesScalarReferenceNative) {
  if (!k::cpu_has_avx512_bf16()) GTEST_SKIP() << "this CPU has no AVX512-BF16 (the portable test still runs)";
  std::mt19937 rng(1);
  run_shapes(rng);
}

TEST(GemmBf16, MatchesScalarReferencePortable) {
  KernelGuard guard(k::Bf16Kernel::Portable);
  std::mt19937 rng(2);
  run_shapes(rng);
}

TEST(GemmBf16, EmptyKZeroesOrKeeps) {
  std::vector<float> C(6, 5.0f);
  float a = 1, b = 1;
  k::gemm_bf16(2, 3, 0, k::f32_operand(&a, 0), k::f32_operand(&b, 3), 1.0f, C.data(), 3);
  EXPECT_EQ(C[4], 5.0f);
  k::gemm_bf16(2, 3, 0, k::f32_operand(&a, 0), k::f32_operand(&b, 3), 0.0f, C.data(), 3);
  EXPECT_EQ(C[4], 0.0f);
}

TEST(GemmBf16, RoundingIsNearestEven) {
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even mantissa (1).
  const float in[4] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f, 1e-3f};
  uint16_t out[4];
  k::round_to_bf16(in, out, 4);
  EXPECT_EQ(bf16_to_f32(out[0]), 1.0f);
  EXPECT_EQ(bf16_to_f32(out[1]), 1.0f + 4.0f / 256);
  EXPECT_EQ(bf16_to_f32(out[2]), -2.5f);
  EXPECT_NEAR(bf16_to_f32(out[3]), 1e-3f, 1e-5f);
}

// The linear-layer wrappers against the fp32 kernels on bf16-rounded inputs (the same products).
TEST(GemmBf16, LinearKernelsMatchFp32OnRoundedInputs) {
  for (int native = 0; native < 2; native++) {
    if (native && !k::cpu_has_avx512_bf16()) continue;
    KernelGuard guard(native ? k::Bf16Kernel::Auto : k::Bf16Kernel::Portable);
    std::mt19937 rng(3);
    const int Bs = 3, T = 5, N = Bs * T, C = 37, O = 45;
    Mat x(N, C, rng), W(O, C, rng), dy(N, O, rng), bias(1, O, rng);
    auto rounded = [](const Mat& m) {
      std::vector<float> r(m.h.size());
      for (size_t i = 0; i < r.size(); i++) r[i] = bf16_to_f32(m.h[i]);
      return r;
    };
    const std::vector<float> xr = rounded(x), Wr = rounded(W), dyr = rounded(dy);
    auto near = [](const std::vector<float>& a, const std::vector<float>& b) {
      for (size_t i = 0; i < a.size(); i++) ASSERT_NEAR(a[i], b[i], 1e-4 + 1e-5 * std::abs(b[i])) << i;
    };
    std::vector<float> y(size_t(N) * O), y_ref(y.size());
    k::linear_forward_bf16(y.data(), x.f.data(), k::Weight{W.h.data(), true}, bias.f.data(), N, C, O);
    k::linear_forward(y_ref.data(), xr.data(), Wr.data(), bias.f.data(), N, C, O);
    near(y, y_ref);
    std::vector<float> dx(size_t(N) * C, 1.0f), dW(size_t(O) * C, -1.0f), dx_ref = dx, dW_ref = dW;
    k::linear_backward_bf16(dx.data(), dW.data(), dy.f.data(), x.f.data(), k::Weight{W.f.data(), false}, N, C, O);
    k::linear_backward(dx_ref.data(), dW_ref.data(), nullptr, dyr.data(), xr.data(), Wr.data(), N, C, O);
    near(dx, dx_ref);
    near(dW, dW_ref);
    const std::vector<float> scale = {0.5f, 2.0f, 1.0f};
    std::vector<float> g(size_t(O) * C, 0.0f), a(g.size(), 0.0f), g_ref = g, a_ref = a;
    k::linear_weight_grad_stats_bf16(g.data(), a.data(), dy.f.data(), x.f.data(), Bs, T, C, O, scale.data());
    k::linear_weight_grad_stats(g_ref.data(), a_ref.data(), dyr.data(), xr.data(), Bs, T, C, O, scale.data());
    near(g, g_ref);
    near(a, a_ref);
  }
}
