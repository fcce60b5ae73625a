#include "prune/compensate.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/names.h"
#include "kernels/ops.h"
#include "model/forward.h"
#include "prune/surgery.h"

// LAPACK's Cholesky factorisation and solve, from OpenBLAS (already a dependency: it ships the
// LAPACK routines, so no LAPACKE package is needed). Fortran calling convention: every argument
// by pointer, plus the hidden length of each character argument.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* lda, double* b, const int* ldb,
             int* info, size_t uplo_len);
}

namespace llmprune {

namespace {
constexpr NameTable<Compensation, 4> kCompensationNames{{{Compensation::None, "none"},
                                                        {Compensation::Bias, "bias"},
                                                        {Compensation::Lstsq, "lstsq"},
                                                        {Compensation::BiasLstsq, "bias+lstsq"}}};
}  // namespace

Compensation parse_compensation(const std::string& s) { return parse_name(kCompensationNames, s, "--compensate"); }

std::string compensation_name(Compensation c) { return name_of(kCompensationNames, c); }

bool compensation_has_bias(Compensation c) { return c == Compensation::Bias || c == Compensation::BiasLstsq; }
bool compensation_has_lstsq(Compensation c) { return c == Compensation::Lstsq || c == Compensation::BiasLstsq; }

Refit refit_projection(const float* W, int64_t out, int64_t in, const std::vector<int64_t>& kept, const ChannelStats& st,
                       const GramMatrix* gram, Compensation mode, double damping, const std::string& what) {
  const int64_t k = int64_t(kept.size());
  Refit r;
  r.weight.resize(size_t(out * k));
  r.bias.assign(size_t(out), 0.0);
  std::vector<char> is_kept(size_t(in), 0);
  for (int64_t j : kept) is_kept.at(size_t(j)) = 1;
  if (!compensation_has_lstsq(mode)) {
    for (int64_t i = 0; i < out; i++)
      for (int64_t c = 0; c < k; c++) r.weight[size_t(i * k + c)] = W[i * in + kept[size_t(c)]];
    if (mode == Compensation::Bias)
      for (int64_t i = 0; i < out; i++) {
        double b = 0;
        for (int64_t j = 0; j < in; j++)
          if (!is_kept[size_t(j)]) b += double(W[i * in + j]) * st.mean[size_t(j)];
        r.bias[size_t(i)] = b;
      }
    return r;
  }
  if (!gram || gram->n != in || gram->count <= 0) throw RuntimeError("internal: refit without the inputs' Gram matrix");
  // M = G (lstsq) or the covariance G/n - x̄x̄^T (bias+lstsq), [in, in].
  const bool centred = mode == Compensation::BiasLstsq;
  const double n = double(gram->count);
  auto M = [&](int64_t a, int64_t b) {
    const double g = gram->g[size_t(a * in + b)];
    return centred ? g / n - st.mean[size_t(a)] * st.mean[size_t(b)] : g;
  };
  // A = M_KK + λI; λ relative to A's mean diagonal (SlimGPT/GPTQ's percdamp).
  std::vector<double> A(size_t(k * k));
  double mean_diag = 0;
  for (int64_t a = 0; a < k; a++) {
    for (int64_t b = 0; b < k; b++) A[size_t(a * k + b)] = M(kept[size_t(a)], kept[size_t(b)]);
    mean_diag += A[size_t(a * k + a)];
  }
  mean_diag /= double(std::max<int64_t>(1, k));
  const double lambda = damping * (mean_diag > 0 ? mean_diag : 1.0);
  for (int64_t a = 0; a < k; a++) A[size_t(a * k + a)] += lambda;
  // B = W M[:,K]: [out, k]; the normal equations W' A = B, solved for each row of W'.
  std::vector<double> Wd(size_t(out * in)), MK(size_t(in * k)), B(size_t(out * k));
  for (int64_t i = 0; i < out * in; i++) Wd[size_t(i)] = W[i];
  for (int64_t a = 0; a < in; a++)
    for (int64_t c = 0; c < k; c++) MK[size_t(a * k + c)] = M(a, kept[size_t(c)]);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(out), int(k), int(in), 1.0, Wd.data(), int(in), MK.data(),
              int(k), 0.0, B.data(), int(k));
  // A is symmetric, so row- and column-major agree; B row-major [out, k] is column-major [k, out]:
  // one right-hand side per output row, and the solution overwrites it with W' row by row.
  const int kn = int(k), nrhs = int(out);
  int info = 0;
  dpotrf_("L", &kn, A.data(), &kn, &info, 1);
  if (info != 0)
    throw RuntimeError(what + ": the damped Gram matrix is not positive definite (LAPACK dpotrf info " +
                       std::to_string(info) + "); raise --damping");
  dpotrs_("L", &kn, &nrhs, A.data(), &kn, B.data(), &kn, &info, 1);
  if (info != 0) throw RuntimeError(what + ": LAPACK dpotrs failed (info " + std::to_string(info) + ")");
  for (int64_t i = 0; i < out * k; i++) r.weight[size_t(i)] = float(B[size_t(i)]);
  if (centred)
    for (int64_t i = 0; i < out; i++) {
      double b = 0;
      for (int64_t j = 0; j < in; j++) b += Wd[size_t(i * in + j)] * st.mean[size_t(j)];
      for (int64_t c = 0; c < k; c++) b -= B[size_t(i * k + c)] * st.mean[size_t(kept[size_t(c)])];
      r.bias[size_t(i)] = b;
    }
  return r;
}

namespace {

// y[n, :] += b for every row n of y [N, out].
void add_rows(float* y, const float* b, int N, int out) {
  for (int n = 0; n < N; n++)
    for (int i = 0; i < out; i++) y[size_t(n) * out + i] += b[i];
}

// One projection (o_proj or down_proj) of the layer being refitted.
struct ModuleState {
  const float* W = nullptr;        // unpruned weight [out, in]
  const float* b0 = nullptr;       // the projection's own bias [out] (null: none); kept as it is
  std::vector<int64_t> kept;       // input channels that stay
  bool record = false;             // accumulate the input statistics
  ChannelStats st;
  GramMatrix gram;
  bool need_gram = false;
  bool replace = false;            // the output becomes x_K W'^T + b
  std::vector<float> w_kept;       // W[:, K] [out, k]
  std::vector<float> w_new, b_new; // [out, k], [out] (b_new empty: no bias)
  ModuleFit* fit = nullptr;        // accumulate the error figures
};

// Runs inside the UNPRUNED layer's forward: records the full inputs of o_proj / down_proj, and
// replaces their outputs with the pruned (refitted) projection's, so that the layer computes
// exactly the pruned model's layer (the kept q/k/v/gate/up rows are unchanged by pruning).
class RefitHook : public LinearHook {
 public:
  ModuleState o, down;
  void forward(int, Role r, const float* x, float* y, int N, int in, int out) override {
    ModuleState* md = r == Role::O ? &o : r == Role::Down ? &down : nullptr;
    if (!md) return;
    if (md->record) {
      md->st.add(x, N, in);
      if (md->need_gram) md->gram.add(x, N, in);
    }
    if (!md->replace) return;
    const int k = int(md->kept.size());
    xk_.resize(size_t(N) * k);
    for (int n = 0; n < N; n++)
      for (int c = 0; c < k; c++) xk_[size_t(n) * k + c] = x[size_t(n) * in + md->kept[size_t(c)]];
    yn_.resize(size_t(N) * out);
    kernels::linear_forward(yn_.data(), xk_.data(), md->w_new.data(), md->b_new.empty() ? nullptr : md->b_new.data(), N,
                            k, out);
    if (md->b0) add_rows(yn_.data(), md->b0, N, out);
    if (md->fit) {
      yp_.resize(size_t(N) * out);
      kernels::linear_forward(yp_.data(), xk_.data(), md->w_kept.data(), md->b0, N, k, out);
      for (size_t i = 0; i < size_t(N) * out; i++) {
        const double y0 = y[i];
        md->fit->energy += y0 * y0;
        md->fit->err_plain += (y0 - yp_[i]) * (y0 - yp_[i]);
        md->fit->err_refit += (y0 - yn_[i]) * (y0 - yn_[i]);
      }
    }
    std::memcpy(y, yn_.data(), sizeof(float) * size_t(N) * out);
  }
  void backward(int, Role, const float*, const float*, float*, int, int, int) override {
    throw RuntimeError("internal: the refit hook has no backward");
  }

 private:
  std::vector<float> xk_, yn_, yp_;
};

std::vector<int64_t> complement(const std::set<int64_t>& removed, int64_t n) {
  std::vector<int64_t> kept;
  for (int64_t j = 0; j < n; j++)
    if (!removed.count(j)) kept.push_back(j);
  return kept;
}

}  // namespace

void CompensatedModel::apply(Model& pruned) const {
  for (const RefittedTensor& r : refitted) pruned.layers.at(size_t(r.layer))[r.role] = r.tensor;
  // attention_bias / mlp_bias (add_bias_linear) describe every layer: zeros where none was computed.
  if (complete_biases) complete_bias_switches(pruned);
}

CompensatedModel compensate_pruned(const Model& original, const std::vector<Group>& removed,
                                   const std::vector<int32_t>& tokens, int S, int T, const CompensationOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (!(opt.damping > 0)) throw UserError("--damping must be > 0");
  if (int64_t(tokens.size()) != int64_t(S) * T) throw RuntimeError("internal: calibration tokens are not S x T");
  if (compensation_has_bias(opt.mode))
    for (Role b : {Role::OBias, Role::DownBias}) {
      const BiasSwitch* sw = bias_switch_of(*original.arch, b);
      if (!sw || (!sw->config_key && original.layers.at(0)[b].empty()))
        throw UserError("--compensate " + compensation_name(opt.mode) + " writes " + role_desc(*original.arch, b).name +
                        ", which a " + original.arch->family + " checkpoint cannot hold; use --compensate lstsq");
    }
  const int L = int(original.layers.size()), C = original.cfg.hidden;
  std::vector<std::set<int64_t>> gone_o(static_cast<size_t>(L)), gone_down(static_cast<size_t>(L));
  for (const Group& g : removed) {
    if (g.kind != UnitKind::Head && g.kind != UnitKind::KvGroup && g.kind != UnitKind::Mlp)
      throw UserError("--compensate refits attention heads and MLP channels only (use --strategy block)");
    for (const Member& mem : g.members)
      if (mem.layer == g.layer && mem.axis == 1 && (mem.role == int(Role::O) || mem.role == int(Role::Down)))
        (mem.role == int(Role::O) ? gone_o : gone_down)[size_t(g.layer)].insert(mem.index.begin(), mem.index.end());
  }
  CompensatedModel res;
  if (opt.materialize) res.model = remove_groups(original, removed);
  res.complete_biases = compensation_has_bias(opt.mode);
  res.o_bias.resize(size_t(L));
  res.down_bias.resize(size_t(L));
  res.layers.resize(size_t(L));
  const DType dtype = original.storage_dtype();

  Runner runner(original, T);
  runner.set_compute(opt.compute);
  std::vector<float> x(size_t(S) * T * C), scratch;  // the pruned model's residual stream [S*T, C]
  runner.embed(tokens.data(), S * T, x.data());
  const int chunk = std::max(1, opt.chunk_windows);
  LayerF32 w;
  auto run_layer = [&](int l, bool in_place) {
    for (int s0 = 0; s0 < S; s0 += chunk) {
      const int b = std::min(chunk, S - s0);
      float* xs = x.data() + size_t(s0) * T * C;
      if (!in_place) {  // statistics passes leave the stream as it is
        scratch.assign(xs, xs + size_t(b) * T * C);
        xs = scratch.data();
      }
      runner.block_forward(l, w, xs, b, T, nullptr, nullptr);
    }
  };
  for (int l = 0; l < L; l++) {
    w.load(original, l, matrix_load_for(opt.compute, true));  // the refit reads fp32 weights
    const LayerConfig& lc = original.cfg.layers[size_t(l)];
    RefitHook hook;
    runner.set_hook(&hook);
    struct Job {
      ModuleState& md;
      Role role, bias_role;
      int64_t in;
      const std::set<int64_t>& gone;
      ModuleFit& fit;
      std::vector<float>& bias_out;
    };
    Job jobs[2] = {{hook.o, Role::O, Role::OBias, int64_t(lc.n_head) * lc.head_dim, gone_o[size_t(l)], res.layers[size_t(l)].o,
                    res.o_bias[size_t(l)]},
                   {hook.down, Role::Down, Role::DownBias, int64_t(lc.d_ff), gone_down[size_t(l)], res.layers[size_t(l)].down,
                    res.down_bias[size_t(l)]}};
    for (Job& j : jobs) {
      if (j.gone.empty()) continue;
      ModuleState& md = j.md;
      md.W = w[j.role];
      md.b0 = w[j.bias_role];
      md.kept = complement(j.gone, j.in);
      md.need_gram = compensation_has_lstsq(opt.mode);
      md.record = true;
      run_layer(l, false);  // o_proj's statistics; then down_proj's, behind the refitted o_proj
      md.record = false;
      const std::string what = layer_tensor_name(*original.arch, j.role, l);
      if (md.need_gram) md.gram.symmetrize();
      Refit r = refit_projection(md.W, C, j.in, md.kept, md.st, md.need_gram ? &md.gram : nullptr, opt.mode, opt.damping,
                                 what);
      md.gram = GramMatrix();  // only one layer's Gram matrix at a time
      const int64_t k = int64_t(md.kept.size());
      md.w_kept.resize(size_t(C * k));
      for (int64_t i = 0; i < C; i++)
        for (int64_t c = 0; c < k; c++) md.w_kept[size_t(i * k + c)] = md.W[i * j.in + md.kept[size_t(c)]];
      md.w_new = std::move(r.weight);
      if (compensation_has_bias(opt.mode)) {
        md.b_new.assign(r.bias.begin(), r.bias.end());
        j.bias_out = md.b_new;
        // The model's bias: its own (if any) plus the compensation, kept in F32.
        Tensor b = Tensor::zeros(DType::F32, {C});
        for (int64_t i = 0; i < C; i++) b.f32_mut()[i] = md.b_new[size_t(i)] + (md.b0 ? md.b0[i] : 0.0f);
        res.refitted.push_back({l, j.bias_role, b});
      }
      md.replace = true;
      md.fit = &j.fit;
      j.fit.pruned = true;
      Tensor t = Tensor::zeros(DType::F32, {C, k});
      std::memcpy(t.f32_mut(), md.w_new.data(), sizeof(float) * size_t(C * k));
      res.refitted.push_back({l, j.role, dtype == DType::F32 ? t : t.converted(dtype)});
    }
    run_layer(l, true);  // the pruned, refitted layer: the next layer's input (and the fit figures)
    runner.set_hook(nullptr);
  }
  if (opt.materialize) res.apply(res.model);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace llmprune
