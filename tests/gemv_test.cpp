// Small-M linear kernels (weights read as stored) against a double reference on odd sizes, and
// the forward that uses them against the convert-then-sgemm forward on the same weights.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/gemv.h"
#include "model/forward.h"
#include "model_factory.h"
#include "test_util.h"

namespace llmprune {
namespace {

using kernels::linear_small_m;
using kernels::linear_small_m_scalar;
using Kernel = void (*)(float*, int, const float*, const void*, DType, const float*, int, int, int);

// Runs `kernel` on W[O,C] (stored as wt) and x[M,C] and checks every output against a double
// dot product of the stored values: |y - ref| <= 1e-6 * sum|w*x| + 1e-6 * |ref|. Output columns
// between O and ldo must stay untouched.
void check_kernel(Kernel kernel, DType wt, int M, int C, int O, bool with_bias, uint32_t seed) {
  const std::vector<float> w32 = test::random_vec(size_t(O) * C, seed);
  std::vector<uint8_t> W(size_t(O) * C * dtype_size(wt) + 1);  // +1: the kernel must not need padding
  from_f32(wt, w32.data(), W.data(), w32.size());
  std::vector<float> wq(w32.size());  // the values as stored
  to_f32(wt, W.data(), wq.data(), wq.size());
  const std::vector<float> x = test::random_vec(size_t(M) * C, seed + 1);
  const std::vector<float> bias = test::random_vec(size_t(O), seed + 2);
  const int ldo = O + 3;
  const float sentinel = 12345.0f;
  std::vector<float> y(size_t(M) * ldo, sentinel);
  kernel(y.data(), ldo, x.data(), W.data(), wt, with_bias ? bias.data() : nullptr, M, C, O);
  for (int m = 0; m < M; m++) {
    for (int o = 0; o < O; o++) {
      double ref = with_bias ? bias[size_t(o)] : 0.0, mag = std::fabs(ref);
      for (int c = 0; c < C; c++) {
        const double p = double(wq[size_t(o) * C + c]) * x[size_t(m) * C + c];
        ref += p;
        mag += std::fabs(p);
      }
      const double got = y[size_t(m) * ldo + o];
      ASSERT_NEAR(got, ref, 1e-6 * mag + 1e-6 * std::fabs(ref))
          << dtype_name(wt) << " M=" << M << " C=" << C << " O=" << O << " at (" << m << "," << o << ")";
    }
    for (int o = O; o < ldo; o++) ASSERT_EQ(y[size_t(m) * ldo + o], sentinel) << "wrote past O at row " << m;
  }
}

const int kSizes[][2] = {{1, 1}, {3, 15}, {4, 16}, {5, 17}, {7, 31}, {8, 32}, {9, 33}, {13, 100}, {33, 47}, {6, 0}};

TEST(SmallMKernel, MatchesDoubleReferenceOnOddSizes) {
  // Rows and columns that are not multiples of the 4-row blocks or 16-lane vectors, M = 1 past
  // the forward's threshold, all three storage dtypes, with and without bias.
  uint32_t seed = 1;
  for (DType wt : {DType::F32, DType::BF16, DType::F16})
    for (int M = 1; M <= kernels::kSmallMMax + 5; M++)
      for (auto& oc : kSizes) {
        check_kernel(linear_small_m, wt, M, oc[1], oc[0], seed % 2 == 0, seed);
        seed++;
      }
}

TEST(SmallMKernel, PortableKernelMatchesDoubleReference) {
  // The scalar kernel is what a build without AVX-512 runs: tested here on every build.
  uint32_t seed = 100;
  for (DType wt : {DType::F32, DType::BF16, DType::F16})
    for (int M : {1, 2, 3, 5, kernels::kSmallMMax})
      for (auto& oc : kSizes) {
        check_kernel(linear_small_m_scalar, wt, M, oc[1], oc[0], seed % 2 == 1, seed);
        seed++;
      }
}

TEST(SmallMKernel, ThreadsSplitRowsWithoutGapsOrOverlap) {
  // Large enough for the parallel region (O*C >= 2^16); 2 threads each take a contiguous half.
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  check_kernel(linear_small_m, DType::BF16, 3, 230, 301, true, 7);
  check_kernel(linear_small_m, DType::F16, 1, 1031, 67, false, 8);
  check_kernel(linear_small_m, DType::F32, 2, 515, 130, true, 9);
  omp_set_num_threads(saved);
}

// max |a - b| / max |b| over a row of logits.
double relative_diff(const float* a, const float* b, size_t n) {
  double d = 0, mx = 0;
  for (size_t i = 0; i < n; i++) {
    d = std::max(d, std::fabs(double(a[i]) - b[i]));
    mx = std::max(mx, std::fabs(double(b[i])));
  }
  return d / mx;
}

// The forward with weights read as stored equals the convert-then-sgemm forward (small_m_max 0)
// to 1e-5 relative: the weights are exact in fp32 on both paths, only summation order differs.
// Prefill of a few tokens, then decode steps through the KV cache; and a longer prefill (the
// converting path on both) followed by decode.
void check_forward_paths(const Model& m) {
  const int V = m.cfg.vocab;
  for (int prefill : {5, kernels::kSmallMMax + 4}) {
    Runner stored(m), converted(m);
    converted.set_small_m_max(0);
    KVCache cs(m, 1, 64), cc(m, 1, 64);
    std::vector<int32_t> tokens(static_cast<size_t>(prefill));
    for (int i = 0; i < prefill; i++) tokens[size_t(i)] = int32_t((i * 37 + 11) % V);
    std::vector<float> ls(size_t(prefill) * V), lc(size_t(prefill) * V);
    stored.forward(tokens.data(), 1, prefill, ls.data(), &cs);
    converted.forward(tokens.data(), 1, prefill, lc.data(), &cc);
    for (int t = 0; t < prefill; t++)
      EXPECT_LE(relative_diff(ls.data() + size_t(t) * V, lc.data() + size_t(t) * V, size_t(V)), 1e-5)
          << dtype_name(m.storage_dtype()) << " prefill " << prefill << " position " << t;
    for (int step = 0; step < 6; step++) {
      int32_t tok = int32_t((step * 13 + 3) % V);
      stored.forward(&tok, 1, 1, ls.data(), &cs, true);
      converted.forward(&tok, 1, 1, lc.data(), &cc, true);
      EXPECT_LE(relative_diff(ls.data(), lc.data(), size_t(V)), 1e-5)
          << dtype_name(m.storage_dtype()) << " prefill " << prefill << " decode step " << step;
    }
  }
}

TEST(SmallMForward, StoredWeightsMatchConvertedPathAllDtypes) {
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    // Sizes off the kernel's blocks: hidden 40, q 5x8, GQA kv 1x8, MLP 52, vocab 70.
    auto spec = test::RandomModelSpec::uniform(2, 5, 1, 52);
    spec.hidden = 40;
    spec.vocab = 70;
    spec.dtype = dt;
    check_forward_paths(test::make_random_model(spec));
  }
  // q/k/v biases (qwen2), tied embeddings, ragged layers.
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 36);
  spec.model_type = "qwen2";
  spec.tied = true;
  spec.layers[1].d_ff = 20;
  spec.dtype = DType::BF16;
  check_forward_paths(test::make_random_model(spec));
}

}  // namespace
}  // namespace llmprune
