#include "importance/importance.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>

#include "core/error.h"
#include "core/names.h"
#include "model/backward.h"

namespace llmprune {

Criterion parse_criterion(const std::string& imp, const std::string& taylor) {
  if (imp == "random") return Criterion::Random;
  if (imp == "l1") return Criterion::L1;
  if (imp == "l2") return Criterion::L2;
  if (imp == "taylor") {
    if (taylor == "vector") return Criterion::Vector;
    if (taylor == "element1") return Criterion::Element1;
    if (taylor == "element2") return Criterion::Element2;
    if (taylor == "fisher") return Criterion::Fisher;
    throw UserError("--taylor '" + taylor + "' is not one of vector, element1, element2, fisher");
  }
  throw UserError("--importance '" + imp + "' is not one of random, l1, l2, taylor, flap");
}

namespace {
constexpr NameTable<Reduction, 6> kReductionNames{{{Reduction::Sum, "sum"},
                                                  {Reduction::Mean, "mean"},
                                                  {Reduction::Max, "max"},
                                                  {Reduction::Prod, "prod"},
                                                  {Reduction::First, "first"},
                                                  {Reduction::Last, "last"}}};
}  // namespace

Reduction parse_reduction(const std::string& s) { return parse_name(kReductionNames, s, "--group-reduction"); }

std::string criterion_name(Criterion c) {
  switch (c) {
    case Criterion::Random: return "random";
    case Criterion::L1: return "l1";
    case Criterion::L2: return "l2";
    case Criterion::Vector: return "vector";
    case Criterion::Element1: return "element1";
    case Criterion::Element2: return "element2";
    case Criterion::Fisher: return "fisher";
  }
  return "?";
}

std::string reduction_name(Reduction r) { return name_of(kReductionNames, r); }

bool needs_gradients(Criterion c) { return c == Criterion::Vector || c == Criterion::Element1 || c == Criterion::Element2 || c == Criterion::Fisher; }
bool needs_fisher(Criterion c) { return c == Criterion::Element2 || c == Criterion::Fisher; }

std::vector<int32_t> calibration_windows(const std::vector<int32_t>& stream, const CalibOptions& opt) {
  if (opt.samples <= 0) throw UserError(opt.flag + "-samples must be positive");
  if (opt.seq_len < 2) throw UserError(opt.flag + "-seq-len must be at least 2");
  const int64_t need = int64_t(opt.samples) * opt.seq_len;
  if (int64_t(stream.size()) < need)
    throw input_error(opt.file, "has " + std::to_string(stream.size()) + " tokens, fewer than " + opt.flag + "-samples x " +
                                    opt.flag + "-seq-len = " + std::to_string(need));
  std::vector<int32_t> out;
  out.reserve(size_t(need));
  std::mt19937_64 rng(opt.seed);
  std::uniform_int_distribution<int64_t> offset(0, int64_t(stream.size()) - opt.seq_len);
  for (int j = 0; j < opt.samples; j++) {
    int64_t start = opt.random ? offset(rng) : int64_t(j) * opt.seq_len;
    out.insert(out.end(), stream.begin() + start, stream.begin() + start + opt.seq_len);
  }
  return out;
}

double member_slice_score(const float* W, const float* G, const float* A, int64_t rows, int64_t cols, const Member& mem,
                          Criterion c) {
  double total = 0;
  const int64_t len = mem.axis == 0 ? cols : rows;       // elements per slice
  const int64_t step = mem.axis == 0 ? 1 : cols;         // stride inside a slice
  for (int64_t i : mem.index) {
    const int64_t base = mem.axis == 0 ? i * cols : i;
    double acc = 0;
    for (int64_t e = 0; e < len; e++) {
      const int64_t p = base + e * step;
      const double w = W[p];
      switch (c) {
        case Criterion::L1: acc += std::abs(w); break;
        case Criterion::L2: acc += w * w; break;
        case Criterion::Element1: acc += std::abs(w * G[p]); break;
        case Criterion::Vector: acc += w * G[p]; break;  // signed: |sum| per slice below
        case Criterion::Element2: acc += std::abs(w * G[p] - 0.5 * w * w * A[p]); break;
        case Criterion::Fisher: acc += std::abs(w * w * A[p]); break;
        case Criterion::Random: break;
      }
    }
    total += c == Criterion::Vector ? std::abs(acc) : acc;
  }
  return total;
}

double reduce_members(const std::vector<double>& s, const std::vector<bool>& counts, Reduction r) {
  std::vector<double> v;
  for (size_t i = 0; i < s.size(); i++)
    if (counts[i]) v.push_back(s[i]);
  if (v.empty()) return 0;
  switch (r) {
    case Reduction::Sum: { double a = 0; for (double x : v) a += x; return a; }
    case Reduction::Mean: { double a = 0; for (double x : v) a += x; return a / double(v.size()); }
    case Reduction::Max: return *std::max_element(v.begin(), v.end());
    case Reduction::Prod: { double a = 1; for (double x : v) a *= x; return a; }
    case Reduction::First: return v.front();
    case Reduction::Last: return v.back();
  }
  return 0;
}

namespace {

// Per-element salience, as member_slice_score accumulates it (Vector: the signed w*g).
template <Criterion Cr>
inline double salience(double w, const float* G, const float* A, int64_t p) {
  if constexpr (Cr == Criterion::L1) return std::abs(w);
  if constexpr (Cr == Criterion::L2) return w * w;
  if constexpr (Cr == Criterion::Element1) return std::abs(w * G[p]);
  if constexpr (Cr == Criterion::Vector) return w * G[p];
  if constexpr (Cr == Criterion::Element2) return std::abs(w * G[p] - 0.5 * w * w * A[p]);
  if constexpr (Cr == Criterion::Fisher) return std::abs(w * w * A[p]);
  return 0;
}

// Salience sums of every row (axis 0) or every column (axis 1) of a [R, C] tensor, each summed
// in index order as member_slice_score does (so the results are identical), in one row-major pass.
template <Criterion Cr>
void slice_sums(const float* W, const float* G, const float* A, int64_t R, int64_t C, int axis, double* out) {
  if (axis == 0) {
    // Eight rows at a time: independent accumulators, each row still summed left to right.
#pragma omp parallel for schedule(static) if (R * C > 65536)
    for (int64_t r0 = 0; r0 < R; r0 += 8) {
      const int64_t nr = std::min<int64_t>(8, R - r0);
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (nr == 8) {
        for (int64_t e = 0; e < C; e++)
          for (int k = 0; k < 8; k++) acc[k] += salience<Cr>(W[(r0 + k) * C + e], G, A, (r0 + k) * C + e);
      } else {
        for (int64_t e = 0; e < C; e++)
          for (int64_t k = 0; k < nr; k++) acc[k] += salience<Cr>(W[(r0 + k) * C + e], G, A, (r0 + k) * C + e);
      }
      for (int64_t k = 0; k < nr; k++) out[r0 + k] = acc[k];
    }
  } else {
    std::fill(out, out + C, 0.0);
    const int64_t block = 256;  // columns per task, each summed over the rows in order
#pragma omp parallel for schedule(dynamic) if (R * C > 65536)
    for (int64_t c0 = 0; c0 < C; c0 += block) {
      const int64_t c1 = std::min(C, c0 + block);
      for (int64_t r = 0; r < R; r++)
        for (int64_t j = c0; j < c1; j++) out[j] += salience<Cr>(W[r * C + j], G, A, r * C + j);
    }
  }
}

void slice_sums(Criterion c, const float* W, const float* G, const float* A, int64_t R, int64_t C, int axis, double* out) {
  switch (c) {
    case Criterion::L1: return slice_sums<Criterion::L1>(W, G, A, R, C, axis, out);
    case Criterion::L2: return slice_sums<Criterion::L2>(W, G, A, R, C, axis, out);
    case Criterion::Element1: return slice_sums<Criterion::Element1>(W, G, A, R, C, axis, out);
    case Criterion::Vector: return slice_sums<Criterion::Vector>(W, G, A, R, C, axis, out);
    case Criterion::Element2: return slice_sums<Criterion::Element2>(W, G, A, R, C, axis, out);
    case Criterion::Fisher: return slice_sums<Criterion::Fisher>(W, G, A, R, C, axis, out);
    case Criterion::Random: std::fill(out, out + (axis == 0 ? R : C), 0.0); return;
  }
}

struct MemberRef {
  size_t group, member;
};

// Scores members as each layer's weights (and gradients) become available.
class ScoringSink : public GradSink {
 public:
  ScoringSink(const Model& m, const std::vector<Group>& groups, Criterion c, std::vector<std::vector<double>>& out)
      : m_(m), groups_(groups), c_(c), out_(out), by_layer_(m.cfg.layers.size()) {
    for (size_t g = 0; g < groups.size(); g++)
      for (size_t k = 0; k < groups[g].members.size(); k++) {
        const Member& mem = groups[g].members[k];
        if (!mem.scores) continue;
        if (mem.layer >= 0) by_layer_[size_t(mem.layer)].push_back({g, k});
        else globals_.push_back({g, k});
      }
  }
  bool wants_globals() const { return !globals_.empty(); }
  // Layers with a scored member: the only ones whose weight gradients are needed.
  std::vector<uint8_t> layers_wanted() const {
    std::vector<uint8_t> v(by_layer_.size());
    for (size_t l = 0; l < v.size(); l++) v[l] = !by_layer_[l].empty();
    return v;
  }

  void on_layer(int l, const LayerF32& w, std::array<GradStats, kNumLayerRoles>& grads) override {
    score(by_layer_[size_t(l)], [&](const Member& mem, const float** W, const float** G, const float** A) {
      *W = w[Role(mem.role)];
      *G = grads[size_t(mem.role)].g.empty() ? nullptr : grads[size_t(mem.role)].g.data();
      *A = grads[size_t(mem.role)].a.empty() ? nullptr : grads[size_t(mem.role)].a.data();
    }, [&](const Member& mem) { return m_.layers[size_t(l)][Role(mem.role)]; });
  }
  void on_global(std::array<const float*, kNumGlobalRoles> weights, std::array<GradStats, kNumGlobalRoles>& grads) override {
    score(globals_, [&](const Member& mem, const float** W, const float** G, const float** A) {
      int r = mem.role;
      if (r == int(GlobalRole::LmHead) && m_.cfg.tied) r = int(GlobalRole::Embed);
      *W = weights[size_t(r)];
      *G = grads[size_t(r)].g.empty() ? nullptr : grads[size_t(r)].g.data();
      *A = grads[size_t(r)].a.empty() ? nullptr : grads[size_t(r)].a.data();
    }, [&](const Member& mem) { return m_.global[size_t(mem.role)]; });
  }

 private:
  // Member scores equal to member_slice_score's, bit for bit (double sums in the same order),
  // from one row-major pass per (tensor, axis) that computes every row's (axis 0) or every
  // column's (axis 1) salience sum: a column member no longer walks its tensor with a stride.
  template <typename Ptrs, typename TensorOf>
  void score(const std::vector<MemberRef>& refs, Ptrs ptrs, TensorOf tensor_of) {
    struct Slices {
      const float *W = nullptr, *G = nullptr, *A = nullptr;
      int64_t rows = 0, cols = 0;
      int axis = 0;
      std::vector<double> sums;
    };
    std::map<std::pair<const float*, int>, Slices> slices;
    std::vector<Slices*> of_ref(refs.size());
    for (size_t i = 0; i < refs.size(); i++) {
      const Member& mem = groups_[refs[i].group].members[refs[i].member];
      const float *W = nullptr, *G = nullptr, *A = nullptr;
      ptrs(mem, &W, &G, &A);
      const Tensor& t = tensor_of(mem);
      if (!W || (needs_gradients(c_) && !G) || (needs_fisher(c_) && !A))
        throw RuntimeError("internal: missing weights or gradients for " + member_tensor_name(m_, mem));
      Slices& sl = slices[{W, mem.axis}];
      sl.W = W, sl.G = G, sl.A = A, sl.axis = mem.axis;
      sl.rows = t.dim(0), sl.cols = t.ndim() > 1 ? t.dim(1) : 1;
      of_ref[i] = &sl;
    }
    for (auto& [key, sl] : slices) {
      sl.sums.assign(size_t(sl.axis == 0 ? sl.rows : sl.cols), 0.0);
      slice_sums(c_, sl.W, sl.G, sl.A, sl.rows, sl.cols, sl.axis, sl.sums.data());
    }
    for (size_t i = 0; i < refs.size(); i++) {
      const Member& mem = groups_[refs[i].group].members[refs[i].member];
      const std::vector<double>& sums = of_ref[i]->sums;
      double total = 0;
      for (int64_t k : mem.index) {
        const double acc = sums.at(size_t(k));
        total += c_ == Criterion::Vector ? std::abs(acc) : acc;
      }
      out_[refs[i].group][refs[i].member] = total;
    }
  }

  const Model& m_;
  const std::vector<Group>& groups_;
  Criterion c_;
  std::vector<std::vector<double>>& out_;
  std::vector<std::vector<MemberRef>> by_layer_;
  std::vector<MemberRef> globals_;
};

}  // namespace

ImportanceResult estimate_importance(const Model& m, const std::vector<Group>& groups, const ImportanceOptions& opt,
                                     const std::vector<int32_t>& tokens, int B, int T) {
  auto t0 = std::chrono::steady_clock::now();
  ImportanceResult res;
  res.member_scores.resize(groups.size());
  for (size_t g = 0; g < groups.size(); g++) res.member_scores[g].assign(groups[g].members.size(), 0.0);
  if (opt.criterion == Criterion::Random) {
    std::mt19937_64 rng(opt.seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (size_t g = 0; g < groups.size(); g++) res.scores.push_back(u(rng));
    return res;
  }
  ScoringSink sink(m, groups, opt.criterion, res.member_scores);
  if (needs_gradients(opt.criterion)) {
    GradOptions go;
    go.per_sample = needs_fisher(opt.criterion);
    go.global_grads = sink.wants_globals();
    go.layer_grads = sink.layers_wanted();
    go.keep_activations = opt.keep_activations;
    go.compute = opt.compute;
    BackwardResult br = compute_gradients(m, tokens.data(), B, T, go, sink);
    if (!br.finite)
      throw RuntimeError((m.dir.empty() ? std::string() : m.dir.string() + ": ") +
                         "calibration loss is not finite (NaN/Inf) — the model or its input is broken");
    res.calib_loss = br.loss;
  } else {
    // Magnitude criteria need no gradients: visit layers with empty gradient statistics.
    LayerF32 w;
    std::array<GradStats, kNumLayerRoles> none;
    for (int l = int(m.layers.size()) - 1; l >= 0; l--) {
      w.load(m, l);
      sink.on_layer(l, w, none);
    }
    if (sink.wants_globals()) {
      std::vector<float> s0, s1, s2;
      std::array<const float*, kNumGlobalRoles> gw{as_f32(m.embed(), s0), as_f32(m.final_norm(), s1),
                                                   m.cfg.tied ? nullptr : as_f32(m.lm_head(), s2)};
      std::array<GradStats, kNumGlobalRoles> gnone;
      sink.on_global(gw, gnone);
    }
  }
  for (size_t g = 0; g < groups.size(); g++) {
    std::vector<bool> counts;
    for (auto& mem : groups[g].members) counts.push_back(mem.scores);
    res.scores.push_back(reduce_members(res.member_scores[g], counts, opt.reduction));
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace llmprune
