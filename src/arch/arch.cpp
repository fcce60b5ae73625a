#include "arch/arch.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace llmprune {
namespace {

ConfigKeys llama_keys() {
  ConfigKeys k;
  k.hidden = {"hidden_size"};
  k.n_layer = {"num_hidden_layers"};
  k.vocab = {"vocab_size"};
  k.n_head = {"num_attention_heads"};
  k.n_kv_head = {"num_key_value_heads"};
  k.head_dim = {"head_dim"};
  k.d_ff = {"intermediate_size"};
  k.eps = {"rms_norm_eps"};
  k.max_pos = {"max_position_embeddings"};
  k.rope_theta = "rope_theta";
  k.eps_default = 1e-6;
  return k;
}

// The norm-bias rows of an RMSNorm family: no tensor (has_role is false).
RoleDesc rms_norm_bias_row(const char* name, Role norm) {
  return {name, nullptr, Space::Hidden, Space::None, true, true, true, nullptr, norm};
}

// The post-sub-block norm rows of a family without them (ResidualDesc::post_norm false): no
// tensor. GLM-4-0414 sets their patterns.
RoleDesc absent_post_norm_row(const char* name) {
  return {name, nullptr, Space::Hidden, Space::None, false, true, false, nullptr};
}

// Rows in Role order (arch.h).
ArchDesc make_llama_like(const std::string& family, std::vector<BiasSwitch> biases, const std::string& hf_remote_classes) {
  ArchDesc a;
  a.family = family;
  a.bias_switches = std::move(biases);
  a.hf_remote_classes = hf_remote_classes;
  a.layer = {{
      {"attn_norm", "model.layers.%d.input_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.attn_norm"},
      {"q", "model.layers.%d.self_attn.q_proj.weight", Space::QHeads, Space::Hidden, false, false, false, "blk.%d.attn_q"},
      {"q_bias", "model.layers.%d.self_attn.q_proj.bias", Space::QHeads, Space::None, true, false, true, "blk.%d.attn_q", Role::Q},
      {"k", "model.layers.%d.self_attn.k_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_k"},
      {"k_bias", "model.layers.%d.self_attn.k_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_k", Role::K},
      {"v", "model.layers.%d.self_attn.v_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_v"},
      {"v_bias", "model.layers.%d.self_attn.v_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_v", Role::V},
      {"o", "model.layers.%d.self_attn.o_proj.weight", Space::Hidden, Space::QHeads, false, false, false, "blk.%d.attn_output"},
      {"mlp_norm", "model.layers.%d.post_attention_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.ffn_norm"},
      {"gate", "model.layers.%d.mlp.gate_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_gate"},
      {"up", "model.layers.%d.mlp.up_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_up"},
      {"down", "model.layers.%d.mlp.down_proj.weight", Space::Hidden, Space::Mlp, false, false, false, "blk.%d.ffn_down"},
      {"o_bias", "model.layers.%d.self_attn.o_proj.bias", Space::Hidden, Space::None, true, false, true, "blk.%d.attn_output", Role::O},
      {"gate_bias", "model.layers.%d.mlp.gate_proj.bias", Space::Mlp, Space::None, true, false, true, "blk.%d.ffn_gate", Role::Gate},
      {"up_bias", "model.layers.%d.mlp.up_proj.bias", Space::Mlp, Space::None, true, false, true, "blk.%d.ffn_up", Role::Up},
      {"down_bias", "model.layers.%d.mlp.down_proj.bias", Space::Hidden, Space::None, true, false, true, "blk.%d.ffn_down", Role::Down},
      rms_norm_bias_row("attn_norm_bias", Role::AttnNorm),
      rms_norm_bias_row("mlp_norm_bias", Role::MlpNorm),
      absent_post_norm_row("post_attn_norm"),
      absent_post_norm_row("post_mlp_norm"),
  }};
  a.global = {{
      {"embed", "model.embed_tokens.weight", Space::Vocab, Space::Hidden, false, false, false, "token_embd"},
      {"final_norm", "model.norm.weight", Space::Hidden, Space::None, false, true, false, "output_norm"},
      {"lm_head", "lm_head.weight", Space::Vocab, Space::Hidden, true, false, false, "output"},
      rms_norm_bias_row("final_norm_bias", Role::Count),
  }};
  a.keys = llama_keys();
  return a;
}

// HF LlamaConfig / MistralConfig: attention_bias (q, k, v, o) and mlp_bias (gate, up, down).
std::vector<BiasSwitch> llama_biases() {
  return {{"attention_bias", {Role::QBias, Role::KBias, Role::VBias, Role::OBias}},
          {"mlp_bias", {Role::GateBias, Role::UpBias, Role::DownBias}}};
}

// ChatGLM2-6B, ChatGLM3-6B and GLM-4-9B in THUDM's "chatglm" format (docs: CHATGLM.md §2, §3.1).
// query_key_value stores [all query heads | K groups | V groups] (multi_query_attention's blocked
// layout), dense_h_to_4h stores [gate | up]; the first half of each head (kv_channels/2 dims) is
// rotated in consecutive pairs with base 10000 * rope_ratio.
ArchDesc make_chatglm() {
  ArchDesc a;
  a.family = "chatglm";
  // add_qkv_bias: the fused query_key_value bias; add_bias_linear: dense, dense_h_to_4h (fused
  // [gate | up]) and dense_4h_to_h (nn.Linear(bias=config.add_bias_linear) in THUDM's code).
  a.bias_switches = {{"add_qkv_bias", {Role::QBias, Role::KBias, Role::VBias}},
                     {"add_bias_linear", {Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias}}};
  const Space H = Space::Hidden, N = Space::None;
  a.layer = {{
      {"attn_norm", "transformer.encoder.layers.%d.input_layernorm.weight", H, N, false, true, false, "blk.%d.attn_norm"},
      {"q", nullptr, Space::QHeads, H, false, false, false, nullptr},
      {"q_bias", nullptr, Space::QHeads, N, true, false, true, nullptr, Role::Q},
      {"k", nullptr, Space::KVHeads, H, false, false, false, nullptr},
      {"k_bias", nullptr, Space::KVHeads, N, true, false, true, nullptr, Role::K},
      {"v", nullptr, Space::KVHeads, H, false, false, false, nullptr},
      {"v_bias", nullptr, Space::KVHeads, N, true, false, true, nullptr, Role::V},
      {"o", "transformer.encoder.layers.%d.self_attention.dense.weight", H, Space::QHeads, false, false, false, "blk.%d.attn_output"},
      {"mlp_norm", "transformer.encoder.layers.%d.post_attention_layernorm.weight", H, N, false, true, false, "blk.%d.ffn_norm"},
      {"gate", nullptr, Space::Mlp, H, false, false, false, nullptr},
      {"up", nullptr, Space::Mlp, H, false, false, false, nullptr},
      {"down", "transformer.encoder.layers.%d.mlp.dense_4h_to_h.weight", H, Space::Mlp, false, false, false, "blk.%d.ffn_down"},
      {"o_bias", "transformer.encoder.layers.%d.self_attention.dense.bias", H, N, true, false, true, "blk.%d.attn_output", Role::O},
      {"gate_bias", nullptr, Space::Mlp, N, true, false, true, nullptr, Role::Gate},  // fused: dense_h_to_4h.bias
      {"up_bias", nullptr, Space::Mlp, N, true, false, true, nullptr, Role::Up},
      {"down_bias", "transformer.encoder.layers.%d.mlp.dense_4h_to_h.bias", H, N, true, false, true, "blk.%d.ffn_down", Role::Down},
      rms_norm_bias_row("attn_norm_bias", Role::AttnNorm),
      rms_norm_bias_row("mlp_norm_bias", Role::MlpNorm),
      absent_post_norm_row("post_attn_norm"),
      absent_post_norm_row("post_mlp_norm"),
  }};
  a.global = {{
      {"embed", "transformer.embedding.word_embeddings.weight", Space::Vocab, H, false, false, false, "token_embd"},
      {"final_norm", "transformer.encoder.final_layernorm.weight", H, N, false, true, false, "output_norm"},
      {"lm_head", "transformer.output_layer.weight", Space::Vocab, H, true, false, false, "output"},
      rms_norm_bias_row("final_norm_bias", Role::Count),
  }};
  a.fused = {
      {"transformer.encoder.layers.%d.self_attention.query_key_value.weight", {Role::Q, Role::K, Role::V}, "blk.%d.attn_qkv", "query_key_value"},
      {"transformer.encoder.layers.%d.self_attention.query_key_value.bias", {Role::QBias, Role::KBias, Role::VBias}, "blk.%d.attn_qkv", "query_key_value"},
      {"transformer.encoder.layers.%d.mlp.dense_h_to_4h.weight", {Role::Gate, Role::Up}, "blk.%d.ffn_up", "dense_h_to_4h"},
      {"transformer.encoder.layers.%d.mlp.dense_h_to_4h.bias", {Role::GateBias, Role::UpBias}, "blk.%d.ffn_up", "dense_h_to_4h"},
  };
  ConfigKeys& k = a.keys;
  k.hidden = {"hidden_size"};
  k.n_layer = {"num_layers", "num_hidden_layers"};
  k.vocab = {"padded_vocab_size", "vocab_size"};
  k.n_head = {"num_attention_heads"};
  k.n_kv_head = {"multi_query_group_num"};
  k.head_dim = {"kv_channels"};
  k.d_ff = {"ffn_hidden_size"};
  k.eps = {"layernorm_epsilon"};
  k.max_pos = {"seq_length"};
  k.rope_ratio = "rope_ratio";
  k.rope_base_default = 10000;
  k.eps_default = 1e-5;
  k.max_pos_default = 2048;
  k.kv_heads_enabled = "multi_query_attention";
  k.head_dim_required = true;
  a.requirements = {
      {"rmsnorm", true, true, "LayerNorm with bias"},
      {"post_layer_norm", true, true, "a model without a final norm"},
      {"apply_residual_connection_post_layernorm", false, false, "a residual taken after the norm"},
      {"multi_query_attention", true, false, "the per-head interleaved query_key_value layout"},
  };
  a.refusals = {
      {"position_encoding_2d", "ChatGLM-6B (v1: 2D rotary, LayerNorm, GELU) is not supported; ChatGLM2/3 and GLM-4 are"},
      {"inner_hidden_size", "ChatGLM-6B (v1: 2D rotary, LayerNorm, GELU) is not supported; ChatGLM2/3 and GLM-4 are"},
      {"pre_seq_len", "P-tuning v2 prefix encoders are not supported"},
      {"quantization_bit", "quantized ChatGLM checkpoints are not supported"},
  };
  a.norm = NormKind::RMS;
  a.rotary = {RotaryPairing::ConsecutivePairs, 1, 2};
  // ChatGLM2/3 SentencePiece: [MASK] [gMASK] [sMASK] sop eop after the pieces; ChatGLM3 adds the
  // role tokens (ids that ChatGLM2 leaves unused in its padded vocabulary).
  a.tokenizer.appended_specials = {"[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                                   "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"};
  a.tokenizer.prefix = {{"[gMASK]"}, {"sop", "<sop>"}};  // GLM-4 spells it <sop>
  // transformers has no chatglm class; THUDM's modeling_chatglm.py sizes every layer alike and is
  // not copied: llmprune's own code (model/hf_code.h) goes beside every chatglm model it writes.
  a.hf_remote_classes = "ChatGLM";
  a.hf_remote_always = true;
  a.gguf_arch = "chatglm";
  a.gguf_tokenizer_pre = "chatglm-spm";
  a.gguf_ragged = false;             // llama.cpp's chatglm loader takes one head count and MLP width
  a.gguf_heads_span_hidden = true;   // its wo is {n_embd, n_embd} and Q the first n_embd rows of attn_qkv
  a.gguf_biases = {Role::QBias, Role::KBias, Role::VBias};  // its loader has bqkv only (no bo, no ffn biases)
  a.gguf_permute_qk = false;         // its graph rotates consecutive pairs (ROPE_TYPE_NORM): rows as stored
  return a;
}

// Phi-3 (HF Phi3ForCausalLM): LLaMA's block with two fused tensors, qkv_proj = [Q | K | V] and
// gate_up_proj = [gate | up]; RMSNorm, rotate-half RoPE on the whole head, SiLU, no biases,
// untied lm_head. Only the names differ from LLaMA's table: the loader splits the fused tensors
// into role views, the saver and the GGUF exporter concatenate them again (as for ChatGLM).
ArchDesc make_phi3() {
  ArchDesc a = make_llama_like("phi3", {}, "");  // no remote code: a ragged Phi-3 loads in llmprune only
  for (Role r : {Role::Q, Role::K, Role::V, Role::Gate, Role::Up}) {
    a.layer[size_t(r)].pattern = nullptr;  // stored inside a fused tensor
    a.layer[size_t(r)].gguf = nullptr;
  }
  a.fused = {
      {"model.layers.%d.self_attn.qkv_proj.weight", {Role::Q, Role::K, Role::V}, "blk.%d.attn_qkv", "qkv_proj"},
      {"model.layers.%d.mlp.gate_up_proj.weight", {Role::Gate, Role::Up}, "blk.%d.ffn_up", "gate_up_proj"},
  };
  // A sliding window changes attention past `sliding_window` tokens (HF masks keys older than
  // it); llmprune computes full attention, so the usable context is capped at the window.
  a.keys.attention_window = "sliding_window";
  a.refusals = {
      {"partial_rotary_factor", "a partly rotated head (Phi-4-mini) is not supported; Phi-3 rotates the whole head", 1.0},
  };
  // llama.cpp's phi3: fused attn_qkv and ffn_up = [gate | up] (its SwiGLU takes the first half
  // as the gate), NeoX rotary on rows as stored, wo {n_embd, n_embd}, one size for all layers.
  a.gguf_arch = "phi3";
  a.gguf_ragged = false;
  a.gguf_heads_span_hidden = true;
  a.gguf_permute_qk = false;
  a.gguf_biases = {};
  return a;
}

// transformers-native GLM (GlmForCausalLM, model_type "glm": glm-4-9b-chat-hf, GLM-Edge;
// CHATGLM.md §3.2): LLaMA's names with q/k/v biases (attention_bias; o_proj has none), the MLP
// fused as gate_up_proj = [gate | up], and ChatGLM2's rotary: consecutive pairs on the first half
// of each head (partial_rotary_factor 0.5) with base rope_theta. The math is ChatGLM3's; only
// the names and config keys differ (transformers' converter splits query_key_value into q/k/v
// and renames dense_h_to_4h to gate_up_proj without reordering).
ArchDesc make_glm() {
  ArchDesc a = make_llama_like("glm", {{"attention_bias", {Role::QBias, Role::KBias, Role::VBias}}}, "");
  for (Role r : {Role::Gate, Role::Up}) {
    a.layer[size_t(r)].pattern = nullptr;  // stored inside gate_up_proj
    a.layer[size_t(r)].gguf = nullptr;
  }
  a.fused = {{"model.layers.%d.mlp.gate_up_proj.weight", {Role::Gate, Role::Up}, "blk.%d.ffn_up", "gate_up_proj"}};
  a.rotary = {RotaryPairing::ConsecutivePairs, 1, 2};
  a.keys.head_dim_required = true;  // head_dim (ChatGLM's kv_channels) need not be hidden / heads
  a.refusals = {
      {"partial_rotary_factor", "a rotated fraction of the head other than 0.5 is not supported (GLM rotates the first half)", 0.5},
  };
  // llama.cpp's converter maps GlmForCausalLM to its chatglm architecture with q/k/v kept as
  // attn_q / attn_k / attn_v (+ biases) and gate_up_proj as ffn_up [gate | up]; the graph rotates
  // consecutive pairs on rope.dimension_count = half the head (rows as stored).
  a.gguf_arch = "chatglm";
  a.gguf_tokenizer_pre = "chatglm-spm";
  a.gguf_ragged = false;
  a.gguf_heads_span_hidden = true;
  a.gguf_biases = {Role::QBias, Role::KBias, Role::VBias};
  a.gguf_permute_qk = false;
  return a;
}

// ChatGLM-6B v1 in THUDM's "chatglm" format (docs: CHATGLM.md §1): LayerNorm with bias,
// query_key_value per head [q_h | k_h | v_h] with bias, biased dense layers, a GELU-tanh MLP
// (dense_h_to_4h is `up`; there is no gate), GLM's 2D rotary with fp16-rounded frequencies,
// positions and the prefix-bidirectional mask from sop / [gMASK], the residual taken from the
// normalised input and scaled by sqrt(2 * 28), lm_head tied to word_embeddings (no
// tie_word_embeddings key: transformers' default). Every query head has its own K/V head.
ArchDesc make_chatglm_v1() {
  ArchDesc a;
  a.family = "chatglm";
  a.bias_switches = {{nullptr, {Role::QBias, Role::KBias, Role::VBias, Role::OBias, Role::UpBias, Role::DownBias,
                                Role::AttnNormBias, Role::MlpNormBias}}};
  const Space H = Space::Hidden, N = Space::None;
  const Space NoRole = Space::None;
  a.layer = {{
      {"attn_norm", "transformer.layers.%d.input_layernorm.weight", H, N, false, true, false, nullptr},
      {"q", nullptr, Space::QHeads, H, false, false, false, nullptr},
      {"q_bias", nullptr, Space::QHeads, N, true, false, true, nullptr, Role::Q},
      {"k", nullptr, Space::KVHeads, H, false, false, false, nullptr},
      {"k_bias", nullptr, Space::KVHeads, N, true, false, true, nullptr, Role::K},
      {"v", nullptr, Space::KVHeads, H, false, false, false, nullptr},
      {"v_bias", nullptr, Space::KVHeads, N, true, false, true, nullptr, Role::V},
      {"o", "transformer.layers.%d.attention.dense.weight", H, Space::QHeads, false, false, false, nullptr},
      {"mlp_norm", "transformer.layers.%d.post_attention_layernorm.weight", H, N, false, true, false, nullptr},
      {"gate", nullptr, NoRole, NoRole, true, false, false, nullptr},  // MlpKind::GeluTanh: no gate
      {"up", "transformer.layers.%d.mlp.dense_h_to_4h.weight", Space::Mlp, H, false, false, false, nullptr},
      {"down", "transformer.layers.%d.mlp.dense_4h_to_h.weight", H, Space::Mlp, false, false, false, nullptr},
      {"o_bias", "transformer.layers.%d.attention.dense.bias", H, N, true, false, true, nullptr, Role::O},
      {"gate_bias", nullptr, NoRole, NoRole, true, false, true, nullptr, Role::Gate},
      {"up_bias", "transformer.layers.%d.mlp.dense_h_to_4h.bias", Space::Mlp, N, true, false, true, nullptr, Role::Up},
      {"down_bias", "transformer.layers.%d.mlp.dense_4h_to_h.bias", H, N, true, false, true, nullptr, Role::Down},
      {"attn_norm_bias", "transformer.layers.%d.input_layernorm.bias", H, N, true, true, true, nullptr, Role::AttnNorm},
      {"mlp_norm_bias", "transformer.layers.%d.post_attention_layernorm.bias", H, N, true, true, true, nullptr, Role::MlpNorm},
      absent_post_norm_row("post_attn_norm"),
      absent_post_norm_row("post_mlp_norm"),
  }};
  a.global = {{
      {"embed", "transformer.word_embeddings.weight", Space::Vocab, H, false, false, false, nullptr},
      {"final_norm", "transformer.final_layernorm.weight", H, N, false, true, false, nullptr},
      {"lm_head", "lm_head.weight", Space::Vocab, H, true, false, false, nullptr},
      {"final_norm_bias", "transformer.final_layernorm.bias", H, N, false, true, true, nullptr},
  }};
  a.fused = {
      {"transformer.layers.%d.attention.query_key_value.weight", {Role::Q, Role::K, Role::V}, nullptr, "query_key_value",
       FusedLayout::PerHead},
      {"transformer.layers.%d.attention.query_key_value.bias", {Role::QBias, Role::KBias, Role::VBias}, nullptr,
       "query_key_value", FusedLayout::PerHead},
  };
  ConfigKeys& k = a.keys;
  k.hidden = {"hidden_size"};
  k.n_layer = {"num_layers"};
  k.vocab = {"vocab_size"};
  k.n_head = {"num_attention_heads"};
  k.n_kv_head = {};  // no such key: one K/V head per query head
  // THUDM's code derives head_dim = hidden / heads; llmprune writes it (head-pruned models).
  k.head_dim = {"head_dim"};
  k.d_ff = {"inner_hidden_size"};
  k.eps = {"layernorm_epsilon"};
  k.max_pos = {"max_sequence_length"};
  k.rope_base_default = 10000;
  k.eps_default = 1e-5;
  k.max_pos_default = 2048;
  k.tied_default = true;
  k.prefix_end_key = "bos_token_id";
  k.mask_keys = {"gmask_token_id", "mask_token_id"};
  a.requirements = {
      {"position_encoding_2d", true, true, "1D positions (a ChatGLM-6B v1 config without the 2D rotary)"},
  };
  const char* v2_key = "a ChatGLM2/3 key in a ChatGLM-6B (v1) config (position_encoding_2d / inner_hidden_size)";
  a.refusals = {
      {"ffn_hidden_size", v2_key}, {"kv_channels", v2_key}, {"multi_query_attention", v2_key}, {"padded_vocab_size", v2_key},
      {"pre_seq_len", "P-tuning v2 prefix encoders are not supported"},
      {"quantization_bit", "quantized ChatGLM checkpoints are not supported"},
  };
  a.norm = NormKind::LayerNorm;
  a.mlp = MlpKind::GeluTanh;
  a.rotary = {RotaryPairing::Glm2D, 1, 1, true};
  a.positions = PositionKind::GlmBlocks;
  a.residual = {true, std::sqrt(2.0 * 28), false};
  // v1's SentencePiece model (ice_text.model) holds [MASK] [gMASK] [sMASK] <unused_0> <sop> <eop>
  // as pieces itself: nothing is appended. THUDM's build_inputs_with_special_tokens puts
  // [gMASK] <sop> at the END of a prompt (ids + [gMASK, sop]); the reply follows <sop>.
  a.tokenizer.suffix = {{"[gMASK]"}, {"<sop>", "sop"}};
  // THUDM's checkpoints ship the SentencePiece model as ice_text.model, and SPTokenizer spells
  // whitespace with pieces of it: "\n" <n>, "\t" <|tab|>, k spaces <|blank_k|> for k <= 80.
  a.tokenizer.sp_files = {"ice_text.model"};
  a.tokenizer.escapes = {"<n>", "<|tab|>", "<|blank_", "|>", 80};
  a.gguf_arch = nullptr;  // llama.cpp has no ChatGLM-6B v1 graph (LayerNorm+bias, GELU, 2D RoPE, alpha residual)
  a.gguf_refusal = "llama.cpp has no graph for ChatGLM-6B v1 (LayerNorm with bias, GELU, 2D rotary, scaled normalised residual)";
  a.gguf_ragged = false;
  a.gguf_permute_qk = false;
  return a;
}

// GLM-4-0414 (transformers' Glm4ForCausalLM, model_type "glm4"; CHATGLM.md §3.3): the "glm" block
// whose two sub-block outputs are each RMS-normalised before the residual add
// (ResidualDesc::post_norm; post_attention_layernorm stays the pre-MLP norm).
ArchDesc make_glm4() {
  ArchDesc a = make_glm();
  a.family = "glm4";
  a.layer[size_t(Role::PostAttnNorm)].pattern = "model.layers.%d.post_self_attn_layernorm.weight";
  a.layer[size_t(Role::PostMlpNorm)].pattern = "model.layers.%d.post_mlp_layernorm.weight";
  a.residual.post_norm = true;
  a.layer[size_t(Role::PostAttnNorm)].gguf = "blk.%d.post_attention_norm";
  a.layer[size_t(Role::PostMlpNorm)].gguf = "blk.%d.post_ffw_norm";
  // llama.cpp's glm4 graph: q/k/v apart (+ biases), ffn_up = [gate | up], the post-norms, rows as
  // stored (consecutive-pair rotary), key_length for a head size other than hidden / heads.
  a.gguf_arch = "glm4";
  a.gguf_tokenizer_pre = nullptr;
  a.gguf_heads_span_hidden = false;
  return a;
}

struct Entry {
  const char* model_type;
  const ArchDesc* desc;
  // A variant: chosen for its model_type when config.json holds one of these keys (not false /
  // null); the entry without markers is the default.
  std::vector<const char*> markers;
};

const std::vector<Entry>& registry() {
  static const ArchDesc llama = make_llama_like("llama", llama_biases(), "Llama");
  // MistralAttention / MistralMLP build every projection with bias=False (no config key).
  static const ArchDesc mistral = make_llama_like("mistral", {}, "Mistral");
  // Qwen2Attention: q/k/v always with a bias, o without; the MLP has none.
  static const ArchDesc qwen2 = make_llama_like("qwen2", {{nullptr, {Role::QBias, Role::KBias, Role::VBias}}}, "Qwen2");
  static const ArchDesc chatglm = make_chatglm();
  static const ArchDesc chatglm_v1 = make_chatglm_v1();
  static const ArchDesc phi3 = make_phi3();
  static const ArchDesc glm = make_glm();
  static const ArchDesc glm4 = make_glm4();
  static const std::vector<Entry> entries = {{"llama", &llama, {}},
                                             {"mistral", &mistral, {}},
                                             {"qwen2", &qwen2, {}},
                                             {"chatglm", &chatglm_v1, {"position_encoding_2d", "inner_hidden_size"}},
                                             {"chatglm", &chatglm, {}},
                                             {"phi3", &phi3, {}},
                                             {"glm", &glm, {}},
                                             {"glm4", &glm4, {}}};
  return entries;
}

}  // namespace

namespace {
const ArchDesc& select_arch(const std::string& model_type, const nlohmann::json* cfg, const std::string& config_file) {
  std::string known;
  for (const Entry& e : registry()) {
    if (model_type == e.model_type) {
      if (e.markers.empty()) return *e.desc;
      for (const char* key : e.markers)
        if (cfg && cfg->is_object() && cfg->contains(key) && !(*cfg)[key].is_null() &&
            !((*cfg)[key].is_boolean() && !(*cfg)[key].get<bool>()))
          return *e.desc;
      continue;
    }
  }
  // Whole names ("glm" is inside "chatglm": a substring test left it out of the list).
  for (const std::string& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
  throw input_error(config_file, "model_type '" + model_type + "' is not supported (" + known + " are)");
}
}  // namespace

const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file) {
  return select_arch(model_type, nullptr, config_file);
}

const ArchDesc& arch_for_config(const nlohmann::json& cfg, const std::string& config_file) {
  if (!cfg.is_object() || !cfg.contains("model_type") || !cfg["model_type"].is_string())
    throw input_error(config_file, "missing field 'model_type'");
  return select_arch(cfg["model_type"].get<std::string>(), &cfg, config_file);
}

const ArchDesc& arch_for_config(const std::string& model_type, const nlohmann::json& cfg, const std::string& config_file) {
  return select_arch(model_type, &cfg, config_file);
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const Entry& e : registry())
    if (std::find(out.begin(), out.end(), e.model_type) == out.end()) out.push_back(e.model_type);
  return out;
}

int64_t fused_row(const FusedTensor& f, int part, int64_t row, int64_t part_offset, int64_t part_rows, int head_dim) {
  if (f.layout == FusedLayout::Concat) return part_offset + row;
  // PerHead: head h of every part sits together, parts in order, head_dim rows each.
  const int64_t h = row / head_dim, i = row % head_dim;
  (void)part_rows;
  return (h * int64_t(f.parts.size()) + part) * head_dim + i;
}

bool has_role(const ArchDesc& a, Role r) {
  const RoleDesc& d = a.layer[size_t(r)];
  if (d.pattern) return true;
  return fused_of(a, r) != nullptr;
}

bool has_global_role(const ArchDesc& a, GlobalRole g) { return a.global[size_t(g)].pattern != nullptr; }

const RoleDesc& role_desc(const ArchDesc& a, Role r) { return a.layer[size_t(r)]; }

const FusedTensor* fused_of(const ArchDesc& a, Role r) {
  for (const FusedTensor& f : a.fused)
    for (Role p : f.parts)
      if (p == r) return &f;
  return nullptr;
}

std::string fused_tensor_name(const FusedTensor& f, int layer) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f.pattern, layer);
  return buf;
}

std::string layer_tensor_name(const ArchDesc& a, Role r, int layer) {
  const RoleDesc& d = role_desc(a, r);
  if (!d.pattern) {
    const FusedTensor* f = fused_of(a, r);
    if (!f) throw RuntimeError("architecture table '" + a.family + "': role '" + d.name + "' has no tensor name");
    return fused_tensor_name(*f, layer) + "[" + d.name + "]";
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, d.pattern, layer);
  return buf;
}

namespace {
// Role names and shapes are the same in every family; the llama table stands for all of them.
const ArchDesc& reference_table() { return arch_for_model_type("llama", "<builtin>"); }
}  // namespace

const std::vector<Role>& matrix_roles() {
  static const std::vector<Role> roles = [] {
    std::vector<Role> out;
    const ArchDesc& a = reference_table();
    for (int r = 0; r < kNumLayerRoles; r++)
      if (a.layer[size_t(r)].axis1 != Space::None) out.push_back(Role(r));
    return out;
  }();
  return roles;
}

bool is_attention_role(Role r) {
  switch (r) {
    case Role::AttnNorm: case Role::AttnNormBias: case Role::Q: case Role::QBias: case Role::K: case Role::KBias: case Role::V: case Role::VBias:
    case Role::O: case Role::OBias: case Role::PostAttnNorm: return true;
    default: return false;
  }
}

bool is_matrix_role(Role r) {
  const auto& m = matrix_roles();
  return std::find(m.begin(), m.end(), r) != m.end();
}

bool role_from_short_name(const std::string& s, Role* out) {
  for (Role r : matrix_roles())
    if (s == role_desc(reference_table(), r).name) {
      *out = r;
      return true;
    }
  return false;
}

Role bias_role_of(const ArchDesc& a, Role matrix) {
  for (int r = 0; r < kNumLayerRoles; r++)
    if (a.layer[size_t(r)].is_bias && a.layer[size_t(r)].bias_of == matrix) return Role(r);
  return Role::Count;
}

const BiasSwitch* bias_switch_of(const ArchDesc& a, Role r) {
  for (const BiasSwitch& s : a.bias_switches)
    if (std::find(s.roles.begin(), s.roles.end(), r) != s.roles.end()) return &s;
  return nullptr;
}

Presence bias_presence(const ArchDesc& a, Role r, const nlohmann::json& cfg, const std::string& config_file) {
  const BiasSwitch* s = bias_switch_of(a, r);
  if (!s) return Presence::Absent;
  if (!s->config_key) return Presence::Required;
  if (!cfg.is_object() || !cfg.contains(s->config_key) || cfg[s->config_key].is_null()) return Presence::Optional;
  if (!cfg[s->config_key].is_boolean()) throw input_error(config_file, std::string("field '") + s->config_key + "' must be true or false");
  return cfg[s->config_key].get<bool>() ? Presence::Required : Presence::Absent;
}

}  // namespace llmprune
