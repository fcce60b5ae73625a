#include "train/lora.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace llmprune {

namespace k = kernels;

namespace {

std::string trim_lower(std::string s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string lora_target_name(Role r) {
  return is_matrix_role(r) ? role_desc(arch_for_model_type("llama", "<builtin>"), r).name : "?";
}

std::string hf_module_name(Role r) { return lora_target_name(r) + "_proj"; }

std::string hf_module_name(const ArchDesc& a, Role r) {
  if (const FusedTensor* f = fused_of(a, r)) return f->lora_module;
  std::string name = layer_tensor_name(a, r, 0);
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    name = name.substr(0, name.size() - suffix.size());
  return name.substr(name.rfind('.') + 1);
}

std::vector<Role> parse_lora_targets(const std::string& list, const std::string& flag) {
  std::vector<Role> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    std::string item = trim_lower(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    start = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (item.empty()) continue;
    if (item == "all") {
      for (Role r : matrix_roles())
        if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
      continue;
    }
    if (item.size() > 5 && item.substr(item.size() - 5) == "_proj") item = item.substr(0, item.size() - 5);
    Role r;
    if (!role_from_short_name(item, &r))
      throw UserError(flag + ": unknown projection '" + item + "' (use q, k, v, o, gate, up, down or all)");
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  }
  if (out.empty()) throw UserError(flag + ": no projection given");
  // Execution order, so adapters are laid out the same whatever order the flag lists them in.
  std::vector<Role> sorted;
  for (Role r : matrix_roles())
    if (std::find(out.begin(), out.end(), r) != out.end()) sorted.push_back(r);
  return sorted;
}

LoraAdapters::LoraAdapters(const Model& m, const LoraConfig& cfg) : m_(m), cfg_(cfg) {
  if (cfg_.r < 1) throw UserError("--lora-r must be at least 1");
  if (!(cfg_.alpha > 0)) throw UserError("--lora-alpha must be positive");
  if (!(cfg_.dropout >= 0 && cfg_.dropout < 1)) throw UserError("--lora-dropout must be in [0, 1)");
  const int L = m.cfg.n_layer, C = m.cfg.hidden;
  index_.assign(size_t(L) * kNumLayerRoles, -1);
  for (int l = 0; l < L; l++) {
    const LayerConfig& lc = m.cfg.layers[size_t(l)];
    for (Role r : cfg_.targets) {
      if (!is_matrix_role(r)) throw UserError("LoRA cannot target " + lora_target_name(r));
      // W is [out, in]: its row and column index spaces give the adapter's sizes.
      auto size_of = [&](Space sp) {
        switch (sp) {
          case Space::Hidden: return C;
          case Space::QHeads: return lc.q_dim();
          case Space::KVHeads: return lc.kv_dim();
          case Space::Mlp: return lc.d_ff;
          default: return 0;
        }
      };
      const RoleDesc& d = role_desc(*m.arch, r);
      const int in = size_of(d.axis1), out = size_of(d.axis0);
      if (in == 0 || out == 0 || m.layers[size_t(l)][r].empty()) continue;
      LoraPair p;
      p.layer = l;
      p.role = r;
      p.in = in;
      p.out = out;
      p.r = cfg_.r;
      p.A.resize(size_t(cfg_.r) * in);
      p.B.assign(size_t(out) * cfg_.r, 0.0f);
      p.dA.assign(p.A.size(), 0.0f);
      p.dB.assign(p.B.size(), 0.0f);
      // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in).
      const float bound = float(1.0 / std::sqrt(double(in)));
      const uint64_t base = mix_keys(mix_keys(cfg_.seed, 0x10a1u), uint64_t(l) * 64 + uint64_t(r));
      for (size_t i = 0; i < p.A.size(); i++) p.A[i] = (2.0f * uniform01(splitmix64(base + i)) - 1.0f) * bound;
      index_[size_t(l) * kNumLayerRoles + size_t(r)] = int(pairs_.size());
      pairs_.push_back(std::move(p));
    }
  }
  if (pairs_.empty()) throw UserError("--lora-targets: the model has no such projection to adapt");
}

LoraPair* LoraAdapters::find(int layer, Role r) {
  if (layer < 0 || size_t(layer) * kNumLayerRoles >= index_.size()) return nullptr;
  int i = index_[size_t(layer) * kNumLayerRoles + size_t(r)];
  return i < 0 ? nullptr : &pairs_[size_t(i)];
}
const LoraPair* LoraAdapters::find(int layer, Role r) const { return const_cast<LoraAdapters*>(this)->find(layer, r); }

int64_t LoraAdapters::n_params() const {
  int64_t n = 0;
  for (auto& p : pairs_) n += int64_t(p.A.size() + p.B.size());
  return n;
}

void LoraAdapters::zero_grad() {
  for (auto& p : pairs_) {
    std::fill(p.dA.begin(), p.dA.end(), 0.0f);
    std::fill(p.dB.begin(), p.dB.end(), 0.0f);
  }
}

const float* LoraAdapters::dropped(int layer, Role r, const float* x, int N, int in, std::vector<float>& buf) const {
  if (!training_ || cfg_.dropout <= 0) return x;
  const float p = float(cfg_.dropout), keep_scale = 1.0f / (1.0f - p);
  const uint64_t base = mix_keys(mix_keys(mix_keys(cfg_.seed, 0xd50u), key_), uint64_t(layer) * 64 + uint64_t(r));
  buf.resize(size_t(N) * in);
  const int64_t total = int64_t(N) * in;
  float* out = buf.data();
#pragma omp parallel for if (total > 32768)
  for (int64_t i = 0; i < total; i++) out[i] = uniform01(splitmix64(base + uint64_t(i))) >= p ? x[i] * keep_scale : 0.0f;
  return out;
}

void LoraAdapters::forward(int layer, Role r, const float* x, float* y, int N, int in, int out) {
  LoraPair* p = find(layer, r);
  if (!p || N == 0) return;
  if (p->in != in || p->out != out)
    throw RuntimeError("LoRA adapter of layer " + std::to_string(layer) + " " + hf_module_name(r) + " is [" +
                       std::to_string(p->out) + "x" + std::to_string(p->in) + "], the projection is [" +
                       std::to_string(out) + "x" + std::to_string(in) + "]");
  const int R = p->r;
  std::vector<float> xbuf;
  const float* xd = dropped(layer, r, x, N, in, xbuf);
  std::vector<float> u(size_t(N) * R), t(size_t(N) * out);
  k::linear_forward(u.data(), xd, p->A.data(), nullptr, N, in, R);  // u = drop(x) A^T
  const float s = scale();
  for (auto& v : u) v *= s;
  k::gemm_nt(N, out, R, u.data(), R, p->B.data(), R, t.data(), out);  // t = s u B^T
  const size_t n = size_t(N) * out;
#pragma omp parallel for if (n > 65536)
  for (size_t i = 0; i < n; i++) y[i] += t[i];
}

void LoraAdapters::backward(int layer, Role r, const float* x, const float* dy, float* dx, int N, int in, int out) {
  LoraPair* p = find(layer, r);
  if (!p || N == 0) return;
  const int R = p->r;
  const float s = scale();
  std::vector<float> xbuf;
  const float* xd = dropped(layer, r, x, N, in, xbuf);
  // u = drop(x) A^T [N, R]; g = dy B [N, R]
  std::vector<float> u(size_t(N) * R), g(size_t(N) * R, 0.0f);
  k::linear_forward(u.data(), xd, p->A.data(), nullptr, N, in, R);
  k::linear_backward(g.data(), nullptr, nullptr, dy, nullptr, p->B.data(), N, R, out);
  // dB += gs * s * dy^T u ; dA += gs * s * g^T drop(x)
  const float w = s * grad_scale_;
  for (auto& v : u) v *= w;
  k::linear_backward(nullptr, p->dB.data(), nullptr, dy, u.data(), nullptr, N, R, out);
  std::vector<float> gw(g);
  for (auto& v : gw) v *= w;
  k::linear_backward(nullptr, p->dA.data(), nullptr, gw.data(), xd, nullptr, N, in, R);
  // dx += s * (g A) through the dropout mask
  for (auto& v : g) v *= s;
  if (xd == x) {
    k::linear_backward(dx, nullptr, nullptr, g.data(), nullptr, p->A.data(), N, in, R);
    return;
  }
  std::vector<float> dxd(size_t(N) * in, 0.0f);
  k::linear_backward(dxd.data(), nullptr, nullptr, g.data(), nullptr, p->A.data(), N, in, R);
  const float pdrop = float(cfg_.dropout), keep_scale = 1.0f / (1.0f - pdrop);
  const uint64_t base = mix_keys(mix_keys(mix_keys(cfg_.seed, 0xd50u), key_), uint64_t(layer) * 64 + uint64_t(r));
  const int64_t total = int64_t(N) * in;
#pragma omp parallel for if (total > 32768)
  for (int64_t i = 0; i < total; i++)
    if (uniform01(splitmix64(base + uint64_t(i))) >= pdrop) dx[i] += dxd[size_t(i)] * keep_scale;
}

namespace {

std::string strip_weight(std::string w) {
  const std::string suffix = ".weight";
  if (w.size() > suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0)
    w = w.substr(0, w.size() - suffix.size());
  return w;
}

std::string peft_module_name(const ArchDesc& a, int layer, Role r) {
  if (const FusedTensor* f = fused_of(a, r)) return "base_model.model." + strip_weight(fused_tensor_name(*f, layer));
  return "base_model.model." + strip_weight(layer_tensor_name(a, r, layer));
}

// One PEFT module: a stand-alone role, or the parts of a fused tensor (in its order). PEFT's
// lora_B rows are the STORED tensor's rows, so each adapter row goes where the fused layout puts
// its role row (fused_row: after the previous parts for [Q|K|V], inside its head's [q_h k_h v_h]
// block for ChatGLM-6B v1's per-head interleaved query_key_value).
struct PeftModule {
  std::string name;
  const FusedTensor* fused = nullptr;
  int layer = 0;
  int head_dim = 0;
  std::vector<const LoraPair*> pairs;  // present adapters, in part order
  std::vector<int> part;               // their part index in the fused tensor
  std::vector<int64_t> row0;           // their part's row offset in a Concat layout
  int64_t out = 0, in = 0;             // the whole module's shape
  // Row of the module's output (lora_B's row) holding row r of adapter i.
  int64_t stored_row(size_t i, int64_t r) const {
    if (!fused) return r;
    return fused_row(*fused, part[i], r, row0[i], pairs[i]->out, head_dim);
  }
};

template <typename Pairs>
std::vector<PeftModule> peft_modules(const Model& m, Pairs& pairs) {
  std::vector<PeftModule> mods;
  std::map<std::pair<int, const FusedTensor*>, size_t> seen;
  for (const LoraPair& p : pairs) {
    const FusedTensor* f = fused_of(*m.arch, p.role);
    if (!f) {
      PeftModule mod;
      mod.name = peft_module_name(*m.arch, p.layer, p.role);
      mod.layer = p.layer;
      mod.pairs = {&p};
      mod.part = {0};
      mod.row0 = {0};
      mod.out = p.out;
      mod.in = p.in;
      mods.push_back(mod);
      continue;
    }
    auto key = std::make_pair(p.layer, f);
    if (seen.count(key)) continue;
    seen[key] = mods.size();
    PeftModule mod;
    mod.name = peft_module_name(*m.arch, p.layer, p.role);
    mod.fused = f;
    mod.layer = p.layer;
    mod.head_dim = m.cfg.layers[size_t(p.layer)].head_dim;
    mod.in = p.in;
    for (size_t part = 0; part < f->parts.size(); part++) {
      const Tensor& t = m.layers[size_t(p.layer)][f->parts[part]];
      for (const LoraPair& q : pairs)
        if (q.layer == p.layer && q.role == f->parts[part]) {
          mod.pairs.push_back(&q);
          mod.part.push_back(int(part));
          mod.row0.push_back(mod.out);
        }
      mod.out += t.dim(0);
    }
    mods.push_back(mod);
  }
  return mods;
}

}  // namespace

std::string LoraAdapters::peft_name(const LoraPair& p, bool is_A) const {
  std::string name = peft_module_name(*m_.arch, p.layer, p.role) + (is_A ? ".lora_A.weight" : ".lora_B.weight");
  if (fused_of(*m_.arch, p.role)) name += std::string(":") + role_desc(*m_.arch, p.role).name;
  return name;
}

Model merge_lora(const Model& base, const LoraAdapters& lora) {
  Model out = base;
  const float s = lora.scale();
  for (const LoraPair& p : lora.pairs()) {
    const Tensor& W = base.layers[size_t(p.layer)][p.role];
    if (W.dim(0) != p.out || W.dim(1) != p.in)
      throw RuntimeError("merge: adapter shape does not match " + layer_tensor_name(*base.arch, p.role, p.layer));
    const size_t n = size_t(p.out) * p.in;
    std::vector<float> w(n), delta(n);
    to_f32(W.dtype, W.data, w.data(), n);
    // delta[out, in] = B[out, r] . A[r, in] = B . (A^T)^T
    std::vector<float> At(size_t(p.in) * p.r);
    for (int a = 0; a < p.r; a++)
      for (int i = 0; i < p.in; i++) At[size_t(i) * p.r + a] = p.A[size_t(a) * p.in + i];
    k::gemm_nt(p.out, p.in, p.r, p.B.data(), p.r, At.data(), p.r, delta.data(), p.in);
    for (size_t i = 0; i < n; i++) w[i] += s * delta[i];
    Tensor t = Tensor::zeros(W.dtype, W.shape);
    from_f32(W.dtype, w.data(), t.data, n);
    out.layers[size_t(p.layer)][p.role] = std::move(t);
  }
  return out;
}

void save_peft_adapter(const LoraAdapters& lora, const std::filesystem::path& dir, const std::string& base_model) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  const std::vector<PeftModule> mods = peft_modules(lora.model(), lora.pairs());
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  const LoraConfig& c = lora.config();
  for (const PeftModule& mod : mods) {
    int64_t R = 0;
    for (const LoraPair* p : mod.pairs) R += p->r;
    w.add(mod.name + ".lora_A.weight", DType::F32, {R, mod.in}, [mod](void* dst) {
      auto* o = static_cast<float*>(dst);
      for (const LoraPair* p : mod.pairs) o = std::copy(p->A.begin(), p->A.end(), o);
    });
    w.add(mod.name + ".lora_B.weight", DType::F32, {mod.out, R}, [mod, R](void* dst) {
      auto* o = static_cast<float*>(dst);
      std::fill(o, o + size_t(mod.out) * size_t(R), 0.0f);
      int64_t col = 0;
      for (size_t i = 0; i < mod.pairs.size(); i++) {
        const LoraPair* p = mod.pairs[i];
        for (int64_t r = 0; r < p->out; r++)
          for (int64_t a = 0; a < p->r; a++) o[size_t(mod.stored_row(i, r)) * size_t(R) + size_t(col + a)] = p->B[size_t(r) * size_t(p->r) + size_t(a)];
        col += p->r;
      }
    });
    if (R != c.r) {
      // The fused module's rank: PEFT scales by alpha / rank, so alpha grows with it.
      const std::string key = mod.name.substr(std::string("base_model.model.").size());
      rank_pattern[key] = R;
      alpha_pattern[key] = c.alpha * double(R) / double(c.r);
    }
  }
  w.write(dir / "adapter_model.safetensors");
  nlohmann::json targets = nlohmann::json::array();
  for (Role r : c.targets) {
    if (!has_role(*lora.model().arch, r)) continue;  // a target the family lacks (ChatGLM-6B v1: gate)
    std::string name = hf_module_name(*lora.model().arch, r);
    if (std::find(targets.begin(), targets.end(), name) == targets.end()) targets.push_back(name);
  }
  nlohmann::json j = {{"base_model_name_or_path", base_model},
                      {"bias", "none"},
                      {"fan_in_fan_out", false},
                      {"inference_mode", true},
                      {"init_lora_weights", true},
                      {"lora_alpha", c.alpha},
                      {"lora_dropout", c.dropout},
                      {"modules_to_save", nullptr},
                      {"peft_type", "LORA"},
                      {"r", c.r},
                      {"target_modules", targets},
                      {"task_type", "CAUSAL_LM"}};
  if (!rank_pattern.empty()) {
    j["rank_pattern"] = rank_pattern;
    j["alpha_pattern"] = alpha_pattern;
  }
  // PEFT reads lora_alpha as an int in older versions; write an integer when it is one.
  if (c.alpha == std::floor(c.alpha)) j["lora_alpha"] = int64_t(c.alpha);
  atomic_write_file(dir / "adapter_config.json", j.dump(2) + "\n");
}

void load_lora_weights(LoraAdapters& lora, const std::filesystem::path& file) {
  SafetensorsFile f = SafetensorsFile::open(file);
  for (const PeftModule& mod : peft_modules(lora.model(), lora.pairs())) {
    int64_t R = 0;
    for (const LoraPair* p : mod.pairs) R += p->r;
    std::vector<float> A(size_t(R * mod.in)), B(size_t(mod.out * R));
    for (bool is_A : {true, false}) {
      std::string name = mod.name + (is_A ? ".lora_A.weight" : ".lora_B.weight");
      auto it = f.tensors.find(name);
      if (it == f.tensors.end()) throw input_error(file.string(), "missing tensor '" + name + "'");
      const Tensor& t = it->second;
      std::vector<int64_t> want = is_A ? std::vector<int64_t>{R, mod.in} : std::vector<int64_t>{mod.out, R};
      if (t.shape != want)
        throw input_error(file.string(), "tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str(want));
      std::vector<float>& dst = is_A ? A : B;
      to_f32(t.dtype, t.data, dst.data(), dst.size());
    }
    int64_t col = 0;
    for (size_t i = 0; i < mod.pairs.size(); i++) {
      LoraPair* p = const_cast<LoraPair*>(mod.pairs[i]);  // the pairs are lora's own, handed out const by peft_modules
      std::copy(A.begin() + col * mod.in, A.begin() + (col + p->r) * mod.in, p->A.begin());
      for (int64_t r = 0; r < p->out; r++)
        for (int64_t a = 0; a < p->r; a++) p->B[size_t(r) * size_t(p->r) + size_t(a)] = B[size_t(mod.stored_row(i, r)) * size_t(R) + size_t(col + a)];
      col += p->r;
    }
  }
}

}  // namespace llmprune
