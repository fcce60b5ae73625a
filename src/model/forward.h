#pragma once
// The forward pass over a Model, layer by layer, and the block-level kernel pairs the backward
// (model/backward.h) is built from: Runner::block_forward / block_backward and head_forward /
// head_backward, side by side in model/block.cpp (llm.c's shape). Every arithmetic loop is a
// kernel (kernels/ops.h); a family's behaviour (norm, activation, rotary, residual) comes from
// its ArchDesc.
//
// The forward pass over a Model, layer by layer. Weights are converted to fp32 one layer at a
// time into buffers reused across layers (no fp32 copy of the whole model). Forwards of a few
// rows (decode steps; N <= Runner::small_m_max()) convert nothing: their projections read the
// weights as stored (kernels/gemv.h).
// Glossary: B = sequences, T = tokens per sequence, N = B*T rows, C = hidden, V = vocab.
#include <array>
#include <functional>
#include <vector>

#include "kernels/gemm_bf16.h"
#include "kernels/gemv.h"
#include "model/model.h"

namespace llmprune {

// fp32 pointer for a tensor: the tensor itself when stored as F32, else a converted copy in `scratch`.
const float* as_f32(const Tensor& t, std::vector<float>& scratch);

// out[N, V] (row stride ldo) = inp[N, C] . W[V, C]^T for a weight in any dtype. Up to
// small_m_max rows W is read as stored (kernels::linear_small_m; Runner passes its own limit);
// above, with bf16 compute a bf16 or fp32 W is used as stored by the bf16 GEMM, otherwise
// blocks of rows are converted at a time so a bf16 lm_head never needs a full fp32 copy.
void linear_any_dtype(float* out, int ldo, const float* inp, const Tensor& W, int N, int small_m_max = 0,
                      kernels::Compute compute = kernels::Compute::F32);

// How LayerF32::load treats a layer's projection matrices (norms and biases are always fp32).
enum class MatrixLoad : uint8_t {
  Fp32,         // converted to fp32 (fp32 GEMMs)
  Bf16,         // bf16 compute: bf16 matrices left as stored (ptr null), others converted
  Bf16AndFp32,  // bf16 compute whose sink also reads fp32 weights: converted, bf16 data kept too
  AsStored,     // forwards of a few rows: every matrix left as stored (kernels/gemv.h)
};
// The load for a pass in `compute`; need_fp32: something besides the GEMMs reads fp32 weights.
MatrixLoad matrix_load_for(kernels::Compute compute, bool need_fp32);

// One layer's weights for the forward: fp32 pointers (converted copies in `buf`, or the tensors
// themselves when stored as F32), or the projection matrices left as stored (`stored`, ptr null
// unless F32) as MatrixLoad says.
struct LayerF32 {
  std::array<const float*, kNumLayerRoles> ptr{};
  std::array<const Tensor*, kNumLayerRoles> stored{};  // the layer's tensors (null: absent)
  std::array<std::vector<float>, kNumLayerRoles> buf;
  MatrixLoad matrices = MatrixLoad::Fp32;
  // With m.release_pages, drops the layer's mapped pages once converted (pages used in place —
  // F32 storage, or matrices left as stored or read by the bf16 GEMMs — at the next load).
  void load(const Model& m, int layer, MatrixLoad matrices = MatrixLoad::Fp32);
  const Model* loaded_model = nullptr;
  int loaded_layer = -1;
  std::array<bool, kNumLayerRoles> in_place{};  // the layer's tensors used from the mapping
  const float* operator[](Role r) const { return ptr[size_t(r)]; }
  // Weight r for the bf16 GEMMs: the stored data when bf16, else the fp32 pointer.
  kernels::Weight weight(Role r) const {
    const Tensor* t = stored[size_t(r)];
    return t && t->dtype == DType::BF16 ? kernels::Weight{t->data, true} : kernels::Weight{ptr[size_t(r)], false};
  }
};

// RoPE as the family describes it (arch's RotaryDesc): the first rot_dim dims of each head,
// paired rotate-half (LLaMA) or consecutively (ChatGLM2/3), or GLM's 2D rotary (v1: each half
// of the head rotate-half, rot_dim = head_dim / 2 the dims of one half).
struct RopeTables {
  int head_dim = 0, rot_dim = 0, max_pos = 0;
  RotaryPairing pairing = RotaryPairing::RotateHalf;
  std::vector<float> cos, sin;  // [max_pos, rot_dim/2]
  void build(const ModelConfig& c, const RotaryDesc& rotary, int head_dim, int max_pos);
  // In place on x[N, n_heads*head_dim], row n at position pos[n] (Glm2D: and block position
  // block_pos[n]; null = 0); inverse = the backward.
  void apply(float* x, const int32_t* pos, int N, int n_heads, bool inverse, const int32_t* block_pos = nullptr) const;
};

// Positions and attention mask of B sequences of T tokens as the family's PositionKind says
// (Causal: pos = pos0 + t; GlmBlocks: CHATGLM.md §1.5, see arch.h). With a cache, the tokens
// continue at cache->len and the cache remembers each sequence's sop / mask indices.
struct TokenLayout {
  std::vector<int32_t> pos, block_pos;  // [B*T]
  std::vector<int32_t> prefix;          // [B]: keys every query sees (0 = causal); empty = none
};
struct KVCache;
TokenLayout token_layout(const Model& m, const int32_t* tokens, int B, int T, KVCache* cache);

// Activations of one layer that the backward pass needs (all [N, ...] row-major).
struct LayerActs {
  std::vector<float> xn1, rstd1;        // attention-norm output [N,C], [N]
  std::vector<float> mean1, mean2;      // LayerNorm row means [N] (NormKind::LayerNorm)
  std::vector<float> q, k, v;           // after RoPE (q, k): [N,H*D], [N,KVH*D], [N,KVH*D]
  std::vector<float> probs;             // [B,H,T,T]
  std::vector<float> att;               // attention output before o_proj [N,H*D]
  std::vector<float> x_mid;             // residual after attention [N,C]
  std::vector<float> xn2, rstd2;        // MLP-norm output [N,C], [N]
  std::vector<float> gate, up, h;       // [N,F] each; h = silu(gate)*up (GeluTanh: gelu(up), no gate)
  // ResidualDesc::post_norm only: the sub-block outputs before their norms [N,C] and the norms'
  // row statistics [N].
  std::vector<float> attn_out, mlp_out, post_rstd1, post_rstd2;
};

// Gradients of one block's input and weights (Runner::block_backward): the work buffers, reused
// across layers (sized on first use; zeroed where the accumulating kernels need it).
struct BlockGradBuffers {
  std::vector<float> dmid;              // gradient of the residual between attention and MLP [N,C]
  std::vector<float> dh, dgate, dup;    // MLP [N,F]
  std::vector<float> dxn1, dxn2;        // norm outputs [N,C]
  std::vector<float> dsub;              // ResidualDesc::post_norm: a sub-block's output before its norm [N,C]
  std::vector<float> datt, dq, dk, dv;  // attention [N,H*D], [N,H*D], [N,KVH*D], [N,KVH*D]
};

// One tensor's statistics: g = mean gradient, a = Fisher diagonal (empty unless per-sample).
struct GradStats {
  std::vector<float> g, a;
};
using LayerGrads = std::array<GradStats, kNumLayerRoles>;
using GlobalGrads = std::array<GradStats, kNumGlobalRoles>;

// How the backward turns gradients into a tensor's GradStats over B samples of T rows: batched,
// the mean gradient g; per sample, also the Fisher diagonal a = (1/B) sum_j g_j^2, where g_j is
// the gradient of sample j's own mean loss = sample_scale[j] x sample j's share of the batch's.
class GradStatsPolicy {
 public:
  GradStatsPolicy(int B, int T, bool per_sample, std::vector<float> sample_scale, kernels::Compute compute)
      : B_(B), T_(T), per_sample_(per_sample), sample_scale_(std::move(sample_scale)), compute_(compute) {}
  bool per_sample() const { return per_sample_; }
  // A projection's weight: dW[out, in] = dout[N, out]^T . inp[N, in].
  void linear(GradStats& st, const float* dout, const float* inp, int in_dim, int out_dim) const;
  // Any other tensor of numel values: add_rows(dst, row0, rows) ADDS the gradient that rows
  // [row0, row0 + rows) contribute into dst.
  void rows(GradStats& st, size_t numel, const std::function<void(float* dst, int row0, int rows)>& add_rows) const;
  // Adds sample j's whole gradient grad_j (already summed over its rows) to st (per-sample only).
  void add_sample(GradStats& st, int j, const float* grad_j) const;

 private:
  int B_, T_;
  bool per_sample_;
  std::vector<float> sample_scale_;
  kernels::Compute compute_;
};

// The head's weights for its backward: final norm (and bias, LayerNorm families) as fp32, and
// the lm_head as the input-gradient GEMM reads it (bf16 compute: as stored) plus, when its
// gradient is wanted, as fp32.
struct HeadF32 {
  const float* norm = nullptr;
  const float* norm_bias = nullptr;
  const float* lm_head = nullptr;  // fp32 (null when only the bf16 GEMM reads it)
  kernels::Weight lm_head_weight;
  std::vector<float> norm_buf, bias_buf, head_buf;
  void load(const Model& m, kernels::Compute compute, bool need_fp32_lm_head);
};

// Per-layer K/V for incremental decoding: k[l], v[l] are [B, max_T, KVH_l*D].
struct KVCache {
  int B = 0, max_T = 0, len = 0;
  std::vector<std::vector<float>> k, v;
  // PositionKind::GlmBlocks, per sequence: index of sop and of the first [gMASK] / [MASK] (-1: not seen).
  std::vector<int32_t> glm_sop, glm_gmask, glm_mask;
  KVCache(const Model& m, int B, int max_T);
};

// Extra computation around each projection (q, k, v, o, gate, up, down) of a layer — LoRA
// adapters. forward adds to y = x W^T; backward adds the branch's input gradient to dx and
// accumulates the hook's own parameter gradients. x: [N, in], y/dy: [N, out].
class LinearHook {
 public:
  virtual ~LinearHook() = default;
  virtual void forward(int layer, Role r, const float* x, float* y, int N, int in, int out) = 0;
  virtual void backward(int layer, Role r, const float* x, const float* dy, float* dx, int N, int in, int out) = 0;
};

class Runner {
 public:
  explicit Runner(const Model& m, int max_pos = 0);
  const Model& model() const { return m_; }

  // B sequences of T tokens. logits: [B*T, V], or [B, V] (last position only) when last_only.
  // With a cache, tokens continue at positions cache->len.. and the cache grows by T.
  void forward(const int32_t* tokens, int B, int T, float* logits, KVCache* cache = nullptr, bool last_only = false);

  // Embedding lookup into x[N, C] (converting only the rows used).
  void embed(const int32_t* tokens, int N, float* x) const;
  // Positions (and GLM's prefix mask) for the block_forward calls that follow, over B sequences
  // of T tokens (token_layout). Without it, or for another B x T, positions are pos0 + t with a
  // causal mask (GLM v1: block positions 0), which is how a sequence without sop is scored.
  void set_layout(TokenLayout layout, int B, int T) {
    layout_ = std::move(layout);
    layout_B_ = B;
    layout_T_ = T;
  }
  void clear_layout() { set_layout({}, 0, 0); }
  // The layout set for B x T, or nullptr.
  const TokenLayout* layout_for(int B, int T) const {
    return B == layout_B_ && T == layout_T_ && !layout_.pos.empty() ? &layout_ : nullptr;
  }
  // One decoder block in place on x[N, C]. acts (optional) keeps what block_backward needs.
  void block_forward(int l, const LayerF32& w, float* x, int B, int T, KVCache* cache, LayerActs* acts);
  // Backward of block_forward over B x T (no cache): dx[N, C] holds the gradient of the block's
  // output and becomes that of its input x_in; acts are the block's activations. With `stats`
  // the weight gradients go into grads[role] (roles the layer has; others left as they are); a
  // hook adds its branches' input gradients and accumulates its own parameters' gradients.
  void block_backward(int l, const LayerF32& w, const float* x_in, const LayerActs& acts, float* dx, int B, int T,
                      const GradStatsPolicy* stats, LayerGrads& grads, BlockGradBuffers& buf);
  // Final norm into xn[N,C] (row statistics mean [N] for LayerNorm families and rstd [N],
  // optional), then logits[N,V] (ld V).
  void head_forward(const float* x, int N, float* xn, float* mean, float* rstd, float* logits);
  // Backward of head_forward from dlogits[N, V]: dx[N, C] += the gradient of x. With `stats`,
  // the final norm's gradients into grads (FinalNorm, FinalNormBias) and, with lm_head_grad,
  // the lm_head's into grads[LmHead] (tied: grads[Embed]). dxn: work buffer.
  void head_backward(const HeadF32& w, const float* x, const float* xn, const float* mean, const float* rstd,
                     const float* dlogits, float* dx, int N, const GradStatsPolicy* stats, bool lm_head_grad,
                     GlobalGrads& grads, std::vector<float>& dxn);
  // Masks whole sub-blocks as if removed (depth-pruning search): layer l runs no attention when
  // attn[l] != 0 and no MLP when mlp[l] != 0 (missing entries: run). Empty vectors: no mask.
  void skip_sublayers(std::vector<uint8_t> attn, std::vector<uint8_t> mlp) {
    skip_attn_ = std::move(attn);
    skip_mlp_ = std::move(mlp);
  }
  // Whether layer l runs its attention / MLP: present in the model and not masked.
  bool has_attention(int l) const;
  bool has_mlp(int l) const;
  const RopeTables& rope() const { return rope_; }
  void set_hook(LinearHook* h) { hook_ = h; }
  LinearHook* hook() const { return hook_; }
  // Precision of the projections' GEMMs above small_m_max() rows (default fp32).
  void set_compute(kernels::Compute c) { compute_ = c; }
  kernels::Compute compute() const { return compute_; }
  // forward() with N = B*T <= this many rows reads the weights as stored (no per-layer fp32
  // conversion); 0 always converts (the reference path tests and benchmarks compare against).
  void set_small_m_max(int rows) { small_m_max_ = rows; }
  int small_m_max() const { return small_m_max_; }

 private:
  // Positions (and GLM's block positions and prefix) of B x T rows starting at pos0: the layout
  // set for B x T, else pos0 + t with a causal mask.
  struct Positions {
    const int32_t* pos = nullptr;
    const int32_t* block_pos = nullptr;
    const int32_t* prefix = nullptr;
  };
  Positions positions(int B, int T, int pos0);
  // out[N, O] = inp[N, C] . W^T (+ bias) for projection role r of w, as w was loaded.
  void project(const LayerF32& w, Role r, Role bias, float* out, const float* inp, int N, int C, int O) const;
  LinearHook* hook_ = nullptr;
  kernels::Compute compute_ = kernels::Compute::F32;
  std::vector<uint8_t> skip_attn_, skip_mlp_;
  int small_m_max_ = kernels::kSmallMMax;
  const Model& m_;
  RopeTables rope_;
  LayerF32 w_;
  LayerActs scratch_;
  std::vector<int32_t> pos_, block_pos_;
  TokenLayout layout_;
  int layout_B_ = 0, layout_T_ = 0;
};

// Mean-NLL scoring of a batch: sum of NLL over scored targets (targets[i] < 0 = skip).
struct NllResult {
  double nll_sum = 0;
  int64_t count = 0;
};
// tokens [B, T]; position t predicts token t+1 inside each sequence; only positions >= score_from[b]
// (in target index terms: target index t+1 >= score_from) are counted.
NllResult sequence_nll(Runner& r, const int32_t* tokens, int B, int T, const int* score_from = nullptr);

}  // namespace llmprune
