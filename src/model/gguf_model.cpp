// GGUF export (llama.cpp's "llama" / "deci" layout) and GGUF import. docs/export.md.
#include "model/gguf_model.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/fs.h"
#include "io/gguf.h"
#include "tokenizer/hf_tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune {

using gguf::GGUFFile;
using gguf::GGUFWriter;
using gguf::TensorToWrite;
using gguf::Value;
using gguf::ValueType;

// ---------------------------------------------------------------------------------------------
// q/k row permutation

namespace {

// to_gguf: dst row h*D + 2i + a = src row h*D + a*D/2 + i (llama.cpp convert_hf_to_gguf's permute);
// otherwise the inverse.
void permute_rope_rows(const void* src, void* dst, int64_t rows, size_t row_bytes, int head_dim, bool to_gguf) {
  if (head_dim <= 0 || head_dim % 2 != 0 || rows % head_dim != 0)
    throw RuntimeError("rope row permutation: " + std::to_string(rows) + " rows are not whole heads of " + std::to_string(head_dim));
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < rows / head_dim; h++)
    for (int64_t a = 0; a < 2; a++)
      for (int64_t i = 0; i < half; i++) {
        int64_t hf_row = h * head_dim + a * half + i, gg_row = h * head_dim + 2 * i + a;
        int64_t from = to_gguf ? hf_row : gg_row, to = to_gguf ? gg_row : hf_row;
        std::memcpy(d + size_t(to) * row_bytes, s + size_t(from) * row_bytes, row_bytes);
      }
}

}  // namespace

void rope_rows_hf_to_gguf(const void* src, void* dst, int64_t rows, size_t row_bytes, int head_dim) {
  permute_rope_rows(src, dst, rows, row_bytes, head_dim, true);
}
void rope_rows_gguf_to_hf(const void* src, void* dst, int64_t rows, size_t row_bytes, int head_dim) {
  permute_rope_rows(src, dst, rows, row_bytes, head_dim, false);
}

namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers

uint32_t file_type_of(DType t) {
  // llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_BF16 = 32.
  return t == DType::F32 ? 0u : t == DType::F16 ? 1u : 32u;
}

bool is_rope_role(Role r) { return r == Role::Q || r == Role::K || r == Role::QBias || r == Role::KBias; }

// The shortest decimal that reads back as the same float: GGUF stores f32, config.json decimals
// (1e-05, not 9.99999974738e-06), so a round trip gives back the config's spelling.
double f32_to_decimal(float f) {
  char buf[64];
  for (int prec = 1; prec <= 9; prec++) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, double(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return double(f);
}

// Converts `t` (any storage dtype) into `dtype` bytes at `out` (n elements).
void convert_into(const Tensor& t, DType dtype, uint8_t* out) {
  size_t n = size_t(t.numel());
  if (t.dtype == dtype) {
    std::memcpy(out, t.data, t.nbytes());
    return;
  }
  constexpr size_t kChunk = 1 << 16;
  std::vector<float> tmp(std::min(n, kChunk));
  const auto* src = static_cast<const uint8_t*>(t.data);
  for (size_t i = 0; i < n; i += kChunk) {
    size_t m = std::min(kChunk, n - i);
    to_f32(t.dtype, src + i * dtype_size(t.dtype), tmp.data(), m);
    from_f32(dtype, tmp.data(), out + i * dtype_size(dtype), m);
  }
}

// Minimal protobuf reading (SentencePiece's NormalizerSpec) and writing (a ModelProto for
// libsentencepiece built from GGUF metadata). Wire format: key = field << 3 | wire type.
struct Proto {
  std::string_view b;
  size_t i = 0;
  bool ok = true;
  bool done() const { return i >= b.size() || !ok; }
  uint64_t varint() {
    uint64_t r = 0;
    for (int s = 0; s < 64 && i < b.size(); s += 7) {
      uint8_t c = uint8_t(b[i++]);
      r |= uint64_t(c & 0x7f) << s;
      if (c < 0x80) return r;
    }
    ok = false;
    return 0;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (!ok || n > b.size() - i) {
      ok = false;
      return {};
    }
    auto v = b.substr(i, size_t(n));
    i += size_t(n);
    return v;
  }
  void skip(uint32_t wire) {
    if (wire == 0) varint();
    else if (wire == 1) i += 8;
    else if (wire == 2) bytes();
    else if (wire == 5) i += 4;
    else ok = false;
  }
};

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  s.push_back(char(v));
}
void put_key(std::string& s, int field, int wire) { put_varint(s, uint64_t(field) << 3 | uint64_t(wire)); }
void put_bytes(std::string& s, int field, std::string_view v) {
  put_key(s, field, 2);
  put_varint(s, v.size());
  s.append(v);
}
void put_int(std::string& s, int field, int64_t v) {
  put_key(s, field, 0);
  put_varint(s, uint64_t(v));
}
void put_float(std::string& s, int field, float v) {
  put_key(s, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  s.append(b, 4);
}

struct SpmNormalizer {
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
  std::string charsmap;
};

// ModelProto field 3 (NormalizerSpec): 2 precompiled_charsmap, 3 add_dummy_prefix,
// 4 remove_extra_whitespaces (proto defaults: true, true).
SpmNormalizer read_spm_normalizer(const fs::path& model_file) {
  SpmNormalizer n;
  sentencepiece::SentencePieceProcessor sp;
  try {
    if (!sp.Load(model_file.string()).ok()) return n;
  } catch (const std::exception&) {  // malformed model: the caller's own load reports it
    return n;
  }
  std::string proto = sp.serialized_model_proto();
  Proto p{proto};
  while (!p.done()) {
    uint64_t key = p.varint();
    if (key == ((3 << 3) | 2)) {
      Proto q{p.bytes()};
      while (!q.done()) {
        uint64_t k = q.varint();
        if (k == ((2 << 3) | 2)) n.charsmap = std::string(q.bytes());
        else if (k == ((3 << 3) | 0)) n.add_dummy_prefix = q.varint() != 0;
        else if (k == ((4 << 3) | 0)) n.remove_extra_whitespaces = q.varint() != 0;
        else q.skip(uint32_t(k & 7));
      }
    } else {
      p.skip(uint32_t(key & 7));
    }
  }
  return n;
}

json read_json_or_null(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return nullptr;
  json j = json::parse(in, nullptr, false);
  return j.is_discarded() ? json(nullptr) : j;
}

// add_bos_token as llama.cpp's converter derives it: tokenizer_config.json's flag, else whether
// tokenizer.json's post-processor template starts with a special token (LLaMA-3), else the
// SentencePiece convention (LLaMA-1/2 add BOS).
bool derive_add_bos(const fs::path& dir, const std::string& vocab_model) {
  json tc = read_json_or_null(dir / "tokenizer_config.json");
  if (tc.is_object() && tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) return tc["add_bos_token"].get<bool>();
  json tj = read_json_or_null(dir / "tokenizer.json");
  if (tj.is_object() && tj.contains("post_processor") && tj["post_processor"].is_object()) {
    std::vector<json> procs = {tj["post_processor"]};
    if (tj["post_processor"].contains("processors") && tj["post_processor"]["processors"].is_array())
      for (auto& p : tj["post_processor"]["processors"]) procs.push_back(p);
    for (auto& p : procs)
      if (p.is_object() && p.value("type", "") == "TemplateProcessing" && p.contains("single") && p["single"].is_array() &&
          !p["single"].empty() && p["single"][0].is_object() && p["single"][0].contains("SpecialToken"))
        return true;
    return false;
  }
  return vocab_model == "llama";
}

struct VocabMeta {
  VocabExport v;
  int32_t bos = -1, eos = -1;
  bool add_bos = true;
  std::optional<SpmNormalizer> spm;
};

// ---------------------------------------------------------------------------------------------
// Export

struct ArchKeys {
  std::string arch;  // "llama" or "deci"
  std::string k(const std::string& suffix) const { return arch + "." + suffix; }
};

void write_vocab(GGUFWriter& w, const VocabMeta& vm, int64_t n_vocab, const std::string& where) {
  VocabExport v = vm.v;
  if (int64_t(v.tokens.size()) > n_vocab)
    throw input_error(where, "the tokenizer has " + std::to_string(v.tokens.size()) + " tokens but the embedding only " +
                                 std::to_string(n_vocab) + " rows");
  // Pad to the embedding size as llama.cpp's converter does ([PADn], unused).
  for (int64_t i = int64_t(v.tokens.size()); i < n_vocab; i++) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.scores.push_back(-1000.0f);
    v.types.push_back(int32_t(TokenType::kUnused));
  }
  // llama.cpp requires every token string to be unique (its loader asserts it and aborts). A
  // family's appended special can spell a piece the SentencePiece model already has (ChatGLM's
  // "eop" in a vocabulary with the piece "eop"): the later, control one is written as "<eop>"
  // (GLM-4's spelling), or with its id, so the ids stay as they are.
  std::set<std::string> seen;
  for (size_t i = 0; i < v.tokens.size(); i++) {
    if (seen.insert(v.tokens[i]).second) continue;
    if (v.types[i] != int32_t(TokenType::kControl) && v.types[i] != int32_t(TokenType::kUnused))
      throw input_error(where, "the vocabulary has the token '" + v.tokens[i] + "' twice (id " + std::to_string(i) + ")");
    std::string unique = "<" + v.tokens[i] + ">";
    if (seen.count(unique)) unique = "[" + v.tokens[i] + "#" + std::to_string(i) + "]";
    v.tokens[i] = unique;
    seen.insert(unique);
  }
  w.set("tokenizer.ggml.model", v.model);
  w.set("tokenizer.ggml.pre", v.pre.empty() ? std::string("default") : v.pre);
  w.set("tokenizer.ggml.tokens", Value::array_of(v.tokens));
  if (v.model == "llama") {
    if (v.scores.size() != v.tokens.size()) throw RuntimeError("vocabulary export: scores and tokens differ in count");
    w.set("tokenizer.ggml.scores", Value::array_of(v.scores));
  }
  w.set("tokenizer.ggml.token_type", Value::array_of(v.types));
  if (!v.merges.empty()) w.set("tokenizer.ggml.merges", Value::array_of(v.merges));
  if (vm.bos >= 0) w.set("tokenizer.ggml.bos_token_id", uint32_t(vm.bos));
  if (vm.eos >= 0) w.set("tokenizer.ggml.eos_token_id", uint32_t(vm.eos));
  for (size_t i = 0; i < v.types.size(); i++)
    if (v.types[i] == int32_t(TokenType::kUnknown)) {
      w.set("tokenizer.ggml.unknown_token_id", uint32_t(i));
      break;
    }
  w.set("tokenizer.ggml.add_bos_token", vm.add_bos);
  w.set("tokenizer.ggml.add_eos_token", false);
  if (vm.spm) {
    w.set("tokenizer.ggml.add_space_prefix", vm.spm->add_dummy_prefix);
    w.set("tokenizer.ggml.remove_extra_whitespaces", vm.spm->remove_extra_whitespaces);
    if (!vm.spm->charsmap.empty())
      w.set("tokenizer.ggml.precompiled_charsmap",
            Value::array_of(std::vector<uint8_t>(vm.spm->charsmap.begin(), vm.spm->charsmap.end())));
  }
}

// Where the vocabulary comes from; false when there is none to write.
bool collect_vocab(const Model& m, const Tokenizer* tok, VocabMeta* out, std::vector<gguf::KeyValue>* copied) {
  const fs::path dir = fs::is_directory(m.dir) ? m.dir : m.dir.parent_path();
  const bool from_gguf = fs::is_regular_file(m.dir) && m.dir.extension() == ".gguf";
  // The SentencePiece file beside the model (tokenizer.model, or the family's own name).
  fs::path sp = find_tokenizer_file(dir, tokenizer_extras(*m.arch));
  if (sp.filename() == "tokenizer.json") sp.clear();
  if (tok && tok->kind() != "sentencepiece") {
    out->v = export_vocab(*tok);
  } else if (tok && !sp.empty()) {
    out->v = export_sentencepiece_vocab(sp);
    out->spm = read_spm_normalizer(sp);
    // Specials the family appends after the pieces (ChatGLM's [gMASK], sop, ...): control
    // tokens, as llama.cpp's converter marks them.
    for (int32_t id = int32_t(out->v.tokens.size()); id < tok->vocab_size(); id++) {
      out->v.tokens.push_back(tok->id_to_piece(id));
      out->v.scores.push_back(0.0f);
      out->v.types.push_back(int32_t(TokenType::kControl));
    }
    if (m.arch->gguf_tokenizer_pre) out->v.pre = m.arch->gguf_tokenizer_pre;
  } else if (from_gguf) {
    GGUFFile src = GGUFFile::open(m.dir.string());
    for (auto& kv : src.metadata())
      if (kv.key.rfind("tokenizer.", 0) == 0) copied->push_back(kv);
    return !copied->empty();
  } else if (tok) {
    throw input_error(dir.string(), "no tokenizer.model next to the model to export the SentencePiece vocabulary from");
  } else {
    return false;
  }
  out->bos = tok->bos_id();
  out->eos = tok->eos_id();
  out->add_bos = derive_add_bos(dir, out->v.model);
  if (!m.arch->tokenizer.prefix.empty()) out->add_bos = false;  // the prefix comes from the chat template (llama.cpp's converter)
  return true;
}

}  // namespace

void export_gguf(const Model& m, const Tokenizer* tok, const fs::path& out, DType dtype) {
  const ModelConfig& c = m.cfg;
  const std::string where = m.dir.empty() ? std::string("model") : m.dir.string();
  if (c.layers.empty()) throw input_error(where, "model has no layers");
  if (c.layers.size() > 512) throw input_error(where, "llama.cpp supports at most 512 layers, model has " + std::to_string(c.layers.size()));
  const bool ragged = !c.uniform();
  const ArchDesc& arch = *m.arch;
  if (!arch.gguf_arch)
    throw input_error(where, "no GGUF for this " + arch.family + " model: " +
                                 (arch.gguf_refusal ? arch.gguf_refusal : "llama.cpp has no architecture for it") +
                                 "; export it with --hf");
  if (ragged && !arch.gguf_ragged)
    throw input_error(where, std::string("llama.cpp's ") + arch.gguf_arch + " architecture takes one head count and MLP width for all layers, but this " +
                                 arch.family + " model's layers differ (pruned unevenly); export it with --hf, or prune it uniformly");
  const int rot_dim = arch.rotary.rotated_dims(c.head_dim);
  if (arch.gguf_heads_span_hidden)
    for (size_t l = 0; l < m.layers.size(); l++)
      if (c.layers[l].q_dim() != c.hidden)
        throw input_error(where, "layer " + std::to_string(l) + ": llama.cpp's " + arch.gguf_arch + " graph needs heads x head size = hidden size (" +
                                     std::to_string(c.hidden) + "), but this layer has " + std::to_string(c.layers[l].n_head) + " x " +
                                     std::to_string(c.head_dim) + " (attention heads were pruned); export it with --hf");
  for (size_t l = 0; l < m.layers.size(); l++)
    for (int r = 0; r < kNumLayerRoles; r++)
      if (role_desc(arch, Role(r)).is_bias && !m.layers[l].w[size_t(r)].empty() &&
          std::find(arch.gguf_biases.begin(), arch.gguf_biases.end(), Role(r)) == arch.gguf_biases.end())
        throw input_error(where, "layer " + std::to_string(l) + ": llama.cpp's " + arch.gguf_arch + " architecture has no " +
                                     role_desc(arch, Role(r)).name + " ('" + layer_tensor_name(arch, Role(r), int(l)) +
                                     "', e.g. from --compensate bias); export it with --hf");
  // llama.cpp's deci graph runs a layer with head_count 0 as attention-free (the residual passes
  // to its MLP), but one with feed_forward_length 0 as the identity: its `n_ff == 0` branch
  // continues before the attention output is added to the residual stream. A layer with attention
  // and no MLP is therefore written with a one-channel MLP whose weights are zero (it adds exactly
  // 0): 3 x hidden + hidden parameters more, the same function.
  auto zero_mlp = [](const LayerConfig& l) { return l.has_attention() && !l.has_mlp(); };
  ArchKeys K{ragged ? "deci" : arch.gguf_arch};
  // q/k/v biases of any size: llama.cpp sizes attn_q.bias by the q projection (n_head * head_dim,
  // create_tensor_qkv) in the release node-llama-cpp 3.21.1 carries; b5981 sized it by n_embd.

  GGUFWriter w(out.string());
  w.set("general.architecture", K.arch);
  w.set("general.type", "model");
  std::string name = m.dir.empty() ? out.stem().string() : (fs::is_directory(m.dir) ? m.dir.filename() : m.dir.stem()).string();
  if (name.empty()) name = out.stem().string();
  w.set("general.name", name);
  w.set("general.file_type", file_type_of(dtype));
  w.set(K.k("vocab_size"), uint32_t(c.vocab));
  w.set(K.k("context_length"), uint32_t(c.max_pos));
  w.set(K.k("embedding_length"), uint32_t(c.hidden));
  w.set(K.k("block_count"), uint32_t(c.layers.size()));
  auto per_layer = [&](const std::string& key, auto get) {
    if (!ragged) {
      w.set(K.k(key), uint32_t(get(c.layers[0])));
      return;
    }
    std::vector<uint32_t> v;
    for (auto& l : c.layers) v.push_back(uint32_t(get(l)));
    w.set(K.k(key), Value::array_of(v));
  };
  per_layer("feed_forward_length", [&](const LayerConfig& l) { return zero_mlp(l) ? 1 : l.d_ff; });
  per_layer("attention.head_count", [](const LayerConfig& l) { return l.n_head; });
  per_layer("attention.head_count_kv", [](const LayerConfig& l) { return l.n_kv_head; });
  w.set(K.k("rope.freq_base"), float(c.rope_theta));
  w.set(K.k("attention.layer_norm_rms_epsilon"), float(c.rms_eps));
  w.set(K.k("rope.dimension_count"), uint32_t(rot_dim));
  if (!arch.gguf_heads_span_hidden) {  // else llama.cpp derives the head size as hidden / heads
    w.set(K.k("attention.key_length"), uint32_t(c.head_dim));
    w.set(K.k("attention.value_length"), uint32_t(c.head_dim));
  }
  if (c.rope_scaling.type == "linear") {
    w.set(K.k("rope.scaling.type"), "linear");
    w.set(K.k("rope.scaling.factor"), float(c.rope_scaling.factor));
  } else if (c.rope_scaling.type == "llama3") {
    // llama.cpp takes LLaMA-3.1 scaling as per-frequency divisors (rope_freqs.weight); the
    // parameters are kept too so that llmprune reads the config back exactly.
    w.set("llmprune.rope_scaling.type", "llama3");
    w.set("llmprune.rope_scaling.factor", float(c.rope_scaling.factor));
    w.set("llmprune.rope_scaling.low_freq_factor", float(c.rope_scaling.low_freq_factor));
    w.set("llmprune.rope_scaling.high_freq_factor", float(c.rope_scaling.high_freq_factor));
    w.set("llmprune.rope_scaling.original_max_position_embeddings", uint32_t(c.rope_scaling.original_max_position));
  }

  VocabMeta vm;
  std::vector<gguf::KeyValue> copied;
  if (collect_vocab(m, tok, &vm, &copied)) {
    if (copied.empty()) {
      write_vocab(w, vm, c.vocab, where);
    } else {
      for (auto& kv : copied) w.set(kv.key, kv.value);
    }
  }

  // Tensors, in llama.cpp's order: embedding, (rope_freqs), layers, output norm, output.
  auto add = [&](const std::string& gname, const Tensor& t, bool rope_perm) {
    const bool vec = t.ndim() == 1;
    const DType to = vec ? DType::F32 : dtype;
    std::vector<uint64_t> dims(t.shape.rbegin(), t.shape.rend());
    Tensor keep = t;
    const int hd = c.head_dim;
    w.add_tensor(TensorToWrite::make(gname, dims, to, [keep, to, rope_perm, hd](std::span<uint8_t> dst) {
      if (!rope_perm) {
        convert_into(keep, to, dst.data());
        return;
      }
      std::vector<uint8_t> tmp(dst.size());
      convert_into(keep, to, tmp.data());
      int64_t rows = keep.dim(0);
      size_t row_bytes = dst.size() / size_t(rows);
      rope_rows_hf_to_gguf(tmp.data(), dst.data(), rows, row_bytes, hd);
    }));
  };
  add("token_embd.weight", m.embed(), false);
  if (c.rope_scaling.type == "llama3") {
    ModelConfig plain = c;
    plain.rope_scaling = RopeScaling{};
    std::vector<float> base = rope_inv_freq(plain, c.head_dim), scaled = rope_inv_freq(c, c.head_dim);
    auto factors = std::make_shared<std::vector<float>>(base.size());
    for (size_t i = 0; i < base.size(); i++) (*factors)[i] = base[i] / scaled[i];
    w.add_tensor(TensorToWrite::make("rope_freqs.weight", {uint64_t(factors->size())}, DType::F32,
                                     [factors](std::span<uint8_t> dst) { std::memcpy(dst.data(), factors->data(), dst.size()); }));
  }
  for (size_t l = 0; l < m.layers.size(); l++) {
    std::vector<const FusedTensor*> done;
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = m.layers[l].w[size_t(r)];
      if (t.empty()) continue;
      const RoleDesc& d = role_desc(arch, Role(r));
      char buf[128];
      if (const FusedTensor* f = fused_of(arch, Role(r))) {
        // llama.cpp keeps this family's fused tensor fused (chatglm: attn_qkv, ffn_up = [gate | up]).
        if (std::find(done.begin(), done.end(), f) != done.end()) continue;
        done.push_back(f);
        if (!f->gguf) throw RuntimeError(std::string("architecture table '") + arch.family + "': '" + f->pattern + "' has no llama.cpp name");
        std::vector<Tensor> parts;
        std::vector<int64_t> shape = t.shape;
        shape[0] = 0;
        for (Role p : f->parts) {
          parts.push_back(m.layers[l][p]);
          shape[0] += parts.back().dim(0);
        }
        const DType to = t.ndim() == 1 ? DType::F32 : dtype;
        std::snprintf(buf, sizeof buf, f->gguf, int(l));
        w.add_tensor(TensorToWrite::make(std::string(buf) + (d.is_bias ? ".bias" : ".weight"),
                                         std::vector<uint64_t>(shape.rbegin(), shape.rend()), to, [parts, to](std::span<uint8_t> dst) {
                                           uint8_t* o = dst.data();
                                           for (const Tensor& p : parts) {
                                             convert_into(p, to, o);
                                             o += size_t(p.numel()) * dtype_size(to);
                                           }
                                         }));
        continue;
      }
      std::snprintf(buf, sizeof buf, d.gguf, int(l));
      add(std::string(buf) + (d.is_bias ? ".bias" : ".weight"), t, arch.gguf_permute_qk && is_rope_role(Role(r)));
    }
    if (zero_mlp(c.layers[l])) {
      const int64_t C = c.hidden;
      Tensor ones = Tensor::zeros(DType::F32, {C});
      for (int64_t i = 0; i < C; i++) ones.f32_mut()[i] = 1.0f;
      for (auto [role, t] : {std::pair{Role::MlpNorm, ones}, std::pair{Role::Gate, Tensor::zeros(DType::F32, {1, C})},
                             std::pair{Role::Up, Tensor::zeros(DType::F32, {1, C})}, std::pair{Role::Down, Tensor::zeros(DType::F32, {C, 1})}}) {
        char buf[128];
        std::snprintf(buf, sizeof buf, role_desc(arch, role).gguf, int(l));
        add(std::string(buf) + ".weight", t, false);
      }
    }
  }
  add("output_norm.weight", m.final_norm(), false);
  if (!c.tied) add("output.weight", m.global[size_t(GlobalRole::LmHead)], false);
  w.finish();
}

// ---------------------------------------------------------------------------------------------
// Import

namespace {

struct GgufHolder {
  GGUFFile f;
};

// Per-layer value of `key` (scalar or array of n); throws naming the key.
std::vector<int64_t> layer_values(const GGUFFile& f, const std::string& key, size_t n, bool required, int64_t fallback) {
  const Value* v = f.find(key);
  if (!v) {
    if (required) throw input_error(f.path(), "missing key '" + key + "'");
    return std::vector<int64_t>(n, fallback);
  }
  if (v->type() == ValueType::Array) {
    auto arr = f.get_int_array(key);
    if (arr.size() != n)
      throw input_error(f.path(), "key '" + key + "' has " + std::to_string(arr.size()) + " entries, expected one per layer (" +
                                      std::to_string(n) + ")");
    return arr;
  }
  return std::vector<int64_t>(n, int64_t(f.get_uint(key)));
}

// Known LLaMA-3.x rope scaling parameter sets; the one reproducing rope_freqs.weight is taken.
bool fit_llama3_scaling(const std::vector<float>& factors, ModelConfig c, RopeScaling* out) {
  if (factors.empty()) return false;
  double factor = *std::max_element(factors.begin(), factors.end());
  for (auto [low, high, orig] : {std::tuple{1.0, 4.0, 8192}, std::tuple{1.0, 4.0, 4096}, std::tuple{1.0, 4.0, 2048}}) {
    RopeScaling rs;
    rs.type = "llama3";
    rs.factor = factor;
    rs.low_freq_factor = low;
    rs.high_freq_factor = high;
    rs.original_max_position = orig;
    ModelConfig plain = c;
    plain.rope_scaling = RopeScaling{};
    c.rope_scaling = rs;
    auto base = rope_inv_freq(plain, c.head_dim), scaled = rope_inv_freq(c, c.head_dim);
    if (base.size() != factors.size()) return false;
    bool match = true;
    for (size_t i = 0; i < base.size() && match; i++)
      match = std::fabs(base[i] / scaled[i] - factors[i]) <= 1e-4f * std::max(1.0f, factors[i]);
    if (match) {
      *out = rs;
      return true;
    }
  }
  return false;
}

}  // namespace

Model load_gguf_model(const fs::path& file) {
  auto holder = std::make_shared<GgufHolder>(GgufHolder{GGUFFile::open(file.string())});
  const GGUFFile& f = holder->f;
  const std::string src = file.string();
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "deci")
    throw input_error(src, "general.architecture '" + arch + "' is not supported (llama, deci are)");
  ArchKeys K{arch};
  const int64_t n_layer = int64_t(f.get_uint(K.k("block_count")));
  const int64_t hidden = int64_t(f.get_uint(K.k("embedding_length")));
  if (n_layer <= 0 || n_layer > 512) throw input_error(src, "key '" + K.k("block_count") + "' must be in 1..512");
  if (hidden <= 0) throw input_error(src, "key '" + K.k("embedding_length") + "' must be positive");
  const size_t L = size_t(n_layer);
  auto heads = layer_values(f, K.k("attention.head_count"), L, true, 0);
  auto kv_heads = f.find(K.k("attention.head_count_kv")) ? layer_values(f, K.k("attention.head_count_kv"), L, true, 0) : heads;
  auto ff = layer_values(f, K.k("feed_forward_length"), L, true, 0);
  // head_count 0 with head_count_kv 0 is an attention-free layer and feed_forward_length 0 an
  // MLP-free one (deci, as depth pruning writes them); query heads without KV heads are deci's
  // "linear attention" (a bare o_proj), which llmprune does not run.
  bool removed_sublayers = false;
  int64_t max_heads = 0, max_kv = 0, max_ff = 0;
  for (size_t l = 0; l < L; l++) {
    if ((heads[l] <= 0) != (kv_heads[l] <= 0))
      throw input_error(src, "layer " + std::to_string(l) + " has " + std::to_string(heads[l]) + " query heads and " +
                                 std::to_string(kv_heads[l]) + " KV heads (a Nemotron-style linear-attention layer), which llmprune cannot run");
    removed_sublayers |= heads[l] <= 0 || ff[l] <= 0;
    max_heads = std::max(max_heads, heads[l]);
    max_kv = std::max(max_kv, kv_heads[l]);
    max_ff = std::max(max_ff, ff[l]);
  }
  if (max_heads <= 0) throw input_error(src, "no layer has attention (" + K.k("attention.head_count") + " is 0 everywhere)");
  int64_t head_dim = f.find(K.k("attention.key_length")) ? int64_t(f.get_uint(K.k("attention.key_length"))) : hidden / max_heads;
  if (f.find(K.k("attention.value_length")) && int64_t(f.get_uint(K.k("attention.value_length"))) != head_dim)
    throw input_error(src, "key '" + K.k("attention.value_length") + "' differs from the key length; llmprune needs equal q/k/v head sizes");
  if (f.find(K.k("rope.dimension_count")) && int64_t(f.get_uint(K.k("rope.dimension_count"))) != head_dim)
    throw input_error(src, "key '" + K.k("rope.dimension_count") + "' is not the head size " + std::to_string(head_dim) +
                               " (partial rotary embeddings are not supported)");
  if (head_dim <= 0 || head_dim % 2 != 0) throw input_error(src, "head size " + std::to_string(head_dim) + " must be a positive even number");
  if (f.find(K.k("expert_count")) && f.get_uint(K.k("expert_count")) > 0)
    throw input_error(src, "key '" + K.k("expert_count") + "': mixture-of-experts models are not supported");

  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) throw input_error(src, "missing tensor 'token_embd.weight'");
  if (emb->dims.size() != 2) throw input_error(src, "tensor 'token_embd.weight' must be 2-D");
  const int64_t vocab = int64_t(emb->dims[1]);

  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", hidden},
            {"num_hidden_layers", n_layer},
            {"vocab_size", vocab},
            {"num_attention_heads", removed_sublayers ? max_heads : heads[0]},
            {"num_key_value_heads", removed_sublayers ? max_kv : kv_heads[0]},
            {"head_dim", head_dim},
            {"intermediate_size", removed_sublayers ? max_ff : ff[0]},
            {"max_position_embeddings", f.find(K.k("context_length")) ? int64_t(f.get_uint(K.k("context_length"))) : 2048},
            {"rms_norm_eps", f32_to_decimal(float(f.get_float(K.k("attention.layer_norm_rms_epsilon"))))},
            {"rope_theta", f.find(K.k("rope.freq_base")) ? f32_to_decimal(float(f.get_float(K.k("rope.freq_base")))) : 10000.0},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", f.find_tensor("output.weight") == nullptr}};
  if (removed_sublayers) {  // what the safetensors config states for layers without a sub-block
    json layers = json::array();
    for (size_t l = 0; l < L; l++)
      layers.push_back({{"num_attention_heads", heads[l]}, {"num_key_value_heads", kv_heads[l]}, {"intermediate_size", ff[l]}});
    j["llmprune_layers"] = layers;
  }
  if (f.find("tokenizer.ggml.bos_token_id")) j["bos_token_id"] = f.get_uint("tokenizer.ggml.bos_token_id");
  if (f.find("tokenizer.ggml.eos_token_id")) j["eos_token_id"] = f.get_uint("tokenizer.ggml.eos_token_id");
  if (const Value* st = f.find(K.k("rope.scaling.type"))) {
    std::string t = f.get_string(K.k("rope.scaling.type"));
    double factor = f.find(K.k("rope.scaling.factor")) ? f.get_float(K.k("rope.scaling.factor")) : 1.0;
    if (t == "linear") {
      if (factor != 1.0) j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", f32_to_decimal(float(factor))}};
    } else if (t != "none") {
      throw input_error(src, "key '" + K.k("rope.scaling.type") + "' is '" + t + "' (only linear and llama3 scaling are supported)");
    }
    (void)st;
  }
  if (f.find("llmprune.rope_scaling.type")) {
    if (f.get_string("llmprune.rope_scaling.type") != "llama3")
      throw input_error(src, "key 'llmprune.rope_scaling.type' must be llama3");
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", f32_to_decimal(float(f.get_float("llmprune.rope_scaling.factor")))},
                         {"low_freq_factor", f32_to_decimal(float(f.get_float("llmprune.rope_scaling.low_freq_factor")))},
                         {"high_freq_factor", f32_to_decimal(float(f.get_float("llmprune.rope_scaling.high_freq_factor")))},
                         {"original_max_position_embeddings", f.get_uint("llmprune.rope_scaling.original_max_position_embeddings")}};
  }
  ModelConfig cfg = ModelConfig::from_json(j, src);
  if (f.find_tensor("rope_freqs.weight") && !f.find("llmprune.rope_scaling.type")) {
    RopeScaling rs;
    if (!fit_llama3_scaling(f.read_f32("rope_freqs.weight"), cfg, &rs))
      throw input_error(src, "tensor 'rope_freqs.weight' holds rope frequency factors that match no known LLaMA-3 scaling");
    cfg.rope_scaling = rs;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", rs.factor}, {"low_freq_factor", rs.low_freq_factor},
                         {"high_freq_factor", rs.high_freq_factor}, {"original_max_position_embeddings", rs.original_max_position}};
    cfg.raw = j;
  }

  // GGUF name -> (HF name, needs the rope un-permutation).
  const ArchDesc& a = arch_for_model_type("llama", src);
  std::map<std::string, std::pair<std::string, bool>> names;
  std::set<std::string> removed_names;  // tensors of a layer's removed sub-block
  for (int g = 0; g < kNumGlobalRoles; g++)
    if (a.global[size_t(g)].gguf) names[std::string(a.global[size_t(g)].gguf) + ".weight"] = {a.global[size_t(g)].pattern, false};
  for (int l = 0; l < n_layer; l++)
    for (int r = 0; r < kNumLayerRoles; r++) {
      const RoleDesc& d = a.layer[size_t(r)];
      if (!has_role(a, Role(r))) continue;  // LayerNorm biases: not a llama role
      char buf[128];
      std::snprintf(buf, sizeof buf, d.gguf, l);
      names[std::string(buf) + (d.is_bias ? ".bias" : ".weight")] = {layer_tensor_name(a, Role(r), l), is_rope_role(Role(r))};
      if (is_attention_role(Role(r)) ? heads[size_t(l)] <= 0 : ff[size_t(l)] <= 0) removed_names.insert(std::string(buf) + (d.is_bias ? ".bias" : ".weight"));
    }

  for (const auto& [gname, hf] : names) {
    const bool optional = hf.first == a.global[size_t(GlobalRole::LmHead)].pattern ||
                          hf.first.find(".bias") != std::string::npos || removed_names.count(gname);
    if (!optional && !f.find_tensor(gname)) throw input_error(src, "missing tensor '" + gname + "'");
  }
  std::map<std::string, Tensor> tensors;
  for (const auto& ti : f.tensors()) {
    if (ti.name == "rope_freqs.weight") continue;
    auto it = names.find(ti.name);
    if (it == names.end()) throw input_error(src, "unexpected tensor '" + ti.name + "' (not part of a llama model)");
    Tensor t;
    t.dtype = f.tensor_dtype(ti);  // throws for quantized types, naming the tensor
    for (uint64_t d : ti.shape()) t.shape.push_back(int64_t(d));
    // Every tensor of a llama model has data; an empty one has no data pointer to copy from
    // (fuzz_gguf: a q/k tensor with 0 columns reached memcpy with a null source).
    for (int64_t d : t.shape)
      if (d <= 0) throw input_error(src, "tensor '" + ti.name + "' has an empty dimension (" + std::to_string(d) + ")");
    // (The first fuzz_gguf find was 0 rows here: "whole heads" by the modulo, then n_bytes / 0.)
    if (it->second.second) {
      if (t.shape.empty() || t.shape[0] % head_dim != 0)
        throw input_error(src, "tensor '" + ti.name + "' has " + std::to_string(t.shape.empty() ? 0 : t.shape[0]) +
                                   " rows, not whole heads of " + std::to_string(head_dim));
      auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[ti.n_bytes]);
      rope_rows_gguf_to_hf(f.tensor_data(ti), buf.get(), t.shape[0], size_t(ti.n_bytes) / size_t(t.shape[0]), int(head_dim));
      t.data = buf.get();
      t.owner = buf;
    } else if (reinterpret_cast<uintptr_t>(f.tensor_data(ti)) % 8 != 0) {
      // general.alignment below 8 (allowed: any power of two) leaves the data misaligned for the
      // kernels' loads; such a tensor gets an aligned copy, as misaligned safetensors data does.
      auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[ti.n_bytes]);
      std::memcpy(buf.get(), f.tensor_data(ti), size_t(ti.n_bytes));
      t.data = buf.get();
      t.owner = buf;
    } else {
      t.data = const_cast<void*>(f.tensor_data(ti));
      t.owner = holder;
    }
    tensors[it->second.first] = std::move(t);
  }
  Model m = Model::from_tensors(std::move(cfg), std::move(tensors), src);
  // The metadata's per-layer sizes must agree with the tensor shapes.
  for (size_t l = 0; l < L; l++) {
    const LayerConfig& lc = m.cfg.layers[l];
    auto check = [&](const char* key, int64_t meta, int64_t actual) {
      if (meta != actual)
        throw input_error(src, "layer " + std::to_string(l) + ": key '" + K.k(key) + "' says " + std::to_string(meta) +
                                   " but the tensors have " + std::to_string(actual));
    };
    check("attention.head_count", heads[l], lc.n_head);
    check("attention.head_count_kv", kv_heads[l], lc.n_kv_head);
    check("feed_forward_length", ff[l], lc.d_ff);
  }
  m.dir = file;
  m.files = {file};
  return m;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer from GGUF metadata

namespace {

class GgufSpmTokenizer : public Tokenizer {
 public:
  GgufSpmTokenizer(const std::string& proto, const std::string& src) : src_(src) {
    sentencepiece::util::Status st;
    try {
      st = sp_.LoadFromSerializedProto(proto);
    } catch (const std::exception& e) {  // libsentencepiece's trie builder throws, e.g. on an empty piece
      throw input_error(src, std::string("the tokenizer.ggml.* vocabulary is not usable as a SentencePiece model: ") + e.what());
    }
    if (!st.ok()) throw input_error(src, "the tokenizer.ggml.* vocabulary is not usable as a SentencePiece model: " + st.ToString());
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto st = sp_.Encode(std::string(text), &ids);
    if (!st.ok()) throw input_error(src_, "the tokenizer.ggml.* vocabulary cannot encode the text: " + st.ToString());
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v;
    for (int32_t id : ids)
      if (id >= 0 && id < sp_.GetPieceSize() && !sp_.IsControl(id)) v.push_back(id);
    std::string out;
    auto st = sp_.Decode(v, &out);
    if (!st.ok()) throw input_error(src_, "the tokenizer.ggml.* vocabulary cannot decode the ids: " + st.ToString());
    return out;
  }
  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string id_to_piece(int32_t id) const override { return sp_.IdToPiece(id); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::string src_;
};

}  // namespace

namespace {

// A SentencePiece ModelProto (BPE with byte fallback) from tokenizer.ggml.* metadata.
std::string spm_proto_from_gguf(const GGUFFile& f, int64_t* bos_out, int64_t* eos_out) {
  const std::string src = f.path();
  if (!f.find("tokenizer.ggml.model")) throw input_error(src, "no tokenizer metadata (tokenizer.ggml.model); put the tokenizer files next to the .gguf");
  std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "llama")
    throw input_error(src, "tokenizer.ggml.model '" + model +
                               "' cannot be rebuilt from GGUF metadata (only 'llama' can); put tokenizer.json next to the .gguf");
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  auto scores = f.get_f32_array("tokenizer.ggml.scores");
  auto types = f.find("tokenizer.ggml.token_type") ? f.get_int_array("tokenizer.ggml.token_type")
                                                   : std::vector<int64_t>(tokens.size(), int64_t(TokenType::kNormal));
  if (scores.size() != tokens.size() || types.size() != tokens.size())
    throw input_error(src, "tokenizer.ggml.tokens, scores and token_type differ in length");
  auto opt_id = [&](const char* key, int64_t fallback) { return f.find(key) ? int64_t(f.get_uint(key)) : fallback; };
  int64_t unk = opt_id("tokenizer.ggml.unknown_token_id", 0), bos = opt_id("tokenizer.ggml.bos_token_id", 1),
          eos = opt_id("tokenizer.ggml.eos_token_id", 2);
  bool has_byte = false;
  std::string proto;
  for (size_t i = 0; i < tokens.size(); i++) {
    int64_t ty = types[i];
    if (ty < 1 || ty > 6) throw input_error(src, "tokenizer.ggml.token_type[" + std::to_string(i) + "] is " + std::to_string(ty) + " (1..6 expected)");
    if (int64_t(i) == unk) ty = int64_t(TokenType::kUnknown);
    else if (ty == int64_t(TokenType::kUnknown)) ty = int64_t(TokenType::kControl);
    has_byte = has_byte || ty == int64_t(TokenType::kByte);
    std::string piece;
    put_bytes(piece, 1, tokens[i]);
    put_float(piece, 2, scores[i]);
    if (ty != int64_t(TokenType::kNormal)) put_int(piece, 3, ty);
    put_bytes(proto, 1, piece);
  }
  std::string trainer;
  put_int(trainer, 3, 2);  // model_type = BPE: merge the highest-scoring pair first, as llama.cpp's SPM tokenizer does
  put_int(trainer, 4, int64_t(tokens.size()));
  put_int(trainer, 35, has_byte ? 1 : 0);  // byte_fallback
  put_int(trainer, 40, unk);
  put_int(trainer, 41, bos < int64_t(tokens.size()) ? bos : -1);
  put_int(trainer, 42, eos < int64_t(tokens.size()) ? eos : -1);
  put_int(trainer, 43, -1);
  put_bytes(proto, 2, trainer);
  std::string norm;
  put_bytes(norm, 1, "identity");
  if (f.find("tokenizer.ggml.precompiled_charsmap")) {
    auto cm = f.get_int_array("tokenizer.ggml.precompiled_charsmap");
    std::string bytes;
    for (auto b : cm) bytes.push_back(char(uint8_t(b)));
    put_bytes(norm, 2, bytes);
  }
  put_int(norm, 3, f.find("tokenizer.ggml.add_space_prefix") ? f.get_bool("tokenizer.ggml.add_space_prefix") : 1);
  put_int(norm, 4, f.find("tokenizer.ggml.remove_extra_whitespaces") ? f.get_bool("tokenizer.ggml.remove_extra_whitespaces") : 0);
  put_bytes(proto, 3, norm);
  *bos_out = bos;
  *eos_out = eos;
  return proto;
}

}  // namespace

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const fs::path& file) {
  GGUFFile f = GGUFFile::open(file.string());
  int64_t bos = -1, eos = -1;
  std::string proto = spm_proto_from_gguf(f, &bos, &eos);
  auto tok = std::make_unique<GgufSpmTokenizer>(proto, file.string());
  tok->set_special_ids(int32_t(bos), int32_t(eos));
  return tok;
}

void write_gguf_tokenizer_model(const fs::path& file, const fs::path& out) {
  GGUFFile f = GGUFFile::open(file.string());
  int64_t bos = -1, eos = -1;
  std::string proto = spm_proto_from_gguf(f, &bos, &eos);
  GgufSpmTokenizer check(proto, file.string());  // libsentencepiece validates it
  atomic_write_file(out, proto);
}

std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model) {
  fs::path p(model);
  if (p.extension() == ".gguf" && fs::is_regular_file(p)) {
    const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    if (find_tokenizer_file(dir, tokenizer_extras_for_dir(dir)).empty()) return load_gguf_tokenizer(p);
  }
  return load_tokenizer_for_model(model_dir_of(model));
}

}  // namespace llmprune
