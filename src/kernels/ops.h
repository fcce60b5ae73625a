#pragma once
// Forward/backward kernel pairs. No model knowledge: plain fp32 arrays and sizes.
// Glossary: N = rows (batch B x sequence T), C = channels in, O = channels out,
// T = sequence length, H = query heads, KVH = key/value heads, D = head_dim, F = MLP width, V = vocab.
// Backward kernels ACCUMULATE into their gradient outputs (+=), like llm.c; callers zero them.
#include <cstddef>
#include <cstdint>
#include <functional>

namespace llmprune::kernels {

// out[N,O] = inp[N,C] . W[O,C]^T (+ bias[O]).                         (nn.Linear)
void linear_forward(float* out, const float* inp, const float* W, const float* bias, int N, int C, int O);
// C[M,N] (ldc) = A[M,K] (lda) . B[N,K]^T (ldb): a strided GEMM for callers that tile.
void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc);
// dinp[N,C] += dout . W ; dW[O,C] += dout^T . inp ; dbias[O] += sum_n dout. Null pointers skip.
void linear_backward(float* dinp, float* dW, float* dbias, const float* dout, const float* inp, const float* W,
                     int N, int C, int O);
// dbias[O] += sum over the N rows of dout[N,O] (the bias part of linear_backward).
void bias_backward(float* dbias, const float* dout, int N, int O);

// Per-sample statistics of a linear layer's weight gradient over B samples of T rows:
// g[O,C] += sum_j s_j*dW_j / B and a[O,C] += sum_j (s_j*dW_j)^2 / B, dW_j = dout_j^T . inp_j.
// Works on row blocks of W small enough to stay in cache, so the per-sample gradients are never
// written out whole (the Fisher diagonal then costs about what the plain gradient costs).
void linear_weight_grad_stats(float* g, float* a, const float* dout, const float* inp, int B, int T, int C, int O,
                              const float* sample_scale);
// Its blocking with the per-sample GEMM supplied (the bf16 variant shares it): in parallel over
// row blocks, block_grad(j, o0, ob, tmp) writes tmp[ob, C] = s_j * dout_j[:, o0:o0+ob]^T . inp_j.
void weight_grad_stats_blocked(float* g, float* a, int B, int C, int O,
                               const std::function<void(int j, int o0, int ob, float* tmp)>& block_grad);

// out = inp * rstd * w with rstd = 1/sqrt(mean(inp^2) + eps), per row.   (LlamaRMSNorm)
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int N, int C, float eps);
void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w, const float* rstd,
                      int N, int C);

// out = (inp - mean) * rstd * w + b with rstd = 1/sqrt(var(inp) + eps), per row.   (nn.LayerNorm)
// mean/rstd [N] (optional in the forward) keep the row statistics for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b, int N,
                       int C, float eps);
// dinp[N,C] += ..., dw[C] += sum dy*xhat, db[C] += sum dy. Null pointers skip.
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int N, int C);

// Rotate-half RoPE in place on x[N, n_heads*D]; row n has position pos[n].
// cos/sin tables are [max_pos, D/2]: angle(p, i) = p * inv_freq[i].
void rope_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D);
// The rotation is orthogonal: backward is the inverse rotation of dx, in place.
void rope_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D);

// Partial RoPE with consecutive pairs (GPT-J / ChatGLM) in place on x[N, n_heads*D]: in each
// head, dims (2i, 2i+1) for i < rot/2 rotate by angle pos[n] * inv_freq[i]; dims rot..D-1 pass
// through. cos/sin tables are [max_pos, rot/2].
void rope_pairs_forward(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads, int D,
                        int rot);
// Backward: the inverse rotation of dx, in place (the rotation is orthogonal).
void rope_pairs_backward(float* dx, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int n_heads,
                         int D, int rot);

// GLM's 2D RoPE (ChatGLM-6B v1) in place on x[N, n_heads*D]: dims [0, D/2) of each head rotate
// rotate-half style (pairs (i, i + D/4)) by angle pos[n] * inv_freq[i], dims [D/2, D) the same way
// by block_pos[n]. cos/sin tables are [max_pos, D/4].
void rope_2d_forward(float* x, const int32_t* pos, const int32_t* block_pos, const float* cos_t, const float* sin_t,
                     int N, int n_heads, int D);
// Backward: the inverse rotation of dx, in place.
void rope_2d_backward(float* dx, const int32_t* pos, const int32_t* block_pos, const float* cos_t, const float* sin_t,
                      int N, int n_heads, int D);

// Causal attention with GQA over B sequences.
// q [B, Tq, H, D] (row stride H*D), k/v [B, Tk, KVH, D] (row stride kv_stride, >= KVH*D, so a KV
// cache with spare capacity works), out [B, Tq, H, D]. Query i sits at absolute position
// pos0 + i and sees keys 0..pos0+i. probs (optional, [B, H, Tq, Tk]) keeps the softmax for backward.
// prefix (optional, [B]): GLM's prefix-bidirectional mask, every query of sequence b also sees
// keys 0..prefix[b]-1 (the prompt up to and excluding `sop`), i.e. keys 0..max(pos0+i, prefix-1).
void attention_forward(float* out, float* probs, const float* q, const float* k, const float* v, int B, int Tq,
                       int Tk, int pos0, int H, int KVH, int D, int kv_stride, const int32_t* prefix = nullptr);
// Backward for pos0 = 0, Tq = Tk = T, kv_stride = KVH*D (prefix as in the forward); dq/dk/dv accumulate.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* probs, int B, int T, int H, int KVH, int D,
                        const int32_t* prefix = nullptr);

// h = silu(gate) * up, elementwise over n.                              (SwiGLU)
void swiglu_forward(float* h, const float* gate, const float* up, size_t n);
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, size_t n);

// h = gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise.  (GLM v1's MLP)
void gelu_tanh_forward(float* h, const float* x, size_t n);
void gelu_tanh_backward(float* dx, const float* dh, const float* x, size_t n);

// Residual stream updates of a decoder block (n = N*C):
// x += y (pre-norm blocks), and x = scale * xn + y where the residual is the normalised input
// (GLM v1: out = alpha * LayerNorm(x) + sub-block(LayerNorm(x))).
void residual_add(float* x, const float* y, size_t n);
void residual_from_normed(float* x, const float* xn, float scale, const float* y, size_t n);
// dst += scale * src, elementwise (the backward of residual_from_normed into the norm's output).
void add_scaled(float* dst, const float* src, float scale, size_t n);

// One sample's contribution to a tensor's gradient statistics (n elements): with g_j = scale *
// grad_j, g += g_j * inv_b and a += g_j^2 * inv_b (the mean gradient and the Fisher diagonal).
void accumulate_sample_stats(float* g, float* a, const float* grad_j, float scale, float inv_b, size_t n);
// Whether every value of x[n] is finite (no NaN or Inf).
bool all_finite(const float* x, size_t n);

// out[N,C] = table[tokens[n], :] (table stored as fp32).
void embedding_forward(float* out, const int32_t* tokens, const float* table, int N, int C);
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int N, int C);

// Cross-entropy of logits[N,V] against targets[N] (target < 0 = not scored).
// Returns per-row NLL in losses[N] (0 for unscored rows) using a numerically stable log-sum-exp.
void cross_entropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V);
// dlogits[N,V] = (softmax(logits) - onehot(target)) * scale for scored rows, 0 otherwise (overwrites).
void cross_entropy_backward(float* dlogits, const float* logits, const int32_t* targets, int N, int V, float scale);

// Log-softmax row by row: out[N,V] (may alias logits).
void log_softmax(float* out, const float* logits, int N, int V);

}  // namespace llmprune::kernels
