#include "importance/flap.h"

#include <cmath>
#include <map>

#include "core/error.h"
#include "core/names.h"
#include "model/forward.h"

namespace llmprune {

namespace {
constexpr NameTable<FlapMetric, 3> kFlapMetricNames{
    {{FlapMetric::Wifv, "wifv"}, {FlapMetric::Ifv, "ifv"}, {FlapMetric::Wifn, "wifn"}}};
}  // namespace

FlapMetric parse_flap_metric(const std::string& s) { return parse_name(kFlapMetricNames, s, "--flap-metric"); }

std::string flap_metric_name(FlapMetric m) { return name_of(kFlapMetricNames, m); }

std::vector<double> flap_channel_metric(FlapMetric metric, const ChannelStats& st, const float* W, int64_t out,
                                        int64_t in) {
  if (int64_t(st.mean.size()) != in) throw RuntimeError("internal: statistics width differs from the weight's inputs");
  std::vector<double> col(size_t(in), 0.0);  // Σ_i W_ij² (wifv) or Σ_i |W_ij| (wifn)
  if (metric != FlapMetric::Ifv)
    for (int64_t i = 0; i < out; i++)
      for (int64_t j = 0; j < in; j++) {
        const double w = W[i * in + j];
        col[size_t(j)] += metric == FlapMetric::Wifv ? w * w : std::abs(w);
      }
  std::vector<double> v(static_cast<size_t>(in));
  for (int64_t j = 0; j < in; j++) {
    switch (metric) {
      case FlapMetric::Ifv: v[size_t(j)] = st.variance(j); break;
      case FlapMetric::Wifv: v[size_t(j)] = st.variance(j) * col[size_t(j)]; break;
      case FlapMetric::Wifn: v[size_t(j)] = col[size_t(j)] / double(out) * std::sqrt(st.mean_square(j)); break;
    }
  }
  return v;
}

namespace {

// (v - mean) / std over all entries, std with n-1 (torch.std); a constant vector gives zeros.
std::vector<double> standardize(const std::vector<double>& v) {
  const double n = double(v.size());
  double mean = 0;
  for (double x : v) mean += x;
  mean /= n;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
  std::vector<double> z(v.size(), 0.0);
  if (sd > 0)
    for (size_t i = 0; i < v.size(); i++) z[i] = (v[i] - mean) / sd;
  return z;
}

const Member& residual_member(const Group& g, Role role) {
  for (const Member& mem : g.members)
    if (mem.layer == g.layer && mem.role == int(role) && mem.axis == 1) return mem;
  throw RuntimeError("internal: group without its " + std::string(role == Role::O ? "o_proj" : "down_proj") + " columns");
}

}  // namespace

FlapScores flap_scores(const Model& m, const std::vector<Group>& groups, const std::vector<LayerInputStats>& stats,
                       FlapMetric metric) {
  // Channel values per (layer, module): metric² for o_proj inputs, metric for down_proj inputs.
  struct Values {
    std::vector<double> raw, z;
  };
  std::map<std::pair<int, int>, Values> values;  // (layer, role)
  auto values_of = [&](int layer, Role role) -> const Values& {
    auto key = std::make_pair(layer, int(role));
    auto it = values.find(key);
    if (it != values.end()) return it->second;
    const Tensor& t = m.layers.at(size_t(layer))[role];
    std::vector<float> scratch;
    const float* W = as_f32(t, scratch);
    const LayerInputStats& s = stats.at(size_t(layer));
    Values v;
    v.raw = flap_channel_metric(metric, role == Role::O ? s.o_in : s.down_in, W, t.dim(0), t.dim(1));
    if (role == Role::O)
      for (double& x : v.raw) x *= x;
    v.z = standardize(v.raw);
    return values.emplace(key, std::move(v)).first->second;
  };
  FlapScores out;
  for (const Group& g : groups) {
    Role role;
    if (g.kind == UnitKind::Head || g.kind == UnitKind::KvGroup) role = Role::O;
    else if (g.kind == UnitKind::Mlp) role = Role::Down;
    else throw UserError("--importance flap scores attention heads and MLP channels only (use --strategy block)");
    const Member& mem = residual_member(g, role);
    const Values& v = values_of(g.layer, role);
    double raw = 0, z = 0;
    for (int64_t j : mem.index) raw += v.raw.at(size_t(j)), z += v.z.at(size_t(j));
    out.raw.push_back(raw);
    out.standardized.push_back(z / double(mem.index.size()));
  }
  return out;
}

}  // namespace llmprune
