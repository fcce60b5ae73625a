#include "model/model.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "model/hf_code.h"

namespace fs = std::filesystem;

namespace llmprune {

// Defined in io/ GGUF import (model/gguf_model.cpp) when available.
Model load_gguf_model(const fs::path& file);

static Model load_model(const fs::path& path, bool refuse_incomplete) {
  std::error_code ec;  // non-throwing: a path too long to stat is reported like a missing one
  if (!fs::exists(path, ec)) throw input_error(path.string(), ec ? "cannot access: " + ec.message() : "no such file or directory");
  if (fs::is_regular_file(path) && path.extension() == ".gguf") return load_gguf_model(path);
  if (fs::is_regular_file(path) && is_temp_output_name(path))
    throw input_error(path.string(), "incomplete output of an interrupted llmprune run (delete it)");
  if (!fs::is_directory(path)) throw input_error(path.string(), "expected a model directory (config.json + safetensors) or a .gguf file");
  if (refuse_incomplete) refuse_incomplete_output(path);
  fs::path cfg_path = path / "config.json";
  if (!fs::exists(cfg_path)) throw input_error(cfg_path.string(), "missing (not an HF model directory?)");
  ModelConfig cfg = ModelConfig::load(cfg_path);
  std::vector<fs::path> files;
  auto tensors = load_checkpoint_tensors(path, &files);
  Model m = Model::from_tensors(std::move(cfg), std::move(tensors), path.string());
  m.dir = path;
  m.files = files;
  return m;
}

Model Model::load(const fs::path& path) { return load_model(path, true); }

Model Model::load_unfinished(const fs::path& dir) { return load_model(dir, false); }

namespace {

// Splits every fused tensor of `a` in `tensors` into row views named as its roles
// (layer_tensor_name), so that the per-role loader below never sees a fused layout.
void split_fused_tensors(const ArchDesc& a, const ModelConfig& cfg, std::map<std::string, Tensor>& tensors,
                         const std::string& source) {
  if (a.fused.empty()) return;
  for (int l = 0; l < cfg.n_layer; l++) {
    // Sizes of this layer's index spaces as stated by its stand-alone tensors.
    std::map<Space, int64_t> space_size;
    for (int r = 0; r < kNumLayerRoles; r++) {
      const RoleDesc& d = a.layer[size_t(r)];
      if (!d.pattern) continue;
      auto it = tensors.find(layer_tensor_name(a, Role(r), l));
      if (it == tensors.end()) continue;
      const Space sp[2] = {d.axis0, d.axis1};
      for (int ax = 0; ax < 2 && ax < it->second.ndim(); ax++)
        if (sp[ax] != Space::None && sp[ax] != Space::Hidden) space_size.emplace(sp[ax], it->second.dim(ax));
    }
    for (const FusedTensor& f : a.fused) {
      const std::string name = fused_tensor_name(f, l);
      auto it = tensors.find(name);
      if (it == tensors.end()) {
        bool optional = true;
        for (Role r : f.parts) optional &= role_desc(a, r).optional || cfg.states_removed(l, is_attention_role(r));
        if (!optional) throw input_error(source, "missing tensor '" + name + "'");
        continue;
      }
      Tensor t = std::move(it->second);
      tensors.erase(it);
      if (t.ndim() < 1) throw input_error(source, "tensor '" + name + "' must have at least one dimension");
      const int64_t rows = t.dim(0);
      if (f.layout == FusedLayout::PerHead) {
        // Per head [part 0 | part 1 | ...] blocks of head_dim rows: each part is gathered into a
        // tensor of its own (the saver interleaves them again).
        const int64_t n = rows / int64_t(f.parts.size()), hd = cfg.head_dim;
        if (rows == 0 || rows % (int64_t(f.parts.size()) * hd) != 0)
          throw input_error(source, "tensor '" + name + "' has " + std::to_string(rows) + " rows, not a multiple of " +
                                        std::to_string(f.parts.size()) + " x head_dim " + std::to_string(hd));
        const size_t row_bytes = t.nbytes() / size_t(rows);
        for (size_t p = 0; p < f.parts.size(); p++) {
          std::vector<int64_t> shape = t.shape;
          shape[0] = n;
          Tensor part = Tensor::zeros(t.dtype, shape);
          for (int64_t i = 0; i < n; i++)
            std::memcpy(static_cast<uint8_t*>(part.data) + size_t(i) * row_bytes,
                        static_cast<const uint8_t*>(t.data) + size_t(fused_row(f, int(p), i, 0, n, int(hd))) * row_bytes, row_bytes);
          tensors[layer_tensor_name(a, f.parts[p], l)] = std::move(part);
        }
        continue;
      }
      int64_t known = 0;
      int unknown = 0;
      Space unknown_space = Space::None;
      for (Role r : f.parts) {
        Space sp = role_desc(a, r).axis0;
        if (space_size.count(sp)) {
          known += space_size[sp];
        } else {
          if (unknown && sp != unknown_space)
            throw RuntimeError("architecture table '" + a.family + "': '" + f.pattern + "' has parts of two unstated sizes");
          unknown++;
          unknown_space = sp;
        }
      }
      if (unknown) {
        if (rows <= known || (rows - known) % unknown != 0)
          throw input_error(source, "tensor '" + name + "' has " + std::to_string(rows) + " rows, which do not split into its " +
                                        std::to_string(f.parts.size()) + " parts (" + std::to_string(known) + " rows stated by the layer's other tensors)");
        space_size[unknown_space] = (rows - known) / unknown;
      } else if (rows != known) {
        throw input_error(source, "tensor '" + name + "' has " + std::to_string(rows) + " rows, expected " + std::to_string(known) +
                                      " (the sum of its parts)");
      }
      int64_t r0 = 0;
      for (Role r : f.parts) {
        const int64_t n = space_size[role_desc(a, r).axis0];
        tensors[layer_tensor_name(a, r, l)] = t.row_view(r0, n);
        r0 += n;
      }
    }
  }
}

}  // namespace

Model Model::from_tensors(ModelConfig cfg, std::map<std::string, Tensor> tensors, const std::string& source) {
  const ArchDesc& arch = arch_for_config(cfg.model_type, cfg.raw, source + "/config.json");
  split_fused_tensors(arch, cfg, tensors, source);
  return from_role_tensors(std::move(cfg), std::move(tensors), source);
}

Model Model::from_role_tensors(ModelConfig cfg, std::map<std::string, Tensor> tensors, const std::string& source) {
  Model m;
  m.cfg = std::move(cfg);
  m.arch = &arch_for_config(m.cfg.model_type, m.cfg.raw, source + "/config.json");
  auto take = [&](const std::string& name, bool optional) -> Tensor {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (!optional) throw input_error(source, "missing tensor '" + name + "'");
      return Tensor{};
    }
    Tensor t = std::move(it->second);
    tensors.erase(it);
    return t;
  };
  for (int g = 0; g < kNumGlobalRoles; g++) {
    if (!has_global_role(*m.arch, GlobalRole(g))) continue;
    const RoleDesc& d = m.arch->global[size_t(g)];
    bool optional = d.optional;
    if (GlobalRole(g) == GlobalRole::LmHead) optional = m.cfg.tied;
    m.global[size_t(g)] = take(d.pattern, optional);
  }
  if (!m.cfg.tied && m.global[size_t(GlobalRole::LmHead)].empty())
    throw input_error(source, std::string("missing tensor '") + m.arch->global[size_t(GlobalRole::LmHead)].pattern + "' (tie_word_embeddings is false)");
  if (m.cfg.tied && !m.global[size_t(GlobalRole::LmHead)].empty()) {
    // Some tied checkpoints also store lm_head; the embedding is authoritative when tied.
    m.global[size_t(GlobalRole::LmHead)] = Tensor{};
  }
  // Grown layer by layer: a config claiming more layers than the checkpoint holds fails on the
  // first missing tensor instead of allocating num_hidden_layers slots up front.
  // Which biases this model carries: the family's table, switched by config.json keys.
  std::array<Presence, kNumLayerRoles> presence{};
  for (int r = 0; r < kNumLayerRoles; r++) {
    const RoleDesc& d = m.arch->layer[size_t(r)];
    presence[size_t(r)] = !has_role(*m.arch, Role(r)) ? Presence::Absent
                          : !d.is_bias ? (d.optional ? Presence::Optional : Presence::Required)
                                       : bias_presence(*m.arch, Role(r), m.cfg.raw, source + "/config.json");
  }
  for (int l = 0; l < m.cfg.n_layer; l++) {
    m.layers.emplace_back();
    // A sub-block config.json states removed (0 heads / 0 MLP width) may lack all its tensors.
    const bool removed[2] = {m.cfg.states_removed(l, false), m.cfg.states_removed(l, true)};
    for (int r = 0; r < kNumLayerRoles; r++) {
      if (presence[size_t(r)] == Presence::Absent) continue;
      const bool optional = presence[size_t(r)] == Presence::Optional || removed[is_attention_role(Role(r))];
      m.layers[size_t(l)].w[size_t(r)] = take(layer_tensor_name(*m.arch, Role(r), l), optional);
    }
  }
  for (auto& [name, t] : tensors) {
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // old checkpoints carry this buffer
    for (int l = 0; l < m.cfg.n_layer; l++)
      for (int r = 0; r < kNumLayerRoles; r++) {
        if (presence[size_t(r)] != Presence::Absent || !has_role(*m.arch, Role(r)) ||
            name != layer_tensor_name(*m.arch, Role(r), l))
          continue;
        const BiasSwitch* sw = bias_switch_of(*m.arch, Role(r));
        throw input_error(source, "unexpected tensor '" + name + "' (" +
                                      (sw ? std::string("config.json sets ") + sw->config_key + " to false"
                                          : m.arch->family + " has no " + role_desc(*m.arch, Role(r)).name) + ")");
      }
    throw input_error(source, "unexpected tensor '" + name + "' (not part of a " + m.arch->family + " model; more layers than num_hidden_layers?)");
  }
  m.validate_and_derive_sizes(source);
  return m;
}

void Model::validate_and_derive_sizes(const std::string& source) {
  const int C = cfg.hidden, hd = cfg.head_dim, V = cfg.vocab;
  auto expect = [&](const Tensor& t, const std::string& name, std::vector<int64_t> shape) {
    if (t.shape != shape)
      throw input_error(source, "tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  };
  auto expect_matrix = [&](const Tensor& t, const std::string& name) {
    if (t.ndim() != 2) throw input_error(source, "tensor '" + name + "' must be 2-D, has shape " + shape_str(t.shape));
  };
  auto gname = [&](GlobalRole g) { return std::string(arch->global[size_t(g)].pattern); };
  expect(embed(), gname(GlobalRole::Embed), {V, C});
  expect(final_norm(), gname(GlobalRole::FinalNorm), {C});
  if (has_global_role(*arch, GlobalRole::FinalNormBias)) expect(final_norm_bias(), gname(GlobalRole::FinalNormBias), {C});
  if (!cfg.tied) expect(global[size_t(GlobalRole::LmHead)], gname(GlobalRole::LmHead), {V, C});
  DType dt = embed().dtype;
  cfg.layers.assign(layers.size(), LayerConfig{});
  for (size_t l = 0; l < layers.size(); l++) {
    auto& L = layers[l];
    auto nm = [&](Role r) { return layer_tensor_name(*arch, r, int(l)); };
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = L.w[size_t(r)];
      if (!t.empty() && t.dtype != dt && !role_desc(*arch, Role(r)).is_norm && !role_desc(*arch, Role(r)).is_bias)
        throw input_error(source, "tensor '" + nm(Role(r)) + "' is " + dtype_name(t.dtype) + " but the model is " + dtype_name(dt));
    }
    // A removed sub-block (depth pruning) has none of its tensors; a partial one is an error.
    bool has[2] = {false, false};  // [mlp, attention]
    for (int r = 0; r < kNumLayerRoles; r++) has[is_attention_role(Role(r))] |= !L.w[size_t(r)].empty();
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!role_desc(*arch, Role(r)).is_bias && has_role(*arch, Role(r)) && L.w[size_t(r)].empty() &&
          has[is_attention_role(Role(r))])
        throw input_error(source, "missing tensor '" + nm(Role(r)) + "'");
    LayerConfig lc;
    lc.head_dim = hd;
    if (has[1]) {
      expect(L[Role::AttnNorm], nm(Role::AttnNorm), {C});
      expect_matrix(L[Role::Q], nm(Role::Q));
      expect_matrix(L[Role::K], nm(Role::K));
      int64_t qrows = L[Role::Q].dim(0), kvrows = L[Role::K].dim(0);
      if (qrows % hd != 0 || qrows == 0)
        throw input_error(source, "tensor '" + nm(Role::Q) + "' has " + std::to_string(qrows) + " rows, not a positive multiple of head_dim " + std::to_string(hd));
      if (kvrows % hd != 0 || kvrows == 0)
        throw input_error(source, "tensor '" + nm(Role::K) + "' has " + std::to_string(kvrows) + " rows, not a positive multiple of head_dim " + std::to_string(hd));
      lc.n_head = int(qrows / hd);
      lc.n_kv_head = int(kvrows / hd);
      if (lc.n_head % lc.n_kv_head != 0)
        throw input_error(source, "layer " + std::to_string(l) + ": " + std::to_string(lc.n_head) + " query heads are not a multiple of " +
                                      std::to_string(lc.n_kv_head) + " KV heads");
      expect(L[Role::Q], nm(Role::Q), {qrows, C});
      expect(L[Role::K], nm(Role::K), {kvrows, C});
      expect(L[Role::V], nm(Role::V), {kvrows, C});
      expect(L[Role::O], nm(Role::O), {C, qrows});
    }
    if (has[0]) {
      expect(L[Role::MlpNorm], nm(Role::MlpNorm), {C});
      const Role first = has_role(*arch, Role::Gate) ? Role::Gate : Role::Up;  // GeluTanh MLPs have no gate
      expect_matrix(L[first], nm(first));
      int64_t ff = L[first].dim(0);
      lc.d_ff = int(ff);
      if (has_role(*arch, Role::Gate)) expect(L[Role::Gate], nm(Role::Gate), {ff, C});
      expect(L[Role::Up], nm(Role::Up), {ff, C});
      expect(L[Role::Down], nm(Role::Down), {C, ff});
    }
    // A bias has one entry per output row of its projection; the post-sub-block norms one per
    // hidden channel.
    for (int r = 0; r < kNumLayerRoles; r++) {
      const RoleDesc& d = role_desc(*arch, Role(r));
      if (d.is_bias && !L.w[size_t(r)].empty()) expect(L.w[size_t(r)], nm(Role(r)), {L[d.bias_of].dim(0)});
    }
    for (Role r : {Role::PostAttnNorm, Role::PostMlpNorm})
      if (!L[r].empty()) expect(L[r], nm(r), {C});
    cfg.layers[l] = lc;
  }
}

void Model::for_each_stored_tensor(
    const std::function<void(const std::string&, const std::vector<const Tensor*>&)>& fn) const {
  fn(arch->global[size_t(GlobalRole::Embed)].pattern, {&embed()});
  for (size_t l = 0; l < layers.size(); l++) {
    std::vector<const FusedTensor*> done;
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = layers[l].w[size_t(r)];
      if (t.empty()) continue;
      const FusedTensor* f = fused_of(*arch, Role(r));
      if (!f) {
        fn(layer_tensor_name(*arch, Role(r), int(l)), {&t});
        continue;
      }
      if (std::find(done.begin(), done.end(), f) != done.end()) continue;
      done.push_back(f);
      std::vector<const Tensor*> parts;
      for (Role p : f->parts) {  // (FusedLayout::PerHead: the saver interleaves them by heads)
        const Tensor& pt = layers[l][p];
        if (pt.empty()) throw RuntimeError("layer " + std::to_string(l) + ": '" + fused_tensor_name(*f, int(l)) + "' lacks its part '" +
                                           role_desc(*arch, p).name + "'");
        parts.push_back(&pt);
      }
      fn(fused_tensor_name(*f, int(l)), parts);
    }
  }
  fn(arch->global[size_t(GlobalRole::FinalNorm)].pattern, {&final_norm()});
  if (!final_norm_bias().empty()) fn(arch->global[size_t(GlobalRole::FinalNormBias)].pattern, {&final_norm_bias()});
  if (!cfg.tied) fn(arch->global[size_t(GlobalRole::LmHead)].pattern, {&global[size_t(GlobalRole::LmHead)]});
}

void Model::for_each_tensor(const std::function<void(const std::string&, const Tensor&)>& fn) const {
  fn(arch->global[size_t(GlobalRole::Embed)].pattern, embed());
  for (size_t l = 0; l < layers.size(); l++)
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!layers[l].w[size_t(r)].empty()) fn(layer_tensor_name(*arch, Role(r), int(l)), layers[l].w[size_t(r)]);
  fn(arch->global[size_t(GlobalRole::FinalNorm)].pattern, final_norm());
  if (!final_norm_bias().empty()) fn(arch->global[size_t(GlobalRole::FinalNormBias)].pattern, final_norm_bias());
  if (!cfg.tied) fn(arch->global[size_t(GlobalRole::LmHead)].pattern, global[size_t(GlobalRole::LmHead)]);
}

void Model::for_each_tensor_mut(const std::function<void(const std::string&, Tensor&)>& fn) {
  fn(arch->global[size_t(GlobalRole::Embed)].pattern, global[size_t(GlobalRole::Embed)]);
  for (size_t l = 0; l < layers.size(); l++)
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!layers[l].w[size_t(r)].empty()) fn(layer_tensor_name(*arch, Role(r), int(l)), layers[l].w[size_t(r)]);
  fn(arch->global[size_t(GlobalRole::FinalNorm)].pattern, global[size_t(GlobalRole::FinalNorm)]);
  if (!final_norm_bias().empty()) fn(arch->global[size_t(GlobalRole::FinalNormBias)].pattern, global[size_t(GlobalRole::FinalNormBias)]);
  if (!cfg.tied) fn(arch->global[size_t(GlobalRole::LmHead)].pattern, global[size_t(GlobalRole::LmHead)]);
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for_each_tensor([&](const std::string&, const Tensor& t) { n += t.numel(); });
  return n;
}

TokenizerExtras tokenizer_extras(const ArchDesc& a) {
  TokenizerExtras extras;
  for (const char* s : a.tokenizer.appended_specials) extras.sp_appended_specials.push_back(s);
  for (const auto& alts : a.tokenizer.prefix) extras.prefix.emplace_back(alts.begin(), alts.end());
  for (const auto& alts : a.tokenizer.suffix) extras.suffix.emplace_back(alts.begin(), alts.end());
  extras.sp_files.assign(a.tokenizer.sp_files.begin(), a.tokenizer.sp_files.end());
  extras.escapes = a.tokenizer.escapes;
  return extras;
}

TokenizerExtras tokenizer_extras_for_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir / "config.json", ec)) return {};
  std::ifstream in(dir / "config.json");
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("model_type") || !j["model_type"].is_string()) return {};
  return tokenizer_extras(arch_for_config(j, (dir / "config.json").string()));
}

std::unique_ptr<Tokenizer> load_tokenizer_for_model(const fs::path& dir) {
  return load_tokenizer(dir, tokenizer_extras_for_dir(dir));
}

ParamCounts count_params(const Model& m) {
  ParamCounts p;
  p.embed = m.embed().numel();
  p.lm_head = m.cfg.tied ? 0 : m.global[size_t(GlobalRole::LmHead)].numel();
  p.norms = m.final_norm().numel() + (m.final_norm_bias().empty() ? 0 : m.final_norm_bias().numel());
  for (auto& L : m.layers) {
    // Norms (and LayerNorm biases) are absent in a layer without their sub-block; projections
    // and their biases: attention's are those with a head axis.
    for (int r = 0; r < kNumLayerRoles; r++) {
      const RoleDesc& d = role_desc(*m.arch, Role(r));
      if (L.w[size_t(r)].empty()) continue;
      if (d.is_norm) {
        p.norms += L.w[size_t(r)].numel();
        continue;
      }
      const RoleDesc& mat = d.is_bias ? role_desc(*m.arch, d.bias_of) : d;
      const bool heads = mat.axis0 == Space::QHeads || mat.axis0 == Space::KVHeads || mat.axis1 == Space::QHeads;
      (heads ? p.attention : p.mlp) += L.w[size_t(r)].numel();
    }
  }
  p.total = p.embed + p.lm_head + p.norms + p.attention + p.mlp;
  return p;
}

std::filesystem::path model_dir_of(const std::string& model) {
  std::filesystem::path p(model);
  return std::filesystem::is_directory(p) ? p : p.parent_path();
}

int complete_bias_switches(Model& m) {
  int added = 0;
  for (const BiasSwitch& sw : m.arch->bias_switches) {
    if (!sw.config_key) continue;
    bool any = false;
    for (const LayerWeights& L : m.layers)
      for (Role r : sw.roles) any |= !L[r].empty();
    if (!any) continue;
    for (LayerWeights& L : m.layers)
      for (Role r : sw.roles)
        if (L[r].empty() && !L[role_desc(*m.arch, r).bias_of].empty()) {  // not in a removed sub-block
          L[r] = Tensor::zeros(DType::F32, {L[role_desc(*m.arch, r).bias_of].dim(0)});
          added++;
        }
  }
  return added;
}

void set_bias_keys(const Model& m, nlohmann::json& cfg) {
  for (const BiasSwitch& sw : m.arch->bias_switches) {
    if (!sw.config_key) continue;
    size_t present = 0, possible = 0;  // a removed sub-block (depth pruning) has no place for a bias
    for (const LayerWeights& L : m.layers)
      for (Role r : sw.roles) {
        present += !L[r].empty();
        possible += !L[role_desc(*m.arch, r).bias_of].empty();
      }
    if (present == possible && present > 0) cfg[sw.config_key] = true;
    else if (present == 0) {
      if (cfg.contains(sw.config_key)) cfg[sw.config_key] = false;
    } else {
      // Some of the switch's biases only (an older checkpoint with q/k/v biases and no o bias):
      // no value of the key describes it; without it the loader reads what is there.
      cfg.erase(sw.config_key);
    }
  }
}

void save_model_files(const Model& m, const fs::path& dir, DType dtype, const fs::path& source_dir) {
  const bool release = m.release_pages;
  save_model_files(m, dir, dtype, source_dir, [dtype, release](const std::string&, const Tensor& t, void* dst) {
    size_t n = size_t(t.numel());
    if (t.dtype == dtype) {
      std::memcpy(dst, t.data, t.nbytes());
    } else {
      std::vector<float> tmp(n);
      to_f32(t.dtype, t.data, tmp.data(), n);
      from_f32(dtype, tmp.data(), dst, n);
    }
    if (release) release_mapped_pages(t);
  });
}

void save_model_files(const Model& m, const fs::path& dir, DType dtype, const fs::path& source_dir, const TensorBytes& bytes) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  m.for_each_stored_tensor([&](const std::string& name, const std::vector<const Tensor*>& parts) {
    if (parts.size() == 1) {
      Tensor keep = *parts[0];
      w.add(name, dtype, keep.shape, [keep, name, &bytes](void* dst) { bytes(name, keep, dst); });
      return;
    }
    // A fused tensor: its parts' rows one after another (rows are contiguous in row-major order),
    // or interleaved by heads (FusedLayout::PerHead).
    const FusedTensor* fused = nullptr;
    for (const FusedTensor& f : m.arch->fused)
      for (size_t l = 0; l < m.layers.size() && !fused; l++)
        if (fused_tensor_name(f, int(l)) == name) fused = &f;
    std::vector<Tensor> keep;
    std::vector<int64_t> shape = parts[0]->shape;
    shape[0] = 0;
    for (const Tensor* p : parts) {
      keep.push_back(*p);
      shape[0] += p->dim(0);
    }
    if (fused && fused->layout == FusedLayout::PerHead) {
      const int hd = m.cfg.head_dim;
      w.add(name, dtype, shape, [keep, name, dtype, hd, fused, &bytes](void* dst) {
        const int64_t n = keep[0].dim(0);
        const size_t row_bytes = size_t(keep[0].numel() / n) * dtype_size(dtype);
        std::vector<uint8_t> tmp(row_bytes * size_t(n));
        for (size_t p = 0; p < keep.size(); p++) {
          bytes(name, keep[p], tmp.data());
          for (int64_t i = 0; i < n; i++)
            std::memcpy(static_cast<uint8_t*>(dst) + size_t(fused_row(*fused, int(p), i, 0, n, hd)) * row_bytes,
                        tmp.data() + size_t(i) * row_bytes, row_bytes);
        }
      });
      return;
    }
    w.add(name, dtype, shape, [keep, name, dtype, &bytes](void* dst) {
      auto* out = static_cast<uint8_t*>(dst);
      for (const Tensor& p : keep) {
        bytes(name, p, out);
        out += size_t(p.numel()) * dtype_size(dtype);
      }
    });
  });
  w.write(dir / "model.safetensors");
  nlohmann::json cfg = m.cfg.to_json();
  set_bias_keys(m, cfg);
  cfg["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  // Ragged models: the Python that builds per-layer sizes in transformers, named by auto_map.
  if (set_hf_auto_map(cfg, m.cfg, *m.arch)) write_hf_code_files(dir);
  atomic_write_file(dir / "config.json", cfg.dump(2) + "\n");
  nlohmann::json gen = {{"bos_token_id", m.cfg.bos_id}, {"eos_token_id", m.cfg.eos_id}};
  if (!source_dir.empty() && fs::exists(source_dir / "generation_config.json")) {
    std::ifstream in(source_dir / "generation_config.json");
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.is_object()) gen = j;
  }
  atomic_write_file(dir / "generation_config.json", gen.dump(2) + "\n");
  // The family's own SentencePiece file keeps its name (a v1 model written here still has ice_text.model).
  std::vector<std::string> tokenizer_files(m.arch->tokenizer.sp_files.begin(), m.arch->tokenizer.sp_files.end());
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    tokenizer_files.push_back(f);
  for (const std::string& f : tokenizer_files) {
    if (source_dir.empty() || !fs::exists(source_dir / f)) continue;
    std::error_code ec;
    fs::copy_file(source_dir / f, dir / f, fs::copy_options::overwrite_existing, ec);
    if (ec) throw RuntimeError((dir / f).string() + ": cannot copy from " + (source_dir / f).string() + ": " + ec.message());
  }
  if (!source_dir.empty()) copy_tokenizer_code(source_dir, dir);
}

}  // namespace llmprune
