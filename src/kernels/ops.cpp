#include "kernels/ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace llmprune::kernels {

// Small problems (decode steps) run serially: a parallel region costs more than it saves there,
// and much more when cores are oversubscribed.
static constexpr size_t kParallelMin = 1 << 15;


void linear_forward(float* out, const float* inp, const float* W, const float* bias, int N, int C, int O) {
  if (N == 0 || O == 0) return;
  if (C == 0) {
    std::memset(out, 0, sizeof(float) * size_t(N) * size_t(O));
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, O, C, 1.0f, inp, C, W, C, 0.0f, out, O);
  }
  if (bias) {
#pragma omp parallel for if (size_t(N) * O > kParallelMin)
    for (int n = 0; n < N; n++)
      for (int o = 0; o < O; o++) out[size_t(n) * O + o] += bias[o];
  }
}

void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

void linear_backward(float* dinp, float* dW, float* dbias, const float* dout, const float* inp, const float* W,
                     int N, int C, int O) {
  if (N == 0 || O == 0 || C == 0) return;
  if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, O, 1.0f, dout, O, W, C, 1.0f, dinp, C);
  if (dW) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, C, N, 1.0f, dout, O, inp, C, 1.0f, dW, C);
  if (dbias) bias_backward(dbias, dout, N, O);
}

void bias_backward(float* dbias, const float* dout, int N, int O) {
#pragma omp parallel for if (size_t(N) * O > kParallelMin)
  for (int o = 0; o < O; o++) {
    float s = 0;
    for (int n = 0; n < N; n++) s += dout[size_t(n) * O + o];
    dbias[o] += s;
  }
}

void weight_grad_stats_blocked(float* g, float* a, int B, int C, int O,
                               const std::function<void(int j, int o0, int ob, float* tmp)>& block_grad) {
  if (O == 0 || C == 0) return;
  const int rows_per_block = std::max(8, (1 << 17) / std::max(C, 1));  // ~512 KiB of fp32 per block
  const int n_blocks = (O + rows_per_block - 1) / rows_per_block;
  const float invB = 1.0f / float(B);
#pragma omp parallel
  {
    std::vector<float> tmp(size_t(rows_per_block) * C);
#pragma omp for schedule(dynamic)
    for (int blk = 0; blk < n_blocks; blk++) {
      const int o0 = blk * rows_per_block, ob = std::min(rows_per_block, O - o0);
      float* gb = g + size_t(o0) * C;
      float* ab = a + size_t(o0) * C;
      for (int j = 0; j < B; j++) {
        block_grad(j, o0, ob, tmp.data());
        const size_t n = size_t(ob) * C;
        for (size_t i = 0; i < n; i++) {
          const float gj = tmp[i];
          gb[i] += gj * invB;
          ab[i] += gj * gj * invB;
        }
      }
    }
  }
}

void linear_weight_grad_stats(float* g, float* a, const float* dout, const float* inp, int B, int T, int C, int O,
                              const float* sample_scale) {
  if (T == 0) return;
  weight_grad_stats_blocked(g, a, B, C, O, [&](int j, int o0, int ob, float* tmp) {
    // tmp[ob, C] = s_j * dout_j[:, o0:o0+ob]^T . inp_j
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ob, C, T, sample_scale[j], dout + (size_t(j) * T) * O + o0, O,
                inp + size_t(j) * T * C, C, 0.0f, tmp, C);
  });
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int N, int C, float eps) {
#pragma omp parallel for if (size_t(N) * C > kParallelMin)
  for (int n = 0; n < N; n++) {
    const float* x = inp + size_t(n) * C;
    float* y = out + size_t(n) * C;
    double ss = 0;
    for (int c = 0; c < C; c++) ss += double(x[c]) * x[c];
    float r = float(1.0 / std::sqrt(ss / C + eps));
    if (rstd) rstd[n] = r;
    for (int c = 0; c < C; c++) y[c] = x[c] * r * w[c];
  }
}

void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w, const float* rstd,
                      int N, int C) {
  // y = x*r*w, r = (mean(x^2)+eps)^-1/2  =>  dx = r*(dy*w) - x * r^3/C * sum(dy*w*x)
  int nthreads = omp_get_max_threads();
  std::vector<float> dw_local(dw ? size_t(nthreads) * C : 0, 0.0f);
#pragma omp parallel
  {
    int tid = omp_get_thread_num();
    float* dwl = dw ? dw_local.data() + size_t(tid) * C : nullptr;
#pragma omp for
    for (int n = 0; n < N; n++) {
      const float* x = inp + size_t(n) * C;
      const float* dy = dout + size_t(n) * C;
      float r = rstd[n];
      double dot = 0;
      for (int c = 0; c < C; c++) dot += double(dy[c]) * w[c] * x[c];
      float coef = float(dot * r * r * r / C);
      if (dinp) {
        float* dx = dinp + size_t(n) * C;
        for (int c = 0; c < C; c++) dx[c] += r * dy[c] * w[c] - x[c] * coef;
      }
      if (dwl)
        for (int c = 0; c < C; c++) dwl[c] += dy[c] * x[c] * r;
    }
  }
  if (dw)
    for (int t = 0; t < nthreads; t++)
      for (int c = 0; c < C; c++) dw[c] += dw_local[size_t(t) * C + c];
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N,
                       int C, float eps) {
#pragma omp parallel for if (size_t(N) * C > kParallelMin)
  for (int n = 0; n < N; n++) {
    const float* x = inp + size_t(n) * C;
    float* y = out + size_t(n) * C;
    double s = 0;
    for (int c = 0; c < C; c++) s += x[c];
    const double mu = s / C;
    double ss = 0;
    for (int c = 0; c < C; c++) ss += (x[c] - mu) * (x[c] - mu);
    const float r = float(1.0 / std::sqrt(ss / C + eps)), m = float(mu);
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
    for (int c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + (b ? b[c] : 0.0f);
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
  // xhat = (x-mu)*r, y = xhat*w + b  =>  dx = r * (g - mean(g) - xhat * mean(g*xhat)), g = dy*w
  int nthreads = omp_get_max_threads();
  const bool params = dw || db;
  std::vector<float> local(params ? size_t(nthreads) * 2 * C : 0, 0.0f);
#pragma omp parallel
  {
    int tid = omp_get_thread_num();
    float* dwl = params ? local.data() + size_t(tid) * 2 * C : nullptr;
    float* dbl = params ? dwl + C : nullptr;
#pragma omp for
    for (int n = 0; n < N; n++) {
      const float* x = inp + size_t(n) * C;
      const float* dy = dout + size_t(n) * C;
      const float r = rstd[n], mu = mean[n];
      if (dinp) {
        double sg = 0, sgx = 0;
        for (int c = 0; c < C; c++) {
          const double g = double(dy[c]) * w[c];
          sg += g;
          sgx += g * (x[c] - mu) * r;
        }
        const float mg = float(sg / C), mgx = float(sgx / C);
        float* dx = dinp + size_t(n) * C;
        for (int c = 0; c < C; c++) dx[c] += r * (dy[c] * w[c] - mg - (x[c] - mu) * r * mgx);
      }
      if (params)
        for (int c = 0; c < C; c++) {
          dwl[c] += dy[c] * (x[c] - mu) * r;
          dbl[c] += dy[c];
        }
    }
  }
  if (params)
    for (int t = 0; t < nthreads; t++)
      for (int c = 0; c < C; c++) {
        if (dw) dw[c] += local[size_t(t) * 2 * C + c];
        if (db) db[c] += local[size_t(t) * 2 * C + C + c];
      }
}

// HF rotate-half: for i < D/2, (x_i, x_{i+D/2}) rotates by angle(p, i).
// Rotates pairs (a_i, b_i), i < rot/2, of each head by angle(pos, i): rotate-half pairs
// (i, i + rot/2) or consecutive pairs (2i, 2i+1). sign -1 rotates back (the backward).
static void rope_apply(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D,
                       int rot, bool consecutive, float sign) {
  const int half = rot / 2;
  const int a_step = consecutive ? 2 : 1, b_offset = consecutive ? 1 : half;
#pragma omp parallel for if (size_t(N) * n_heads * rot > kParallelMin)
  for (int n = 0; n < N; n++) {
    const float* c = cos_t + size_t(pos[n]) * half;
    const float* s = sin_t + size_t(pos[n]) * half;
    for (int h = 0; h < n_heads; h++) {
      float* v = x + (size_t(n) * n_heads + h) * D;
      for (int i = 0; i < half; i++) {
        const int ia = a_step * i, ib = ia + b_offset;
        float a = v[ia], b = v[ib];
        float si = sign * s[i];
        v[ia] = a * c[i] - b * si;
        v[ib] = b * c[i] + a * si;
      }
    }
  }
}

void rope_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D) {
  rope_apply(x, pos, cos_t, sin_t, N, n_heads, D, D, false, 1.0f);
}

void rope_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D) {
  rope_apply(dx, pos, cos_t, sin_t, N, n_heads, D, D, false, -1.0f);
}

void rope_pairs_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D,
                        int rot) {
  rope_apply(x, pos, cos_t, sin_t, N, n_heads, D, rot, true, 1.0f);
}

void rope_pairs_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads,
                         int D, int rot) {
  rope_apply(dx, pos, cos_t, sin_t, N, n_heads, D, rot, true, -1.0f);
}

void rope_2d_forward(float* x, const int32_t* pos, const int32_t* block_pos, const float* cos_t, const float* sin_t,
                     int N, int n_heads, int D) {
  rope_apply(x, pos, cos_t, sin_t, N, n_heads, D, D / 2, false, 1.0f);
  rope_apply(x + D / 2, block_pos, cos_t, sin_t, N, n_heads, D, D / 2, false, 1.0f);
}

void rope_2d_backward(float* dx, const int32_t* pos, const int32_t* block_pos, const float* cos_t, const float* sin_t,
                      int N, int n_heads, int D) {
  rope_apply(dx, pos, cos_t, sin_t, N, n_heads, D, D / 2, false, -1.0f);
  rope_apply(dx + D / 2, block_pos, cos_t, sin_t, N, n_heads, D, D / 2, false, -1.0f);
}

void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v, int B, int Tq,
                       int Tk, int pos0, int H, int KVH, int D, int kv_stride, const int32_t* prefix) {
  const int rep = H / KVH;
  const float scale = 1.0f / std::sqrt(float(D));
  const int qs = H * D;
#pragma omp parallel if (size_t(B) * H * Tq * Tk * D > kParallelMin)
  {
    std::vector<float> scores(size_t(Tq) * Tk);
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) {
        const int g = h / rep;
        const float* qb = q + size_t(b) * Tq * qs + size_t(h) * D;
        const float* kb = k + size_t(b) * Tk * kv_stride + size_t(g) * D;
        const float* vb = v + size_t(b) * Tk * kv_stride + size_t(g) * D;
        float* ob = out + size_t(b) * Tq * qs + size_t(h) * D;
        float* S = probs ? probs + (size_t(b) * H + h) * Tq * Tk : scores.data();
        // S[Tq,Tk] = scale * Q_h K_g^T (strided views, no copies)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, D, scale, qb, qs, kb, kv_stride, 0.0f, S, Tk);
        for (int i = 0; i < Tq; i++) {
          float* row = S + size_t(i) * Tk;
          // causal: keys 0..pos0+i; GLM's prefix: also every key before prefix[b]
          int last = std::min(Tk - 1, std::max(pos0 + i, prefix ? prefix[b] - 1 : 0));
          float mx = -INFINITY;
          for (int j = 0; j <= last; j++) mx = std::max(mx, row[j]);
          float sum = 0;
          for (int j = 0; j <= last; j++) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
          }
          float inv = 1.0f / sum;
          for (int j = 0; j <= last; j++) row[j] *= inv;
          for (int j = last + 1; j < Tk; j++) row[j] = 0.0f;
        }
        // O_h[Tq,D] = P V_g
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, D, Tk, 1.0f, S, Tk, vb, kv_stride, 0.0f, ob, qs);
      }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* probs, int B, int T, int H, int KVH, int D,
                        const int32_t* prefix) {
  const int rep = H / KVH;
  const float scale = 1.0f / std::sqrt(float(D));
  const int qs = H * D, ks = KVH * D;
  // Parallel over (b, kv group) so the query heads sharing a KV head accumulate dk/dv race-free.
#pragma omp parallel
  {
    std::vector<float> dP(size_t(T) * T);
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++)
      for (int g = 0; g < KVH; g++) {
        const float* kb = k + size_t(b) * T * ks + size_t(g) * D;
        const float* vb = v + size_t(b) * T * ks + size_t(g) * D;
        float* dkb = dk + size_t(b) * T * ks + size_t(g) * D;
        float* dvb = dv + size_t(b) * T * ks + size_t(g) * D;
        for (int h = g * rep; h < (g + 1) * rep; h++) {
          const float* P = probs + (size_t(b) * H + h) * T * T;
          const float* dob = dout + size_t(b) * T * qs + size_t(h) * D;
          const float* qb = q + size_t(b) * T * qs + size_t(h) * D;
          float* dqb = dq + size_t(b) * T * qs + size_t(h) * D;
          // dV += P^T dO ; dP = dO V^T
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, P, T, dob, qs, 1.0f, dvb, ks);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, dob, qs, vb, ks, 0.0f, dP.data(), T);
          // softmax backward: dS = P * (dP - sum_j P dP), then scaled
          for (int i = 0; i < T; i++) {
            const float* p = P + size_t(i) * T;
            float* d = dP.data() + size_t(i) * T;
            const int last = std::min(T - 1, std::max(i, prefix ? prefix[b] - 1 : 0));  // as in the forward
            float dot = 0;
            for (int j = 0; j <= last; j++) dot += p[j] * d[j];
            for (int j = 0; j <= last; j++) d[j] = p[j] * (d[j] - dot) * scale;
            for (int j = last + 1; j < T; j++) d[j] = 0.0f;
          }
          // dQ += dS K ; dK += dS^T Q
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, dP.data(), T, kb, ks, 1.0f, dqb, qs);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, dP.data(), T, qb, qs, 1.0f, dkb, ks);
        }
      }
  }
}

void swiglu_forward(float* h, const float* gate, const float* up, size_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    h[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, size_t n) {
#pragma omp parallel for if (n > 4096)
  for (size_t i = 0; i < n; i++) {
    float g = gate[i];
    float sig = 1.0f / (1.0f + std::exp(-g));
    float silu = g * sig;
    dup[i] += dh[i] * silu;
    dgate[i] += dh[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
  }
}

void gelu_tanh_forward(float* h, const float* x, size_t n) {
  constexpr float k0 = 0.7978845608028654f, k1 = 0.044715f;
#pragma omp parallel for if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) {
    const float v = x[i];
    h[i] = 0.5f * v * (1.0f + std::tanh(k0 * (v + k1 * v * v * v)));
  }
}

void gelu_tanh_backward(float* dx, const float* dh, const float* x, size_t n) {
  constexpr float k0 = 0.7978845608028654f, k1 = 0.044715f;
#pragma omp parallel for if (n > 4096)
  for (size_t i = 0; i < n; i++) {
    const float v = x[i];
    const float t = std::tanh(k0 * (v + k1 * v * v * v));
    dx[i] += dh[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * k0 * (1.0f + 3.0f * k1 * v * v));
  }
}

void residual_add(float* x, const float* y, size_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) x[i] += y[i];
}

void residual_from_normed(float* x, const float* xn, float scale, const float* y, size_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) x[i] = scale * xn[i] + y[i];
}

void add_scaled(float* dst, const float* src, float scale, size_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (size_t i = 0; i < n; i++) dst[i] += scale * src[i];
}

void accumulate_sample_stats(float* g, float* a, const float* grad_j, float scale, float inv_b, size_t n) {
#pragma omp parallel for if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    const float gj = grad_j[i] * scale;
    g[i] += gj * inv_b;
    a[i] += gj * gj * inv_b;
  }
}

bool all_finite(const float* x, size_t n) {
  // Inf / NaN have an all-ones exponent; an integer OR over the bits vectorises.
  uint32_t bad = 0;
#pragma omp parallel for reduction(| : bad) if (n > 65536)
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    std::memcpy(&u, x + i, 4);
    bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void embedding_forward(float* out, const int32_t* tokens, const float* table, int N, int C) {
#pragma omp parallel for if (size_t(N) * C > kParallelMin)
  for (int n = 0; n < N; n++) std::memcpy(out + size_t(n) * C, table + size_t(tokens[n]) * C, sizeof(float) * C);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N, int C) {
  // Sequential over rows: repeated tokens accumulate into the same row.
  for (int n = 0; n < N; n++) {
    float* d = dtable + size_t(tokens[n]) * C;
    const float* g = dout + size_t(n) * C;
    for (int c = 0; c < C; c++) d[c] += g[c];
  }
}

void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V) {
#pragma omp parallel for if (size_t(N) * V > kParallelMin)
  for (int n = 0; n < N; n++) {
    if (targets[n] < 0) {
      losses[n] = 0;
      continue;
    }
    const float* x = logits + size_t(n) * V;
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = std::max(mx, x[j]);
    double sum = 0;
    for (int j = 0; j < V; j++) sum += std::exp(double(x[j] - mx));
    losses[n] = float(std::log(sum) + mx - x[targets[n]]);
  }
}

void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets, int N, int V, float scale) {
#pragma omp parallel for if (size_t(N) * V > kParallelMin)
  for (int n = 0; n < N; n++) {
    float* d = dlogits + size_t(n) * V;
    if (targets[n] < 0) {
      std::memset(d, 0, sizeof(float) * V);
      continue;
    }
    const float* x = logits + size_t(n) * V;
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = std::max(mx, x[j]);
    double sum = 0;
    for (int j = 0; j < V; j++) sum += std::exp(double(x[j] - mx));
    float inv = float(1.0 / sum);
    for (int j = 0; j < V; j++) d[j] = std::exp(x[j] - mx) * inv * scale;
    d[targets[n]] -= scale;
  }
}

void log_softmax(float* out, const float* logits, int N, int V) {
#pragma omp parallel for if (size_t(N) * V > kParallelMin)
  for (int n = 0; n < N; n++) {
    const float* x = logits + size_t(n) * V;
    float* y = out + size_t(n) * V;
    float mx = -INFINITY;
    for (int j = 0; j < V; j++) mx = std::max(mx, x[j]);
    double sum = 0;
    for (int j = 0; j < V; j++) sum += std::exp(double(x[j] - mx));
    float lse = float(std::log(sum)) + mx;
    for (int j = 0; j < V; j++) y[j] = x[j] - lse;
  }
}

}  // namespace llmprune::kernels
