#pragma once
// The forward pass over a Model, layer by layer. Weights are converted to fp32 one layer at a
// time into buffers reused across layers (no fp32 copy of the whole model). Forwards of a few
// rows (decode steps; N <= Runner::small_m_max()) convert nothing: their projections read the
// weights as stored (kernels/gemv.h).
// Glossary: B = sequences, T = tokens per sequence, N = B*T rows, C = hidden, V = vocab.
#include <array>
#include <vector>

#include "kernels/gemv.h"
#include "model/model.h"

namespace llmprune {

// fp32 pointer for a tensor: the tensor itself when stored as F32, else a converted copy in `scratch`.
const float* as_f32(const Tensor& t, std::vector<float>& scratch);

// out[N, V] (row stride ldo) = inp[N, C] . W[V, C]^T for a weight in any dtype. Up to
// small_m_max rows W is read as stored (kernels::linear_small_m; Runner passes its own limit);
// above, blocks of rows are converted at a time so a bf16 lm_head never needs a full fp32 copy.
void linear_any_dtype(float* out, int ldo, const float* inp, const Tensor& W, int N, int small_m_max = 0);

// One layer's weights for the forward: fp32 pointers (converted copies in `buf`, or the tensors
// themselves when stored as F32), or — loaded with convert_matrices = false, for forwards of
// a few rows — the projection matrices left as stored (`stored`, ptr null unless F32): only
// norms and biases are converted.
struct LayerF32 {
  std::array<const float*, kNumLayerRoles> ptr{};
  std::array<const Tensor*, kNumLayerRoles> stored{};  // the layer's tensors (null: absent)
  std::array<std::vector<float>, kNumLayerRoles> buf;
  bool matrices_converted = true;
  // With m.release_pages, drops the layer's mapped pages once converted (pages used in place —
  // F32 storage, or matrices left as stored — are dropped at the next load).
  void load(const Model& m, int layer, bool convert_matrices = true);
  const Model* loaded_model = nullptr;
  int loaded_layer = -1;
  const float* operator[](Role r) const { return ptr[size_t(r)]; }
};

// RoPE as the family describes it (arch's RotaryDesc): the first rot_dim dims of each head,
// paired rotate-half (LLaMA) or consecutively (ChatGLM).
struct RopeTables {
  int head_dim = 0, rot_dim = 0, max_pos = 0;
  RotaryPairing pairing = RotaryPairing::RotateHalf;
  std::vector<float> cos, sin;  // [max_pos, rot_dim/2]
  void build(const ModelConfig& c, const RotaryDesc& rotary, int head_dim, int max_pos);
  // In place on x[N, n_heads*head_dim], row n at position pos[n]; inverse = the backward.
  void apply(float* x, const int32_t* pos, int N, int n_heads, bool inverse) const;
};

// Activations of one layer that the backward pass needs (all [N, ...] row-major).
struct LayerActs {
  std::vector<float> xn1, rstd1;        // attention-norm output [N,C], [N]
  std::vector<float> q, k, v;           // after RoPE (q, k): [N,H*D], [N,KVH*D], [N,KVH*D]
  std::vector<float> probs;             // [B,H,T,T]
  std::vector<float> att;               // attention output before o_proj [N,H*D]
  std::vector<float> x_mid;             // residual after attention [N,C]
  std::vector<float> xn2, rstd2;        // MLP-norm output [N,C], [N]
  std::vector<float> gate, up, h;       // [N,F] each; h = silu(gate)*up
};

// Per-layer K/V for incremental decoding: k[l], v[l] are [B, max_T, KVH_l*D].
struct KVCache {
  int B = 0, max_T = 0, len = 0;
  std::vector<std::vector<float>> k, v;
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
  // One decoder layer in place on x[N, C]. acts (optional) keeps what backward needs.
  void layer_forward(int l, const LayerF32& w, float* x, int B, int T, KVCache* cache, LayerActs* acts);
  // Final norm into xn[N,C] (rstd [N] optional), then logits[N,V] (ld V).
  void head(const float* x, int N, float* xn, float* rstd, float* logits);
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
  // forward() with N = B*T <= this many rows reads the weights as stored (no per-layer fp32
  // conversion); 0 always converts (the reference path tests and benchmarks compare against).
  void set_small_m_max(int rows) { small_m_max_ = rows; }
  int small_m_max() const { return small_m_max_; }

 private:
  // out[N, O] = inp[N, C] . W^T (+ bias) for projection role r of w, as w was loaded.
  void project(const LayerF32& w, Role r, Role bias, float* out, const float* inp, int N, int C, int O) const;
  LinearHook* hook_ = nullptr;
  std::vector<uint8_t> skip_attn_, skip_mlp_;
  int small_m_max_ = kernels::kSmallMMax;
  const Model& m_;
  RopeTables rope_;
  LayerF32 w_;
  LayerActs scratch_;
  std::vector<int32_t> pos_;
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
