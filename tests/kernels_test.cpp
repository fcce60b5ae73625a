// Every kernel against a plain scalar double-precision reference, and every backward against
// central finite differences (in double) of that reference, on tiny shapes including GQA.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "kernels/ops.h"
#include "test_util.h"

namespace llmprune {
namespace {

namespace k = kernels;
using Vec = std::vector<double>;
using Fn = std::function<Vec(const Vec&)>;

std::vector<float> to_f(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }
Vec to_d(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }
Vec rand_d(size_t n, uint32_t seed, double scale = 1.0) { return to_d(test::random_vec(n, seed, float(scale))); }

::testing::AssertionResult close(const std::vector<float>& got, const Vec& ref, double atol, double rtol) {
  if (got.size() != ref.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < got.size(); i++) {
    double err = std::abs(got[i] - ref[i]) - (atol + rtol * std::abs(ref[i]));
    if (err > worst) { worst = err; wi = i; }
  }
  if (worst > 0)
    return ::testing::AssertionFailure() << "element " << wi << ": got " << got[wi] << ", ref " << ref[wi];
  return ::testing::AssertionSuccess();
}

// d/dx of L(x) = sum(dout . f(x)) by central differences.
Vec numeric_grad(const Fn& f, const Vec& x, const Vec& dout, double h = 1e-5) {
  Vec g(x.size());
  Vec xp = x;
  for (size_t i = 0; i < x.size(); i++) {
    xp[i] = x[i] + h;
    Vec a = f(xp);
    xp[i] = x[i] - h;
    Vec b = f(xp);
    xp[i] = x[i];
    double s = 0;
    for (size_t j = 0; j < a.size(); j++) s += dout[j] * (a[j] - b[j]);
    g[i] = s / (2 * h);
  }
  return g;
}

// ---- scalar references (double) ----
Vec ref_linear(const Vec& x, const Vec& W, const Vec* b, int N, int C, int O) {
  Vec y(size_t(N) * O);
  for (int n = 0; n < N; n++)
    for (int o = 0; o < O; o++) {
      double s = b ? (*b)[size_t(o)] : 0;
      for (int c = 0; c < C; c++) s += x[size_t(n) * C + c] * W[size_t(o) * C + c];
      y[size_t(n) * O + o] = s;
    }
  return y;
}
Vec ref_rmsnorm(const Vec& x, const Vec& w, int N, int C, double eps) {
  Vec y(x.size());
  for (int n = 0; n < N; n++) {
    double ss = 0;
    for (int c = 0; c < C; c++) ss += x[size_t(n) * C + c] * x[size_t(n) * C + c];
    double r = 1 / std::sqrt(ss / C + eps);
    for (int c = 0; c < C; c++) y[size_t(n) * C + c] = x[size_t(n) * C + c] * r * w[size_t(c)];
  }
  return y;
}
Vec ref_rope(const Vec& x, const std::vector<int32_t>& pos, const std::vector<float>& cs, const std::vector<float>& sn, int N,
             int H, int D) {
  Vec y = x;
  int half = D / 2;
  for (int n = 0; n < N; n++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < D; i++) {
        size_t base = (size_t(n) * H + h) * D;
        int fi = i % half;
        double c = cs[size_t(pos[size_t(n)]) * half + fi], s = sn[size_t(pos[size_t(n)]) * half + fi];
        double rot = i < half ? -x[base + i + half] : x[base + i - half];
        y[base + i] = x[base + i] * c + rot * s;
      }
  return y;
}
// prefix (optional, [B]): query i of sequence b sees key j when j <= i or j < prefix[b] (GLM v1).
Vec ref_attention(const Vec& q, const Vec& kk, const Vec& v, int B, int T, int H, int KVH, int D,
                  const std::vector<int32_t>* prefix = nullptr) {
  Vec out(size_t(B) * T * H * D, 0.0);
  int rep = H / KVH;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < T; i++) {
        int g = h / rep;
        const int last = prefix ? std::min(T - 1, std::max(i, (*prefix)[size_t(b)] - 1)) : i;
        std::vector<double> s(size_t(last) + 1);
        double mx = -1e300;
        for (int j = 0; j <= last; j++) {
          double d = 0;
          for (int e = 0; e < D; e++)
            d += q[((size_t(b) * T + i) * H + h) * D + e] * kk[((size_t(b) * T + j) * KVH + g) * D + e];
          s[size_t(j)] = d / std::sqrt(double(D));
          mx = std::max(mx, s[size_t(j)]);
        }
        double sum = 0;
        for (auto& x : s) { x = std::exp(x - mx); sum += x; }
        for (int e = 0; e < D; e++) {
          double acc = 0;
          for (int j = 0; j <= last; j++) acc += s[size_t(j)] / sum * v[((size_t(b) * T + j) * KVH + g) * D + e];
          out[((size_t(b) * T + i) * H + h) * D + e] = acc;
        }
      }
  return out;
}

TEST(Kernels, LinearForwardBackward) {
  const int N = 3, C = 5, O = 4;
  Vec x = rand_d(N * C, 1), W = rand_d(O * C, 2), b = rand_d(O, 3), dout = rand_d(N * O, 4);
  std::vector<float> y(N * O);
  auto xf = to_f(x), Wf = to_f(W), bf = to_f(b), df = to_f(dout);
  k::linear_forward(y.data(), xf.data(), Wf.data(), bf.data(), N, C, O);
  EXPECT_TRUE(close(y, ref_linear(x, W, &b, N, C, O), 1e-5, 1e-5));
  std::vector<float> dx(N * C, 0), dW(O * C, 0), db(O, 0);
  k::linear_backward(dx.data(), dW.data(), db.data(), df.data(), xf.data(), Wf.data(), N, C, O);
  EXPECT_TRUE(close(dx, numeric_grad([&](const Vec& xx) { return ref_linear(xx, W, &b, N, C, O); }, x, dout), 1e-4, 1e-4));
  EXPECT_TRUE(close(dW, numeric_grad([&](const Vec& ww) { return ref_linear(x, ww, &b, N, C, O); }, W, dout), 1e-4, 1e-4));
  EXPECT_TRUE(close(db, numeric_grad([&](const Vec& bb) { return ref_linear(x, W, &bb, N, C, O); }, b, dout), 1e-4, 1e-4));
}

TEST(Kernels, LinearBackwardAccumulates) {
  const int N = 2, C = 3, O = 2;
  auto x = test::random_vec(N * C, 5), W = test::random_vec(O * C, 6), d = test::random_vec(N * O, 7);
  std::vector<float> dW1(O * C, 0), dW2(O * C, 0);
  k::linear_backward(nullptr, dW1.data(), nullptr, d.data(), x.data(), W.data(), N, C, O);
  k::linear_backward(nullptr, dW2.data(), nullptr, d.data(), x.data(), W.data(), N, C, O);
  k::linear_backward(nullptr, dW2.data(), nullptr, d.data(), x.data(), W.data(), N, C, O);
  for (int i = 0; i < O * C; i++) EXPECT_NEAR(dW2[size_t(i)], 2 * dW1[size_t(i)], 1e-5);
}

TEST(Kernels, RMSNormForwardBackward) {
  const int N = 3, C = 7;
  const double eps = 1e-5;
  Vec x = rand_d(N * C, 11), w = rand_d(C, 12), dout = rand_d(N * C, 13);
  auto xf = to_f(x), wf = to_f(w), df = to_f(dout);
  std::vector<float> y(N * C), rstd(N);
  k::rmsnorm_forward(y.data(), rstd.data(), xf.data(), wf.data(), N, C, float(eps));
  EXPECT_TRUE(close(y, ref_rmsnorm(x, w, N, C, eps), 1e-5, 1e-5));
  std::vector<float> dx(N * C, 0), dw(C, 0);
  k::rmsnorm_backward(dx.data(), dw.data(), df.data(), xf.data(), wf.data(), rstd.data(), N, C);
  EXPECT_TRUE(close(dx, numeric_grad([&](const Vec& xx) { return ref_rmsnorm(xx, w, N, C, eps); }, x, dout), 1e-4, 1e-4));
  EXPECT_TRUE(close(dw, numeric_grad([&](const Vec& ww) { return ref_rmsnorm(x, ww, N, C, eps); }, w, dout), 1e-4, 1e-4));
}

// cos/sin tables [maxp, rot/2] of angle p * 10000^(-2i/rot).
void rope_tables(int maxp, int rot, std::vector<float>& cs, std::vector<float>& sn) {
  const int half = rot / 2;
  cs.resize(size_t(maxp * half));
  sn.resize(size_t(maxp * half));
  for (int p = 0; p < maxp; p++)
    for (int i = 0; i < half; i++) {
      float ang = float(p) * std::pow(10000.0f, -2.0f * i / rot);
      cs[size_t(p * half + i)] = std::cos(ang);
      sn[size_t(p * half + i)] = std::sin(ang);
    }
}

TEST(Kernels, RopeForwardBackward) {
  const int N = 4, H = 2, D = 6, maxp = 10;
  std::vector<float> cs, sn;
  rope_tables(maxp, D, cs, sn);
  std::vector<int32_t> pos = {0, 3, 7, 9};
  Vec x = rand_d(N * H * D, 21), dout = rand_d(N * H * D, 22);
  auto xf = to_f(x);
  k::rope_forward(xf.data(), pos.data(), cs.data(), sn.data(), N, H, D);
  EXPECT_TRUE(close(xf, ref_rope(x, pos, cs, sn, N, H, D), 1e-5, 1e-5));
  auto g = to_f(dout);
  k::rope_backward(g.data(), pos.data(), cs.data(), sn.data(), N, H, D);
  EXPECT_TRUE(close(g, numeric_grad([&](const Vec& xx) { return ref_rope(xx, pos, cs, sn, N, H, D); }, x, dout), 1e-4, 1e-4));
}

// Consecutive-pair partial rotary (ChatGLM): dims (2i, 2i+1), i < rot/2, rotate; rot..D-1 pass.
Vec ref_rope_pairs(const Vec& x, const std::vector<int32_t>& pos, const std::vector<float>& cs, const std::vector<float>& sn,
                   int N, int H, int D, int rot) {
  Vec y = x;
  const int half = rot / 2;
  for (int n = 0; n < N; n++)
    for (int h = 0; h < H; h++)
      for (int i = 0; i < half; i++) {
        size_t base = (size_t(n) * H + h) * D;
        double c = cs[size_t(pos[size_t(n)]) * half + i], s = sn[size_t(pos[size_t(n)]) * half + i];
        double a = x[base + 2 * i], b = x[base + 2 * i + 1];
        y[base + 2 * i] = a * c - b * s;
        y[base + 2 * i + 1] = b * c + a * s;
      }
  return y;
}

TEST(Kernels, RopePairsPartialForwardBackward) {
  const int N = 4, H = 3, D = 8, rot = 4, maxp = 10;
  std::vector<float> cs, sn;
  rope_tables(maxp, rot, cs, sn);
  std::vector<int32_t> pos = {0, 2, 5, 9};
  Vec x = rand_d(N * H * D, 31), dout = rand_d(N * H * D, 32);
  auto xf = to_f(x);
  k::rope_pairs_forward(xf.data(), pos.data(), cs.data(), sn.data(), N, H, D, rot);
  Vec want = ref_rope_pairs(x, pos, cs, sn, N, H, D, rot);
  EXPECT_TRUE(close(xf, want, 1e-5, 1e-5));
  // The pass-through half is untouched, the rotated one moved (the test can tell the two apart).
  for (int h = 0; h < H; h++) {
    EXPECT_EQ(xf[size_t(3 * H + h) * D + rot], float(x[size_t(3 * H + h) * D + rot]));
    EXPECT_NE(xf[size_t(3 * H + h) * D], float(x[size_t(3 * H + h) * D]));
  }
  auto g = to_f(dout);
  k::rope_pairs_backward(g.data(), pos.data(), cs.data(), sn.data(), N, H, D, rot);
  EXPECT_TRUE(close(g, numeric_grad([&](const Vec& xx) { return ref_rope_pairs(xx, pos, cs, sn, N, H, D, rot); }, x, dout), 1e-4, 1e-4));
}

Vec ref_layernorm(const Vec& x, const Vec& w, const Vec& b, int N, int C, double eps) {
  Vec y(x.size());
  for (int n = 0; n < N; n++) {
    double mu = 0, var = 0;
    for (int c = 0; c < C; c++) mu += x[size_t(n) * C + c] / C;
    for (int c = 0; c < C; c++) var += (x[size_t(n) * C + c] - mu) * (x[size_t(n) * C + c] - mu) / C;
    for (int c = 0; c < C; c++) y[size_t(n) * C + c] = (x[size_t(n) * C + c] - mu) / std::sqrt(var + eps) * w[size_t(c)] + b[size_t(c)];
  }
  return y;
}

TEST(Kernels, LayerNormForwardBackward) {
  const int N = 3, C = 7;
  const double eps = 1e-5;
  Vec x = rand_d(N * C, 14), w = rand_d(C, 15), b = rand_d(C, 16), dout = rand_d(N * C, 17);
  for (int c = 0; c < C; c++) x[size_t(C + c)] += 3.0;  // a row with a large mean
  auto xf = to_f(x), wf = to_f(w), bf = to_f(b), df = to_f(dout);
  std::vector<float> y(N * C), mean(N), rstd(N);
  k::layernorm_forward(y.data(), mean.data(), rstd.data(), xf.data(), wf.data(), bf.data(), N, C, float(eps));
  EXPECT_TRUE(close(y, ref_layernorm(x, w, b, N, C, eps), 1e-5, 1e-5));
  std::vector<float> dx(N * C, 0.5f), dw(C, 0.25f), db(C, -1.0f);  // accumulates onto what is there
  k::layernorm_backward(dx.data(), dw.data(), db.data(), df.data(), xf.data(), wf.data(), mean.data(), rstd.data(), N, C);
  Vec gx = numeric_grad([&](const Vec& xx) { return ref_layernorm(xx, w, b, N, C, eps); }, x, dout);
  Vec gw = numeric_grad([&](const Vec& ww) { return ref_layernorm(x, ww, b, N, C, eps); }, w, dout);
  Vec gb = numeric_grad([&](const Vec& bb) { return ref_layernorm(x, w, bb, N, C, eps); }, b, dout);
  for (auto& g : gx) g += 0.5;
  for (auto& g : gw) g += 0.25;
  for (auto& g : gb) g -= 1.0;
  EXPECT_TRUE(close(dx, gx, 1e-4, 1e-4));
  EXPECT_TRUE(close(dw, gw, 1e-4, 1e-4));
  EXPECT_TRUE(close(db, gb, 1e-4, 1e-4));
  // Without a bias the forward is the same minus b.
  std::vector<float> y0(N * C);
  k::layernorm_forward(y0.data(), nullptr, nullptr, xf.data(), wf.data(), nullptr, N, C, float(eps));
  for (int i = 0; i < N * C; i++) EXPECT_NEAR(y0[size_t(i)] + bf[size_t(i % C)], y[size_t(i)], 1e-6);
}

// GLM's 2D rotary: each half of a head is a rotate-half RoPE on D/2 dims, the first driven by
// the positions, the second by the block positions.
Vec ref_rope_2d(const Vec& x, const std::vector<int32_t>& pos, const std::vector<int32_t>& bpos, const std::vector<float>& cs,
                const std::vector<float>& sn, int N, int H, int D) {
  Vec y = x;
  const int R = D / 2, q = D / 4;
  for (int n = 0; n < N; n++)
    for (int h = 0; h < H; h++)
      for (int part = 0; part < 2; part++) {
        const int p = part ? bpos[size_t(n)] : pos[size_t(n)];
        const size_t base = (size_t(n) * H + h) * D + size_t(part) * R;
        for (int i = 0; i < R; i++) {
          const int fi = i % q;
          double c = cs[size_t(p) * q + fi], s = sn[size_t(p) * q + fi];
          double rot = i < q ? -x[base + i + q] : x[base + i - q];
          y[base + i] = x[base + i] * c + rot * s;
        }
      }
  return y;
}

TEST(Kernels, Rope2dForwardBackward) {
  const int N = 4, H = 3, D = 8, maxp = 10;
  std::vector<float> cs, sn;
  rope_tables(maxp, D / 2, cs, sn);
  std::vector<int32_t> pos = {0, 1, 2, 2}, bpos = {0, 0, 1, 5};
  Vec x = rand_d(N * H * D, 41), dout = rand_d(N * H * D, 42);
  auto xf = to_f(x);
  k::rope_2d_forward(xf.data(), pos.data(), bpos.data(), cs.data(), sn.data(), N, H, D);
  EXPECT_TRUE(close(xf, ref_rope_2d(x, pos, bpos, cs, sn, N, H, D), 1e-5, 1e-5));
  // Row 0 has both positions 0 (identity); row 3 moves both halves by different angles.
  for (int i = 0; i < H * D; i++) EXPECT_EQ(xf[size_t(i)], float(x[size_t(i)]));
  const auto swapped = ref_rope_2d(x, bpos, pos, cs, sn, N, H, D);
  EXPECT_FALSE(close(xf, swapped, 1e-5, 1e-5));
  auto g = to_f(dout);
  k::rope_2d_backward(g.data(), pos.data(), bpos.data(), cs.data(), sn.data(), N, H, D);
  EXPECT_TRUE(close(g, numeric_grad([&](const Vec& xx) { return ref_rope_2d(xx, pos, bpos, cs, sn, N, H, D); }, x, dout), 1e-4, 1e-4));
}

class AttentionTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(AttentionTest, ForwardBackward) {
  const auto [H, KVH] = GetParam();
  const int B = 2, T = 5, D = 4;
  Vec q = rand_d(size_t(B) * T * H * D, 31), kk = rand_d(size_t(B) * T * KVH * D, 32), v = rand_d(size_t(B) * T * KVH * D, 33);
  Vec dout = rand_d(size_t(B) * T * H * D, 34);
  auto qf = to_f(q), kf = to_f(kk), vf = to_f(v), df = to_f(dout);
  std::vector<float> out(q.size()), probs(size_t(B) * H * T * T);
  k::attention_forward(out.data(), probs.data(), qf.data(), kf.data(), vf.data(), B, T, T, 0, H, KVH, D, KVH * D);
  EXPECT_TRUE(close(out, ref_attention(q, kk, v, B, T, H, KVH, D), 1e-5, 1e-4));
  std::vector<float> dq(q.size(), 0), dk(kk.size(), 0), dv(v.size(), 0);
  k::attention_backward(dq.data(), dk.data(), dv.data(), df.data(), qf.data(), kf.data(), vf.data(), probs.data(), B, T, H, KVH, D);
  EXPECT_TRUE(close(dq, numeric_grad([&](const Vec& x) { return ref_attention(x, kk, v, B, T, H, KVH, D); }, q, dout), 1e-4, 1e-3));
  EXPECT_TRUE(close(dk, numeric_grad([&](const Vec& x) { return ref_attention(q, x, v, B, T, H, KVH, D); }, kk, dout), 1e-4, 1e-3));
  EXPECT_TRUE(close(dv, numeric_grad([&](const Vec& x) { return ref_attention(q, kk, x, B, T, H, KVH, D); }, v, dout), 1e-4, 1e-3));
}

INSTANTIATE_TEST_SUITE_P(MhaAndGqa, AttentionTest, ::testing::Values(std::make_tuple(2, 2), std::make_tuple(4, 2), std::make_tuple(4, 1)));

// GLM v1's prefix-bidirectional mask: sequence 0 opens its first 3 keys to every query, sequence
// 1 none (plain causal); a prefix of 1 is causal too (key 0 is always visible).
TEST(Kernels, AttentionPrefixMaskForwardBackward) {
  const int B = 3, T = 5, H = 4, KVH = 2, D = 4;
  const std::vector<int32_t> prefix = {3, 0, 1};
  Vec q = rand_d(size_t(B) * T * H * D, 35), kk = rand_d(size_t(B) * T * KVH * D, 36), v = rand_d(size_t(B) * T * KVH * D, 37);
  Vec dout = rand_d(size_t(B) * T * H * D, 38);
  auto qf = to_f(q), kf = to_f(kk), vf = to_f(v), df = to_f(dout);
  std::vector<float> out(q.size()), probs(size_t(B) * H * T * T), causal(q.size());
  k::attention_forward(out.data(), probs.data(), qf.data(), kf.data(), vf.data(), B, T, T, 0, H, KVH, D, KVH * D, prefix.data());
  EXPECT_TRUE(close(out, ref_attention(q, kk, v, B, T, H, KVH, D, &prefix), 1e-5, 1e-4));
  // The mask matters: query 0 of sequence 0 differs from the causal pass, sequences 1 and 2 do not.
  k::attention_forward(causal.data(), nullptr, qf.data(), kf.data(), vf.data(), B, T, T, 0, H, KVH, D, KVH * D);
  EXPECT_GT(std::abs(out[0] - causal[0]), 1e-3);
  for (size_t i = size_t(T) * H * D; i < out.size(); i++) ASSERT_EQ(out[i], causal[i]);
  std::vector<float> dq(q.size(), 0), dk(kk.size(), 0), dv(v.size(), 0);
  k::attention_backward(dq.data(), dk.data(), dv.data(), df.data(), qf.data(), kf.data(), vf.data(), probs.data(), B, T, H, KVH, D,
                        prefix.data());
  auto f = [&](const Vec& qq, const Vec& kx, const Vec& vx) { return ref_attention(qq, kx, vx, B, T, H, KVH, D, &prefix); };
  EXPECT_TRUE(close(dq, numeric_grad([&](const Vec& x) { return f(x, kk, v); }, q, dout), 1e-4, 1e-3));
  EXPECT_TRUE(close(dk, numeric_grad([&](const Vec& x) { return f(q, x, v); }, kk, dout), 1e-4, 1e-3));
  EXPECT_TRUE(close(dv, numeric_grad([&](const Vec& x) { return f(q, kk, x); }, v, dout), 1e-4, 1e-3));
}

TEST(Kernels, AttentionWithCacheMatchesFullSequence) {
  // Decoding token by token through a KV cache must equal the full causal pass.
  const int T = 6, H = 4, KVH = 2, D = 4, KD = KVH * D, cap = 8;
  auto q = test::random_vec(size_t(T) * H * D, 41), kk = test::random_vec(size_t(T) * KD, 42), v = test::random_vec(size_t(T) * KD, 43);
  std::vector<float> full(q.size());
  k::attention_forward(full.data(), nullptr, q.data(), kk.data(), v.data(), 1, T, T, 0, H, KVH, D, KD);
  std::vector<float> ck(size_t(cap) * KD), cv(size_t(cap) * KD), step(size_t(H) * D);
  for (int t = 0; t < T; t++) {
    std::copy(kk.begin() + t * KD, kk.begin() + (t + 1) * KD, ck.begin() + t * KD);
    std::copy(v.begin() + t * KD, v.begin() + (t + 1) * KD, cv.begin() + t * KD);
    k::attention_forward(step.data(), nullptr, q.data() + size_t(t) * H * D, ck.data(), cv.data(), 1, 1, t + 1, t, H, KVH, D, KD);
    for (int i = 0; i < H * D; i++) EXPECT_NEAR(step[size_t(i)], full[size_t(t) * H * D + i], 1e-5);
  }
}

Vec ref_swiglu(const Vec& g, const Vec& u) {
  Vec h(g.size());
  for (size_t i = 0; i < g.size(); i++) h[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  return h;
}

TEST(Kernels, SwiGLUForwardBackward) {
  const size_t n = 17;
  Vec g = rand_d(n, 51, 2.0), u = rand_d(n, 52), dout = rand_d(n, 53);
  auto gf = to_f(g), uf = to_f(u), df = to_f(dout);
  std::vector<float> h(n), dg(n, 0), du(n, 0);
  k::swiglu_forward(h.data(), gf.data(), uf.data(), n);
  EXPECT_TRUE(close(h, ref_swiglu(g, u), 1e-6, 1e-5));
  k::swiglu_backward(dg.data(), du.data(), df.data(), gf.data(), uf.data(), n);
  EXPECT_TRUE(close(dg, numeric_grad([&](const Vec& x) { return ref_swiglu(x, u); }, g, dout), 1e-4, 1e-4));
  EXPECT_TRUE(close(du, numeric_grad([&](const Vec& x) { return ref_swiglu(g, x); }, u, dout), 1e-4, 1e-4));
}

Vec ref_gelu_tanh(const Vec& x) {
  Vec h(x.size());
  for (size_t i = 0; i < x.size(); i++)
    h[i] = 0.5 * x[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  return h;
}

TEST(Kernels, GeluTanhForwardBackward) {
  const size_t n = 23;
  Vec x = rand_d(n, 54, 4.0), dout = rand_d(n, 55);
  auto xf = to_f(x), df = to_f(dout);
  std::vector<float> h(n), dx(n, 0);
  k::gelu_tanh_forward(h.data(), xf.data(), n);
  EXPECT_TRUE(close(h, ref_gelu_tanh(x), 1e-6, 1e-5));
  k::gelu_tanh_backward(dx.data(), df.data(), xf.data(), n);
  EXPECT_TRUE(close(dx, numeric_grad(ref_gelu_tanh, x, dout), 1e-4, 1e-4));
}

// A block's residual update: x = scale * xn + y (GLM v1) or x += y; the backward of the first
// into xn is add_scaled (dxn += scale * dx), checked against central differences.
TEST(Kernels, ResidualUpdatesAndTheirBackward) {
  const size_t n = 37;
  Vec x = rand_d(n, 56), xn = rand_d(n, 57), y = rand_d(n, 58), dout = rand_d(n, 59);
  const double scale = 7.483314773547883;  // sqrt(2 * 28)
  auto xf = to_f(x), xnf = to_f(xn), yf = to_f(y), df = to_f(dout);
  auto ref_normed = [&](const Vec& a) {
    Vec out(n);
    for (size_t i = 0; i < n; i++) out[i] = scale * a[i] + y[i];
    return out;
  };
  std::vector<float> got = xf;
  k::residual_from_normed(got.data(), xnf.data(), float(scale), yf.data(), n);
  EXPECT_TRUE(close(got, ref_normed(xn), 1e-5, 1e-6));
  std::vector<float> dxn(n, 0.5f);  // accumulates onto what is there
  k::add_scaled(dxn.data(), df.data(), float(scale), n);
  Vec want = numeric_grad(ref_normed, xn, dout);
  for (double& v : want) v += 0.5;
  EXPECT_TRUE(close(dxn, want, 1e-4, 1e-4));
  got = xf;
  k::residual_add(got.data(), yf.data(), n);
  Vec sum(n);
  for (size_t i = 0; i < n; i++) sum[i] = x[i] + y[i];
  EXPECT_TRUE(close(got, sum, 1e-6, 1e-6));
}

TEST(Kernels, SampleStatsAccumulateMeanAndFisher) {
  const size_t n = 29;
  const int B = 3;
  std::vector<Vec> grads;
  const double scale[B] = {3.0, 2.5, 4.0};
  std::vector<float> g(n, 0), a(n, 0);
  for (int j = 0; j < B; j++) {
    grads.push_back(rand_d(n, 60 + uint32_t(j)));
    auto gj = to_f(grads.back());
    k::accumulate_sample_stats(g.data(), a.data(), gj.data(), float(scale[j]), 1.0f / B, n);
  }
  Vec mean(n, 0), fisher(n, 0);
  for (int j = 0; j < B; j++)
    for (size_t i = 0; i < n; i++) {
      const double v = scale[j] * grads[size_t(j)][i];
      mean[i] += v / B;
      fisher[i] += v * v / B;
    }
  EXPECT_TRUE(close(g, mean, 1e-6, 1e-5));
  EXPECT_TRUE(close(a, fisher, 1e-6, 1e-5));
}

TEST(Kernels, AllFiniteFindsNaNAndInfAnywhere) {
  for (size_t n : {size_t(1), size_t(13), size_t(70000)}) {  // 70000: the threaded path
    std::vector<float> x(n, 1.0f);
    EXPECT_TRUE(k::all_finite(x.data(), n));
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      x[n - 1] = bad;
      EXPECT_FALSE(k::all_finite(x.data(), n)) << n << " " << bad;
      x[n - 1] = 1.0f;
      x[n / 2] = bad;
      EXPECT_FALSE(k::all_finite(x.data(), n)) << n << " " << bad;
      x[n / 2] = 1.0f;
    }
    x[0] = 3.4e38f;  // the largest floats are finite
    EXPECT_TRUE(k::all_finite(x.data(), n));
  }
  EXPECT_TRUE(k::all_finite(nullptr, 0));
}

TEST(Kernels, EmbeddingForwardBackward) {
  const int V = 6, C = 3, N = 5;
  std::vector<int32_t> tok = {1, 4, 1, 0, 5};
  Vec table = rand_d(V * C, 61), dout = rand_d(N * C, 62);
  auto tf = to_f(table), df = to_f(dout);
  auto ref = [&](const Vec& t) {
    Vec y(size_t(N) * C);
    for (int n = 0; n < N; n++)
      for (int c = 0; c < C; c++) y[size_t(n) * C + c] = t[size_t(tok[size_t(n)]) * C + c];
    return y;
  };
  std::vector<float> y(N * C), dt(V * C, 0);
  k::embedding_forward(y.data(), tok.data(), tf.data(), N, C);
  EXPECT_TRUE(close(y, ref(table), 0, 0));
  k::embedding_backward(dt.data(), df.data(), tok.data(), N, C);
  EXPECT_TRUE(close(dt, numeric_grad(ref, table, dout), 1e-5, 1e-5));
}

TEST(Kernels, CrossEntropyForwardBackward) {
  const int N = 4, V = 9;
  std::vector<int32_t> tgt = {3, -1, 8, 0};
  Vec logits = rand_d(N * V, 71, 3.0);
  auto lf = to_f(logits);
  auto ref = [&](const Vec& x) {
    Vec l(N, 0.0);
    for (int n = 0; n < N; n++) {
      if (tgt[size_t(n)] < 0) continue;
      double mx = -1e300, s = 0;
      for (int j = 0; j < V; j++) mx = std::max(mx, x[size_t(n) * V + j]);
      for (int j = 0; j < V; j++) s += std::exp(x[size_t(n) * V + j] - mx);
      l[size_t(n)] = std::log(s) + mx - x[size_t(n) * V + tgt[size_t(n)]];
    }
    return l;
  };
  std::vector<float> losses(N);
  k::cross_entropy_forward(losses.data(), lf.data(), tgt.data(), N, V);
  EXPECT_TRUE(close(losses, ref(logits), 1e-5, 1e-5));
  const float scale = 1.0f / 3;
  std::vector<float> dl(N * V);
  k::cross_entropy_backward(dl.data(), lf.data(), tgt.data(), N, V, scale);
  Vec dout(N, scale);
  EXPECT_TRUE(close(dl, numeric_grad(ref, logits, dout), 1e-5, 1e-4));
}

TEST(Kernels, LogSoftmaxRowsSumToOne) {
  auto x = test::random_vec(3 * 11, 81, 4.0f);
  std::vector<float> y(x.size());
  k::log_softmax(y.data(), x.data(), 3, 11);
  for (int n = 0; n < 3; n++) {
    double s = 0;
    for (int j = 0; j < 11; j++) s += std::exp(double(y[size_t(n * 11 + j)]));
    EXPECT_NEAR(s, 1.0, 1e-5);
  }
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

TEST(Kernels, PerSampleWeightGradStatsMatchNaive) {
  const int B = 3, T = 4, C = 37, O = 300;  // O spans several row blocks
  auto dout = test::random_vec(size_t(B) * T * O, 91), inp = test::random_vec(size_t(B) * T * C, 92);
  std::vector<float> scale = {3.0f, 1.5f, 0.5f};
  std::vector<float> g(size_t(O) * C, 0), a(size_t(O) * C, 0);
  kernels::linear_weight_grad_stats(g.data(), a.data(), dout.data(), inp.data(), B, T, C, O, scale.data());
  for (int o = 0; o < O; o += 7)
    for (int c = 0; c < C; c += 3) {
      double gs = 0, as = 0;
      for (int j = 0; j < B; j++) {
        double d = 0;
        for (int t = 0; t < T; t++) d += double(dout[(size_t(j) * T + t) * O + o]) * inp[(size_t(j) * T + t) * C + c];
        d *= scale[size_t(j)];
        gs += d / B;
        as += d * d / B;
      }
      EXPECT_NEAR(g[size_t(o) * C + c], gs, 1e-4 + 1e-4 * std::abs(gs));
      EXPECT_NEAR(a[size_t(o) * C + c], as, 1e-4 + 1e-4 * std::abs(as));
    }
}

}  // namespace
}  // namespace llmprune
