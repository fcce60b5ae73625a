// HTML report of pruning runs: inline SVG built here, no scripts. Layout and conventions in
// docs/report.md. Every SVG carries <title>/<desc> (aria-labelledby) and axis labels with units;
// colours come from CSS variables so the page follows the system's light/dark theme and prints
// in the light palette.
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/json_reader.h"
#include "core/fs.h"

namespace llmprune {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Text helpers

std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  return o;
}

std::string fixed(double v, int prec) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// Coordinates: one decimal is plenty and keeps the file small.
std::string c1(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  std::string s = b;
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  if (s == "-0") s = "0";
  return s;
}

std::string count_str(double n) {  // 6.84M, 1.23B
  char b[32];
  double a = std::fabs(n);
  if (a >= 1e9) std::snprintf(b, sizeof b, "%.2fB", n / 1e9);
  else if (a >= 1e6) std::snprintf(b, sizeof b, "%.2fM", n / 1e6);
  else if (a >= 1e3) std::snprintf(b, sizeof b, "%.1fK", n / 1e3);
  else std::snprintf(b, sizeof b, "%.0f", n);
  return b;
}

std::string thousands(int64_t n) {
  std::string d = std::to_string(n < 0 ? -n : n), o;
  for (size_t i = 0; i < d.size(); i++) {
    if (i && (d.size() - i) % 3 == 0) o += ',';
    o += d[i];
  }
  return (n < 0 ? "-" : "") + o;
}

// Compact number for ticks and scores: 0, 12, 0.25, 3.4e-5.
std::string num(double v) {
  if (v == 0) return "0";
  double a = std::fabs(v);
  char b[32];
  if (a >= 1e5 || a < 1e-3) {
    std::snprintf(b, sizeof b, "%.2e", v);
    std::string s = b;
    auto e = s.find('e');
    std::string mant = s.substr(0, e), ex = s.substr(e + 1);
    while (mant.find('.') != std::string::npos && (mant.back() == '0' || mant.back() == '.')) {
      bool dot = mant.back() == '.';
      mant.pop_back();
      if (dot) break;
    }
    bool neg = ex[0] == '-';
    size_t k = 1;
    while (k + 1 < ex.size() && ex[k] == '0') k++;
    return mant + "e" + (neg ? "-" : "") + ex.substr(k);
  }
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

std::string pct(double fraction, int prec = 2) { return fixed(100.0 * fraction, prec); }

const char* kind_title(const std::string& k) {
  if (k == "head") return "attention heads";
  if (k == "kv_group") return "attention KV groups";
  if (k == "mlp") return "MLP channels";
  if (k == "hidden") return "hidden channels";
  if (k == "layer") return "blocks (whole layers)";
  return "units";
}
int kind_order(const std::string& k) {
  const char* order[] = {"head", "kv_group", "mlp", "hidden", "layer"};
  for (int i = 0; i < 5; i++)
    if (k == order[i]) return i;
  return 5;
}

// ---------------------------------------------------------------------------------------------
// Loading

json read_json(const fs::path& p) {
  std::string s = read_text_file(p.string());
  try {
    return json::parse(s);
  } catch (const json::parse_error& e) {
    throw input_error(p.string(), std::string("invalid JSON: ") + e.what());
  }
}

using Reader = JsonReader;

void load_eval_file(const fs::path& p, std::vector<ReportEvalRow>& rows) {
  json j = read_json(p);
  Reader r{p.string()};
  std::vector<const json*> models;
  if (j.is_object() && j.contains("models")) {
    if (!j["models"].is_array()) throw input_error(p.string(), "field 'models' must be an array");
    for (auto& m : j["models"]) models.push_back(&m);
  } else if (j.is_object()) {
    models.push_back(&j);
  } else {
    throw input_error(p.string(), "expected an `llmprune eval --json` object");
  }
  for (size_t i = 0; i < models.size(); i++) {
    const json& m = *models[i];
    std::string where = models.size() > 1 ? "models[" + std::to_string(i) + "]: " : "";
    if (!m.is_object() || (!m.contains("ppl") && !m.contains("tasks")))
      throw input_error(p.string(), where + "no 'ppl' or 'tasks' (not an `llmprune eval --json` output)");
    ReportEvalRow row;
    row.file = p.filename().string();
    row.model = r.opt<std::string>(m, "model", "");
    row.label = r.opt<std::string>(m, "label", "");
    if (row.label.empty()) row.label = row.model.empty() ? row.file : fs::path(row.model).lexically_normal().filename().string();
    if (row.label.empty()) row.label = row.model;
    row.params = r.opt<int64_t>(m, "params", 0);
    if (m.contains("ppl")) {
      if (!m["ppl"].is_object()) throw input_error(p.string(), where + "field 'ppl' must be an object");
      for (auto& [name, v] : m["ppl"].items()) row.ppl.emplace_back(name, r.get<double>(v, "ppl", where + "ppl." + name + ": "));
    }
    if (m.contains("tasks")) {
      if (!m["tasks"].is_object()) throw input_error(p.string(), where + "field 'tasks' must be an object");
      for (auto& [name, v] : m["tasks"].items()) {
        ReportEvalTask t;
        t.name = name;
        t.display = r.opt<std::string>(v, "display", name);
        t.metric = r.opt<std::string>(v, "metric", "acc");
        t.score = r.get<double>(v, "score", where + "tasks." + name + ": ");
        row.tasks.push_back(t);
      }
      if (!row.tasks.empty()) {
        row.has_average = true;
        double s = 0;
        for (auto& t : row.tasks) s += t.score;
        row.average = r.opt<double>(m, "zero_shot_average", s / double(row.tasks.size()));
      }
    }
    rows.push_back(std::move(row));
  }
}

}  // namespace

ReportRun load_report_run(const std::string& spec) {
  ReportRun run;
  std::string dir = spec;
  if (auto eq = spec.find('='); eq != std::string::npos && !fs::exists(spec)) {
    run.label = spec.substr(0, eq);
    dir = spec.substr(eq + 1);
  }
  run.dir = dir;
  if (run.label.empty()) {
    run.label = fs::path(dir).lexically_normal().filename().string();
    if (run.label.empty() || run.label == ".") run.label = fs::path(dir).lexically_normal().parent_path().filename().string();
    if (run.label.empty()) run.label = dir;
  }
  if (!fs::is_directory(dir)) throw UserError(dir + ": not a directory (give the --out DIR of `llmprune prune`)");
  refuse_incomplete_output(dir);
  fs::path pj_path = fs::path(dir) / "pruning.json";
  if (!fs::exists(pj_path)) throw input_error(pj_path.string(), "not found (not an `llmprune prune` output directory)");
  // pruning.json through the type prune::run writes it from (prune/summary.h).
  run.summary = PruneSummary::read(pj_path.string());
  const PruneSummary& sum = run.summary;
  for (const PrunedLayer& l : sum.layers)
    run.layers.push_back({l.layer, l.heads_before, l.heads_after, l.kv_heads_before, l.kv_heads_after, l.mlp_before, l.mlp_after, l.removed});
  if (sum.by_role_before) {
    const RoleParams &b = *sum.by_role_before, a = sum.by_role_after.value_or(RoleParams{});
    run.params_by_role = {{"embed", {b.embed, a.embed}}, {"attention", {b.attention, a.attention}}, {"mlp", {b.mlp, a.mlp}},
                          {"lm_head", {b.lm_head, a.lm_head}}, {"norms", {b.norms, a.norms}}};
  }
  std::set<std::tuple<std::string, int, int, int>> removed;
  for (const RemovedUnit& u : sum.removed) removed.insert({u.kind, u.layer, u.index, u.step});
  run.removed_units = int(removed.size());

  fs::path imp_path = fs::path(dir) / "importance.json";
  if (fs::exists(imp_path)) {
    json ij = read_json(imp_path);
    Reader ir{imp_path.string()};
    if (!ij.is_array()) throw input_error(imp_path.string(), "expected an array of {layer, kind, index, score}");
    int nulls = 0;
    for (size_t i = 0; i < ij.size(); i++) {
      const json& u = ij[i];
      std::string where = "[" + std::to_string(i) + "]: ";
      ReportUnit unit;
      unit.kind = ir.get<std::string>(u, "kind", where);
      unit.layer = ir.get<int>(u, "layer", where);
      unit.index = ir.get<int>(u, "index", where);
      unit.step = ir.opt<int>(u, "step", 1);
      const json& sc = ir.need(u, "score", where);
      if (sc.is_null()) {  // NaN/inf scores are written as null
        nulls++;
        continue;
      }
      unit.score = ir.get<double>(u, "score", where);
      // A layer unit's index is its layer (pruning.json maps both to the original numbering).
      unit.removed = removed.count({unit.kind, unit.layer, unit.kind == "layer" ? unit.layer : unit.index, unit.step}) > 0;
      run.units.push_back(unit);
    }
    run.has_importance = true;
    if (nulls) run.notes.push_back(std::to_string(nulls) + " units in importance.json have no finite score and are not plotted.");
  } else {
    run.notes.push_back("No importance.json in the run directory (llmprune prune writes it; for an older run, copy its "
                        "--save-importance file there): importance distributions are not shown.");
  }

  std::vector<fs::path> evals;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string n = e.path().filename().string();
    if (e.is_regular_file() && n.rfind("eval", 0) == 0 && n.size() > 5 && n.compare(n.size() - 5, 5, ".json") == 0)
      evals.push_back(e.path());
  }
  std::sort(evals.begin(), evals.end());
  for (auto& e : evals) load_eval_file(e, run.evals);
  return run;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Scales and axes

struct Scale {
  double d0 = 0, d1 = 1, r0 = 0, r1 = 1;
  bool log = false;
  double operator()(double v) const {
    if (log) {
      double a = std::log10(d0), b = std::log10(d1);
      return r0 + (std::log10(std::max(v, d0 * 1e-3)) - a) / (b - a) * (r1 - r0);
    }
    return r0 + (v - d0) / (d1 - d0) * (r1 - r0);
  }
  std::vector<double> ticks(int n = 5) const;
};

double nice_step(double raw) {
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

std::vector<double> Scale::ticks(int n) const {
  std::vector<double> t;
  if (log) {
    int a = int(std::floor(std::log10(d0))), b = int(std::ceil(std::log10(d1)));
    bool fine = b - a <= 3;
    for (int k = a; k <= b; k++)
      for (double m : {1.0, 2.0, 5.0}) {
        if (m != 1 && !fine) continue;
        double v = m * std::pow(10.0, k);
        if (v >= d0 * (1 - 1e-9) && v <= d1 * (1 + 1e-9)) t.push_back(v);
      }
    if (t.size() >= 2) return t;
    t.clear();
  }
  double step = nice_step((d1 - d0) / n);
  for (double v = std::ceil(d0 / step - 1e-9) * step; v <= d1 + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return t;
}

// Linear scale over [lo, hi] widened to whole tick steps (lo stays 0 when it is 0).
Scale nice_linear(double lo, double hi, double r0, double r1, int n = 5) {
  if (!(hi > lo)) hi = lo + (lo == 0 ? 1 : std::fabs(lo) * 0.1);
  double step = nice_step((hi - lo) / n);
  Scale s;
  s.d0 = std::floor(lo / step + 1e-9) * step;
  s.d1 = std::ceil(hi / step - 1e-9) * step;
  if (s.d1 <= s.d0) s.d1 = s.d0 + step;
  s.r0 = r0;
  s.r1 = r1;
  return s;
}

// Log when every value is positive and they span at least `min_ratio`; otherwise linear.
Scale value_scale(double lo, double hi, double r0, double r1, double min_ratio, bool zero_based) {
  if (lo > 0 && hi / lo >= min_ratio) {
    Scale s;
    s.log = true;
    s.d0 = lo / 1.25;
    s.d1 = hi * 1.25;
    s.r0 = r0;
    s.r1 = r1;
    return s;
  }
  if (zero_based && lo >= 0) return nice_linear(0, hi, r0, r1);
  double pad = (hi - lo) * 0.06;
  if (pad == 0) pad = std::fabs(hi) * 0.1 + 1e-12;
  return nice_linear(lo - pad, hi + pad, r0, r1);
}

struct Plot {  // plot area in SVG coordinates
  double x0, x1, y0, y1;  // y0 top, y1 bottom
};

// Horizontal grid lines, tick labels and the rotated y-axis label.
void y_axis(std::ostream& o, const Scale& y, const Plot& p, const std::string& label,
            std::string (*fmt)(double) = num) {
  o << "<g class=\"y-axis\">";
  for (double v : y.ticks()) {
    double py = y(v);
    o << "<line class=\"grid\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x1) << "\" y1=\"" << c1(py) << "\" y2=\"" << c1(py) << "\"/>";
    o << "<text class=\"tick\" x=\"" << c1(p.x0 - 6) << "\" y=\"" << c1(py + 4) << "\" text-anchor=\"end\">" << esc(fmt(v)) << "</text>";
  }
  o << "<line class=\"axis\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x0) << "\" y1=\"" << c1(p.y0) << "\" y2=\"" << c1(p.y1) << "\"/>";
  double cy = (p.y0 + p.y1) / 2;
  o << "<text class=\"axis-label\" x=\"0\" y=\"0\" transform=\"translate(14 " << c1(cy) << ") rotate(-90)\" text-anchor=\"middle\">"
    << esc(label) << "</text></g>";
}

std::string count_tick(double v) { return count_str(v); }

// Categorical x axis: labels under band centres (thinned so they do not collide).
void x_band_axis(std::ostream& o, const Plot& p, const std::vector<std::string>& labels, const std::string& label) {
  size_t n = labels.size();
  double band = (p.x1 - p.x0) / double(std::max<size_t>(n, 1));
  size_t every = 1;
  while (band * double(every) < 22) every++;
  o << "<g class=\"x-axis\"><line class=\"axis\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x1) << "\" y1=\"" << c1(p.y1)
    << "\" y2=\"" << c1(p.y1) << "\"/>";
  for (size_t i = 0; i < n; i += every)
    o << "<text class=\"tick\" x=\"" << c1(p.x0 + band * (double(i) + 0.5)) << "\" y=\"" << c1(p.y1 + 16)
      << "\" text-anchor=\"middle\">" << esc(labels[i]) << "</text>";
  o << "<text class=\"axis-label\" x=\"" << c1((p.x0 + p.x1) / 2) << "\" y=\"" << c1(p.y1 + 36) << "\" text-anchor=\"middle\">"
    << esc(label) << "</text></g>";
}

void x_linear_axis(std::ostream& o, const Scale& x, const Plot& p, const std::string& label) {
  o << "<g class=\"x-axis\">";
  for (double v : x.ticks()) {
    double px = x(v);
    o << "<line class=\"grid\" x1=\"" << c1(px) << "\" x2=\"" << c1(px) << "\" y1=\"" << c1(p.y0) << "\" y2=\"" << c1(p.y1) << "\"/>";
    o << "<text class=\"tick\" x=\"" << c1(px) << "\" y=\"" << c1(p.y1 + 16) << "\" text-anchor=\"middle\">" << esc(num(v)) << "</text>";
  }
  o << "<line class=\"axis\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x1) << "\" y1=\"" << c1(p.y1) << "\" y2=\"" << c1(p.y1) << "\"/>";
  o << "<text class=\"axis-label\" x=\"" << c1((p.x0 + p.x1) / 2) << "\" y=\"" << c1(p.y1 + 36) << "\" text-anchor=\"middle\">"
    << esc(label) << "</text></g>";
}

// ---------------------------------------------------------------------------------------------
// Document assembly

constexpr double kW = 960;

struct Doc {
  explicit Doc(const ReportOptions& o) : opt(o) {}
  const ReportOptions& opt;
  std::ostringstream body;
  int next_id = 0, figure_no = 0;
  std::vector<std::pair<std::string, std::string>> toc;  // id, title

  std::string svg_open(const std::string& cls, const std::string& attrs, double h, const std::string& title,
                       const std::string& desc, int* id_out) {
    int id = ++next_id;
    *id_out = id;
    std::ostringstream o;
    std::string sid = "c" + std::to_string(id);
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart " << cls << "\" id=\"" << sid << "\" " << attrs
      << " viewBox=\"0 0 " << c1(kW) << " " << c1(h) << "\" width=\"" << c1(kW) << "\" height=\"" << c1(h)
      << "\" role=\"img\" aria-labelledby=\"" << sid << "-t " << sid << "-d\">"
      << "<title id=\"" << sid << "-t\">" << esc(title) << "</title><desc id=\"" << sid << "-d\">" << esc(desc) << "</desc>";
    return o.str();
  }
  // The hatch pattern of "removed" areas (one per SVG: ids stay local to their chart).
  static std::string hatch_defs(int id) {
    return "<defs><pattern id=\"hatch-" + std::to_string(id) +
           "\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" patternTransform=\"rotate(45)\">"
           "<rect class=\"hatch-bg\" width=\"6\" height=\"6\"/><line class=\"hatch-line\" x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\"/>"
           "</pattern></defs>";
  }
  void figure(const std::string& svg, const std::string& caption) {
    figure_no++;
    body << "<figure>" << svg << "<figcaption><strong>Figure " << figure_no << ".</strong> " << caption << "</figcaption></figure>\n";
  }
};

// Legend entries drawn left to right at the top of a chart.
struct Legend {
  std::ostringstream o;
  double x, y;
  Legend(double x0, double y0) : x(x0), y(y0) { o << "<g class=\"legend\">"; }
  void item(const std::string& swatch_svg, const std::string& label) {
    o << "<g transform=\"translate(" << c1(x) << " " << c1(y) << ")\">" << swatch_svg << "<text x=\"18\" y=\"10\">" << esc(label)
      << "</text></g>";
    x += 30 + 7.0 * double(label.size());
  }
  std::string str() {
    o << "</g>";
    return o.str();
  }
};

// ---------------------------------------------------------------------------------------------
// Charts

// Stacked kept/removed bars, one per layer: query heads or MLP width.
std::string layer_bars_chart(Doc& doc, const ReportRun& run, size_t run_idx, bool heads) {
  const size_t n = run.layers.size();
  const double h = 270;
  Plot p{72, kW - 16, 40, h - 50};
  int maxv = 1;
  int64_t tb = 0, ta = 0;
  for (auto& l : run.layers) {
    maxv = std::max(maxv, heads ? l.heads_before : l.mlp_before);
    tb += heads ? l.heads_before : l.mlp_before;
    ta += heads ? l.heads_after : l.mlp_after;
  }
  bool gqa = false;
  for (auto& l : run.layers) gqa = gqa || l.kv_before != l.heads_before;
  std::string what = heads ? (gqa ? "query heads" : "attention heads") : "MLP channels";
  std::string title = std::string(heads ? "Attention heads" : "MLP width") + " per layer before and after pruning (" + run.label + ")";
  std::ostringstream desc;
  desc << "Stacked bar chart, one bar per layer (" << n << " layers): the solid part is the " << what
       << " kept, the hatched part those removed. In total " << thousands(tb) << " " << what << " before, " << thousands(ta)
       << " after. Per layer, before to after: ";
  for (size_t i = 0; i < n; i++) {
    auto& l = run.layers[i];
    desc << (i ? "; " : "") << "layer " << l.layer << " " << (heads ? l.heads_before : l.mlp_before) << " to "
         << (heads ? l.heads_after : l.mlp_after);
    if (l.removed) desc << " (block removed)";
  }
  desc << ".";
  int id;
  std::ostringstream o;
  o << doc.svg_open("layer-bars", "data-chart=\"" + std::string(heads ? "heads" : "mlp") + "\" data-run=\"" +
                                      std::to_string(run_idx) + "\" data-layers=\"" + std::to_string(n) + "\"",
                    h, title, desc.str(), &id);
  o << Doc::hatch_defs(id);
  Scale y = nice_linear(0, maxv, p.y1, p.y0);
  y_axis(o, y, p, heads ? (gqa ? "query heads (count)" : "attention heads (count)") : "MLP width (channels)", count_tick);
  std::vector<std::string> labels;
  for (auto& l : run.layers) labels.push_back(std::to_string(l.layer));
  x_band_axis(o, p, labels, "layer (0-based index)");
  double band = (p.x1 - p.x0) / double(std::max<size_t>(n, 1));
  double bw = std::max(1.0, band * 0.72);
  for (size_t i = 0; i < n; i++) {
    auto& l = run.layers[i];
    int before = heads ? l.heads_before : l.mlp_before, after = heads ? l.heads_after : l.mlp_after;
    double x = p.x0 + band * double(i) + (band - bw) / 2;
    double yk = y(after), yb = y(before);
    std::string tip = "Layer " + std::to_string(l.layer) + ": " + std::to_string(before) + " \u2192 " + std::to_string(after) + " " +
                      what + " (" + std::to_string(before - after) + " removed)";
    if (heads && gqa) tip += ", KV heads " + std::to_string(l.kv_before) + " \u2192 " + std::to_string(l.kv_after);
    if (l.removed) tip += ", block removed";
    o << "<g class=\"bar\" data-layer=\"" << l.layer << "\" data-before=\"" << before << "\" data-after=\"" << after << "\"><title>"
      << esc(tip) << "</title>";
    o << "<rect class=\"kept\" x=\"" << c1(x) << "\" y=\"" << c1(yk) << "\" width=\"" << c1(bw) << "\" height=\"" << c1(p.y1 - yk) << "\"/>";
    o << "<rect class=\"removed\" fill=\"url(#hatch-" << id << ")\" x=\"" << c1(x) << "\" y=\"" << c1(yb) << "\" width=\"" << c1(bw)
      << "\" height=\"" << c1(yk - yb) << "\"/>";
    if (band >= 30)
      o << "<text class=\"val\" x=\"" << c1(x + bw / 2) << "\" y=\"" << c1(yb - 4) << "\" text-anchor=\"middle\">" << after
        << "</text>";
    o << "</g>";
  }
  Legend lg(p.x0, 10);
  lg.item("<rect class=\"kept\" width=\"12\" height=\"12\"/>", "kept");
  lg.item("<rect class=\"removed\" fill=\"url(#hatch-" + std::to_string(id) + ")\" width=\"12\" height=\"12\"/>", "removed");
  o << lg.str() << "</svg>";
  return o.str();
}

// Parameters by role: before/after horizontal bars.
std::string roles_chart(Doc& doc, const ReportRun& run, size_t run_idx) {
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> rows;
  for (auto& r : run.params_by_role)
    if (r.second.first || r.second.second) rows.push_back(r);
  const double row_h = 40;
  const double h = 44 + row_h * double(rows.size()) + 48;
  Plot p{96, kW - 90, 40, h - 50};
  int64_t maxv = 1;
  for (auto& r : rows) maxv = std::max({maxv, r.second.first, r.second.second});
  std::ostringstream desc;
  desc << "Horizontal bar chart of parameter counts by role, before (grey) and after (coloured) pruning. Total "
       << thousands(run.summary.params_before) << " before, " << thousands(run.summary.params_after) << " after (" << pct(run.summary.fraction_removed())
       << "% removed). ";
  for (auto& r : rows) desc << r.first << ": " << thousands(r.second.first) << " to " << thousands(r.second.second) << ". ";
  int id;
  std::ostringstream o;
  o << doc.svg_open("role-bars", "data-chart=\"roles\" data-run=\"" + std::to_string(run_idx) + "\" data-roles=\"" +
                                     std::to_string(rows.size()) + "\"",
                    h, "Parameters by role before and after pruning (" + run.label + ")", desc.str(), &id);
  Scale x = nice_linear(0, double(maxv), p.x0, p.x1);
  o << "<g class=\"x-axis\">";
  for (double v : x.ticks()) {
    o << "<line class=\"grid\" x1=\"" << c1(x(v)) << "\" x2=\"" << c1(x(v)) << "\" y1=\"" << c1(p.y0) << "\" y2=\"" << c1(p.y1) << "\"/>";
    o << "<text class=\"tick\" x=\"" << c1(x(v)) << "\" y=\"" << c1(p.y1 + 16) << "\" text-anchor=\"middle\">" << count_str(v) << "</text>";
  }
  o << "<text class=\"axis-label\" x=\"" << c1((p.x0 + p.x1) / 2) << "\" y=\"" << c1(p.y1 + 36)
    << "\" text-anchor=\"middle\">parameters (count)</text></g>";
  o << "<line class=\"axis\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x0) << "\" y1=\"" << c1(p.y0) << "\" y2=\"" << c1(p.y1) << "\"/>";
  o << "<text class=\"axis-label\" x=\"0\" y=\"0\" transform=\"translate(14 " << c1((p.y0 + p.y1) / 2)
    << ") rotate(-90)\" text-anchor=\"middle\">role</text>";
  for (size_t i = 0; i < rows.size(); i++) {
    double top = p.y0 + row_h * double(i) + 4;
    auto [b, a] = rows[i].second;
    o << "<g class=\"role\" data-role=\"" << esc(rows[i].first) << "\"><title>" << esc(rows[i].first) << ": " << thousands(b)
      << " \u2192 " << thousands(a) << " parameters</title>";
    o << "<text class=\"tick\" x=\"" << c1(p.x0 - 6) << "\" y=\"" << c1(top + 19) << "\" text-anchor=\"end\">" << esc(rows[i].first)
      << "</text>";
    o << "<rect class=\"before\" x=\"" << c1(p.x0) << "\" y=\"" << c1(top) << "\" width=\"" << c1(x(double(b)) - p.x0)
      << "\" height=\"14\"/>";
    o << "<rect class=\"after\" x=\"" << c1(p.x0) << "\" y=\"" << c1(top + 16) << "\" width=\"" << c1(x(double(a)) - p.x0)
      << "\" height=\"14\"/>";
    o << "<text class=\"val\" x=\"" << c1(x(double(b)) + 4) << "\" y=\"" << c1(top + 11) << "\">" << count_str(double(b)) << "</text>";
    std::string delta = b ? " (\u2212" + pct(1.0 - double(a) / double(b), 1) + "%)" : "";
    o << "<text class=\"val\" x=\"" << c1(x(double(a)) + 4) << "\" y=\"" << c1(top + 27) << "\">" << count_str(double(a))
      << (a != b ? delta : "") << "</text></g>";
  }
  Legend lg(p.x0, 10);
  lg.item("<rect class=\"before\" width=\"12\" height=\"12\"/>", "before");
  lg.item("<rect class=\"after\" width=\"12\" height=\"12\"/>", "after");
  o << lg.str() << "</svg>";
  return o.str();
}

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  double pos = q * double(sorted.size() - 1);
  size_t i = size_t(pos);
  double f = pos - double(i);
  return i + 1 < sorted.size() ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[i];
}

std::string scoring_of(const ReportRun& run) {
  std::string c = run.summary.settings.criterion.empty() ? "importance" : run.summary.settings.criterion;
  if (!run.summary.settings.importance.empty() && run.summary.settings.importance != run.summary.settings.criterion) c = run.summary.settings.importance + " " + run.summary.settings.criterion;
  return c + (run.summary.settings.reduction.empty() ? "" : ", group reduction " + run.summary.settings.reduction);
}

// Strip + box plot of one unit kind's scores, one column per layer, with the threshold.
std::string importance_chart(Doc& doc, const ReportRun& run, size_t run_idx, const std::string& kind, std::string* summary) {
  struct Cat {
    int layer;
    std::vector<const ReportUnit*> units;
    std::vector<double> sorted;
    int removed = 0;
    double thr = NAN;
  };
  std::map<int, Cat> cats;
  for (auto& u : run.units)
    if (u.kind == kind && u.step == 1) {
      Cat& c = cats[u.layer];
      c.layer = u.layer;
      c.units.push_back(&u);
    }
  double lo = INFINITY, hi = -INFINITY;
  size_t total = 0;
  int removed_total = 0;
  double global_thr = NAN;
  for (auto& [l, c] : cats) {
    for (auto* u : c.units) {
      c.sorted.push_back(u->score);
      lo = std::min(lo, u->score);
      hi = std::max(hi, u->score);
      if (u->removed) {
        c.removed++;
        c.thr = std::isnan(c.thr) ? u->score : std::max(c.thr, u->score);
        global_thr = std::isnan(global_thr) ? u->score : std::max(global_thr, u->score);
      }
    }
    std::sort(c.sorted.begin(), c.sorted.end());
    total += c.units.size();
    removed_total += c.removed;
  }
  // One threshold across layers when the ranking was global (or the units are model-wide).
  const bool global = run.summary.settings.global || kind == "layer" || kind == "hidden";
  const bool per_layer = kind != "layer" && kind != "hidden";
  bool strips = total <= size_t(doc.opt.max_points_per_chart);
  const double h = 330;
  Plot p{80, kW - 16, 40, h - 50};
  Scale y = value_scale(lo, hi, p.y1, p.y0, 20, lo >= 0 && lo <= 0.25 * hi);
  std::string ylabel = std::string("importance score (unitless") + (y.log ? ", log scale" : "") + ")";
  std::string scoring = scoring_of(run);
  std::string what = kind_title(kind);
  std::ostringstream desc;
  desc << "Distribution of the importance scores (" << scoring << ") of " << total << " " << what << " in " << cats.size()
       << (cats.size() == 1 ? " column" : " columns (one per layer)") << ": a box from the first to the third quartile with the median, whiskers from the minimum to the maximum"
       << (strips ? ", and every unit as a dot (filled: kept, ring: removed)" : "") << ". " << removed_total << " were removed. "
       << (global ? "The dashed line is the global threshold" : "The dashed line in each column is that layer's threshold")
       << ", the highest score among the removed units. ";
  for (auto& [l, c] : cats) {
    desc << (l < 0 ? std::string("all") : "layer " + std::to_string(l)) << ": " << c.units.size() << " units, median "
         << num(quantile(c.sorted, 0.5)) << ", " << c.removed << " removed";
    if (!global && c.removed) desc << " at or below " << num(c.thr);
    desc << "; ";
  }
  if (global && removed_total) desc << "global threshold " << num(global_thr) << ".";
  int id;
  std::ostringstream o;
  o << doc.svg_open("importance", "data-chart=\"importance\" data-kind=\"" + esc(kind) + "\" data-run=\"" + std::to_string(run_idx) +
                                      "\" data-columns=\"" + std::to_string(cats.size()) + "\" data-units=\"" +
                                      std::to_string(total) + "\" data-removed=\"" + std::to_string(removed_total) + "\"",
                    h, "Importance (" + scoring + ") of " + what + (per_layer ? " per layer" : "") + ", with the pruning threshold (" + run.label + ")",
                    desc.str(), &id);
  y_axis(o, y, p, ylabel);
  std::vector<std::string> labels;
  for (auto& [l, c] : cats) labels.push_back(l < 0 ? "all" : std::to_string(l));
  x_band_axis(o, p, labels, cats.size() == 1 && cats.begin()->first < 0 ? "whole model" : "layer (0-based index)");
  double band = (p.x1 - p.x0) / double(std::max<size_t>(cats.size(), 1));
  size_t i = 0;
  for (auto& [l, c] : cats) {
    double cx = p.x0 + band * (double(i) + 0.5);
    double half = std::min(band * 0.36, 40.0);
    o << "<g class=\"dist\" data-layer=\"" << l << "\" data-units=\"" << c.units.size() << "\" data-removed=\"" << c.removed << "\">";
    o << "<title>" << (l < 0 ? std::string("all") : "layer " + std::to_string(l)) << ": " << c.units.size() << " " << what << ", "
      << c.removed << " removed, median " << num(quantile(c.sorted, 0.5)) << ", min " << num(c.sorted.front()) << ", max "
      << num(c.sorted.back()) << "</title>";
    if (strips && c.units.size() <= size_t(doc.opt.max_points_per_layer)) {
      double r = c.units.size() > 200 ? 1.4 : c.units.size() > 40 ? 2.0 : 3.0;
      for (auto* u : c.units) {
        // Deterministic jitter from the unit index.
        uint32_t hsh = uint32_t(u->index) * 2654435761u;
        double jx = c.units.size() > 1 ? (double(hsh >> 8 & 0xffff) / 65535.0 - 0.5) * 2 * half : 0;
        double py = y(u->score);
        if (u->removed)
          o << "<circle class=\"pt-removed\" cx=\"" << c1(cx + jx) << "\" cy=\"" << c1(py) << "\" r=\"" << c1(r + 0.4) << "\"/>";
        else
          o << "<circle class=\"pt-kept\" cx=\"" << c1(cx + jx) << "\" cy=\"" << c1(py) << "\" r=\"" << c1(r) << "\"/>";
      }
    }
    double q1 = quantile(c.sorted, 0.25), q2 = quantile(c.sorted, 0.5), q3 = quantile(c.sorted, 0.75);
    double bh = std::min(band * 0.22, 18.0);
    o << "<g class=\"box\"><line x1=\"" << c1(cx) << "\" x2=\"" << c1(cx) << "\" y1=\"" << c1(y(c.sorted.front())) << "\" y2=\""
      << c1(y(q1)) << "\"/><line x1=\"" << c1(cx) << "\" x2=\"" << c1(cx) << "\" y1=\"" << c1(y(q3)) << "\" y2=\""
      << c1(y(c.sorted.back())) << "\"/>";
    o << "<rect x=\"" << c1(cx - bh) << "\" y=\"" << c1(y(q3)) << "\" width=\"" << c1(2 * bh) << "\" height=\"" << c1(y(q1) - y(q3))
      << "\"/><line class=\"median\" x1=\"" << c1(cx - bh) << "\" x2=\"" << c1(cx + bh) << "\" y1=\"" << c1(y(q2)) << "\" y2=\""
      << c1(y(q2)) << "\"/></g>";
    if (!global && c.removed)
      o << "<line class=\"threshold\" x1=\"" << c1(cx - band * 0.46) << "\" x2=\"" << c1(cx + band * 0.46) << "\" y1=\""
        << c1(y(c.thr)) << "\" y2=\"" << c1(y(c.thr)) << "\"><title>layer " << l << " threshold " << num(c.thr) << ": "
        << c.removed << " of " << c.units.size() << " removed</title></line>";
    o << "</g>";
    i++;
  }
  if (global && removed_total)
    o << "<line class=\"threshold global\" x1=\"" << c1(p.x0) << "\" x2=\"" << c1(p.x1) << "\" y1=\"" << c1(y(global_thr))
      << "\" y2=\"" << c1(y(global_thr)) << "\"><title>global threshold " << num(global_thr) << ": " << removed_total << " of "
      << total << " removed</title></line>";
  Legend lg(p.x0, 10);
  if (strips) {
    lg.item("<circle class=\"pt-kept\" cx=\"6\" cy=\"6\" r=\"4\"/>", "kept unit");
    lg.item("<circle class=\"pt-removed\" cx=\"6\" cy=\"6\" r=\"4\"/>", "removed unit");
  }
  lg.item("<g class=\"box\"><rect x=\"1\" y=\"1\" width=\"10\" height=\"10\"/></g>", "quartiles, median, min/max");
  lg.item("<line class=\"threshold\" x1=\"0\" x2=\"14\" y1=\"6\" y2=\"6\"/>",
          global ? "threshold (highest removed score)" : "per-layer threshold (highest removed score)");
  o << lg.str() << "</svg>";
  *summary = std::to_string(total) + " " + what + ", " + std::to_string(removed_total) + " removed" +
             (strips ? "" : " (too many units to draw each: boxes only)");
  return o.str();
}

struct SeriesPoint {
  double x, y;
  std::string tip;
};
struct Series {
  std::string name;
  std::vector<SeriesPoint> pts;
};

std::string marker(int shape, double x, double y, const std::string& cls) {
  std::ostringstream o;
  switch (shape % 4) {
    case 0: o << "<circle class=\"" << cls << "\" cx=\"" << c1(x) << "\" cy=\"" << c1(y) << "\" r=\"4.5\"/>"; break;
    case 1: o << "<rect class=\"" << cls << "\" x=\"" << c1(x - 4) << "\" y=\"" << c1(y - 4) << "\" width=\"8\" height=\"8\"/>"; break;
    case 2:
      o << "<path class=\"" << cls << "\" d=\"M" << c1(x) << " " << c1(y - 5.5) << "L" << c1(x + 5) << " " << c1(y + 3.5) << "L"
        << c1(x - 5) << " " << c1(y + 3.5) << "Z\"/>";
      break;
    default:
      o << "<path class=\"" << cls << "\" d=\"M" << c1(x) << " " << c1(y - 5.5) << "L" << c1(x + 5.5) << " " << c1(y) << "L" << c1(x)
        << " " << c1(y + 5.5) << "L" << c1(x - 5.5) << " " << c1(y) << "Z\"/>";
  }
  return o.str();
}

std::string series_class(size_t k) {  // s0..s5 (snprintf: GCC 12 warns falsely on "s" + to_string)
  char b[8];
  std::snprintf(b, sizeof b, "s%zu", k % 6);
  return b;
}

// Lines with markers: x = percent of parameters removed.
std::string line_chart(Doc& doc, const std::string& chart, const std::string& title, const std::string& ylabel,
                       const std::vector<Series>& series, double min_log_ratio, const std::string& unit_note) {
  const double h = 360;
  Plot p{80, kW - 16, 40 + 20.0 * double((series.size() + 3) / 4), h - 50};
  double xmax = 1, ylo = INFINITY, yhi = -INFINITY;
  for (auto& s : series)
    for (auto& pt : s.pts) {
      xmax = std::max(xmax, pt.x);
      ylo = std::min(ylo, pt.y);
      yhi = std::max(yhi, pt.y);
    }
  Scale x = nice_linear(0, xmax, p.x0, p.x1);
  Scale y = value_scale(ylo, yhi, p.y1, p.y0, min_log_ratio, false);
  std::ostringstream desc;
  desc << "Line chart, one line per series (" << series.size() << "): " << ylabel << " against the percentage of parameters removed"
       << (y.log ? " (logarithmic y axis)" : "") << ". " << unit_note;
  for (auto& s : series) {
    desc << " " << s.name << ":";
    for (auto& pt : s.pts) desc << " " << fixed(pt.x, 1) << "% \u2192 " << num(pt.y) << ";";
  }
  int id;
  std::ostringstream o;
  o << doc.svg_open("sweep", "data-chart=\"" + esc(chart) + "\" data-series=\"" + std::to_string(series.size()) + "\"", h, title,
                    desc.str(), &id);
  y_axis(o, y, p, ylabel + (y.log ? " (log scale)" : ""));
  x_linear_axis(o, x, p, "parameters removed (% of the unpruned model)");
  for (size_t k = 0; k < series.size(); k++) {
    auto& s = series[k];
    std::string cls = series_class(k);
    o << "<g class=\"series " << cls << "\" data-series=\"" << esc(s.name) << "\" data-points=\"" << s.pts.size() << "\"><title>"
      << esc(s.name) << "</title>";
    if (s.pts.size() > 1) {
      o << "<polyline class=\"line\" points=\"";
      for (size_t i = 0; i < s.pts.size(); i++) o << (i ? " " : "") << c1(x(s.pts[i].x)) << "," << c1(y(s.pts[i].y));
      o << "\"/>";
    }
    for (auto& pt : s.pts)
      o << "<g class=\"pt\"><title>" << esc(pt.tip) << "</title>" << marker(int(k), x(pt.x), y(pt.y), "mark") << "</g>";
    o << "</g>";
  }
  Legend lg(p.x0, 10);
  for (size_t k = 0; k < series.size(); k++) {
    if (k && k % 4 == 0) {
      lg.x = p.x0;
      lg.y += 20;
    }
    std::string cls = series_class(k);
    lg.item("<g class=\"series " + cls + "\"><line class=\"line\" x1=\"0\" x2=\"14\" y1=\"6\" y2=\"6\"/>" + marker(int(k), 7, 6, "mark") +
                "</g>",
            series[k].name);
  }
  o << lg.str() << "</svg>";
  return o.str();
}

// ---------------------------------------------------------------------------------------------
// Tables and sections

bool gqa_model(const ReportRun& r) {
  for (auto& l : r.layers)
    if (l.kv_before != l.heads_before) return true;
  return false;
}

std::string settings_line(const ReportRun& r) {
  std::ostringstream o;
  o << "strategy <b>" << esc(r.summary.settings.strategy) << "</b>";
  if (!r.summary.settings.importance.empty()) {
    o << ", importance <b>" << esc(r.summary.settings.importance);
    if (r.summary.settings.criterion != r.summary.settings.importance) o << " (" << esc(r.summary.settings.criterion) << ")";
    o << "</b>";
  }
  if (!r.summary.settings.reduction.empty()) o << ", group reduction " << esc(r.summary.settings.reduction);
  if (r.summary.settings.strategy == "block") {
    o << ", attention ratio " << num(r.summary.settings.attn_ratio) << " on layers " << esc(r.summary.settings.attn_layers) << ", MLP ratio " << num(r.summary.settings.mlp_ratio)
      << " on layers " << esc(r.summary.settings.mlp_layers);
  } else if (r.summary.settings.ratio > 0) {
    o << ", ratio " << num(r.summary.settings.ratio);
  } else if (r.summary.settings.strategy == "layer") {
    o << ", " << r.removed_units << " blocks removed";
  }
  if (r.summary.settings.strategy == "block") o << (r.summary.settings.global ? ", global ranking" : ", per-layer ranking");
  if (r.summary.settings.iterative_steps > 1) o << ", " << r.summary.settings.iterative_steps << " iterative steps";
  if (r.summary.settings.round_to > 1) o << ", MLP widths rounded to multiples of " << r.summary.settings.round_to;
  if (!r.summary.settings.gqa_unit.empty()) {
    bool gqa = false;
    for (auto& l : r.layers) gqa = gqa || l.kv_before != l.heads_before;
    if (gqa) o << ", GQA unit " << esc(r.summary.settings.gqa_unit);
  }
  if (!r.summary.settings.calib.empty()) o << ", calibration text <code>" << esc(r.summary.settings.calib) << "</code>";
  const PruneSettings& st = r.summary.settings;
  if (st.allocation != "uniform") o << ", " << esc(st.allocation) << " per-layer allocation";
  if (st.compensate != "none") {
    o << ", compensation " << esc(st.compensate);
    if (st.damping > 0) o << " (damping " << num(st.damping) << ")";
  }
  if (st.stat_samples > 0)
    o << ", activation statistics over " << st.stat_samples << " \u00d7 " << st.stat_seq_len << " tokens of <code>"
      << esc(st.stat_calib) << "</code>";
  return o.str();
}

std::string eval_table(const std::vector<ReportEvalRow>& rows, const ReportRun* run) {
  std::vector<std::string> ppl_cols;
  std::vector<std::pair<std::string, std::string>> task_cols;  // name, display
  std::map<std::string, std::string> metrics;
  bool any_avg = false;
  std::set<std::string> files;
  for (auto& r : rows) {
    for (auto& [n, v] : r.ppl)
      if (std::find(ppl_cols.begin(), ppl_cols.end(), n) == ppl_cols.end()) ppl_cols.push_back(n);
    for (auto& t : r.tasks) {
      bool seen = false;
      for (auto& c : task_cols) seen = seen || c.first == t.name;
      if (!seen) task_cols.push_back({t.name, t.display});
      metrics[t.display] = t.metric;
    }
    any_avg = any_avg || r.has_average;
    files.insert(r.file);
  }
  std::ostringstream o;
  o << "<table class=\"eval\"><caption>";
  if (!ppl_cols.empty()) o << "Perplexity (lower is better)";
  if (!task_cols.empty()) {
    o << (ppl_cols.empty() ? "" : "; ") << "zero-shot accuracy in percent (higher is better; metric: ";
    bool first = true;
    for (auto& [d, m] : metrics) {
      o << (first ? "" : ", ") << esc(d) << " " << esc(m);
      first = false;
    }
    o << "); Average = mean of the task columns, as in the LLM-Pruner tables";
  }
  o << ". From ";
  bool first = true;
  for (auto& f : files) {
    o << (first ? "" : ", ") << "<code>" << esc(f) << "</code>";
    first = false;
  }
  o << ".</caption><thead><tr><th scope=\"col\">model</th><th scope=\"col\">params</th>";
  for (auto& c : ppl_cols) o << "<th scope=\"col\" class=\"num\">" << esc(c) << " <span aria-label=\"lower is better\">\u2193</span></th>";
  for (auto& c : task_cols) o << "<th scope=\"col\" class=\"num\">" << esc(c.second) << "</th>";
  if (any_avg) o << "<th scope=\"col\" class=\"num\">Average</th>";
  o << "</tr></thead><tbody>";
  for (auto& r : rows) {
    std::string role;
    if (run && r.params == run->summary.params_after && run->summary.params_after != run->summary.params_before) role = "pruned";
    else if (run && r.params == run->summary.params_before) role = "unpruned";
    o << "<tr" << (role.empty() ? "" : " data-role=\"" + role + "\"") << "><th scope=\"row\" title=\"" << esc(r.model) << "\">"
      << esc(r.label) << (role.empty() ? "" : " <span class=\"muted\">(" + role + ")</span>") << "</th><td class=\"num\">"
      << (r.params ? count_str(double(r.params)) : "\u2013") << "</td>";
    for (auto& c : ppl_cols) {
      std::string v = "\u2013";
      for (auto& [n, x] : r.ppl)
        if (n == c) v = fixed(x, 2);
      o << "<td class=\"num\">" << v << "</td>";
    }
    for (auto& c : task_cols) {
      std::string v = "\u2013";
      for (auto& t : r.tasks)
        if (t.name == c.first) v = pct(t.score);
      o << "<td class=\"num\">" << v << "</td>";
    }
    if (any_avg) o << "<td class=\"num\">" << (r.has_average ? pct(r.average) : "\u2013") << "</td>";
    o << "</tr>";
  }
  o << "</tbody></table>\n";
  return o.str();
}

std::string layer_table(const ReportRun& r) {
  bool gqa = false;
  for (auto& l : r.layers) gqa = gqa || l.kv_before != l.heads_before;
  std::ostringstream o;
  o << "<details><summary>Per-layer numbers (" << r.layers.size() << " layers)</summary><table class=\"layers\"><thead><tr>"
    << "<th scope=\"col\">layer</th><th scope=\"col\" class=\"num\">heads before</th><th scope=\"col\" class=\"num\">heads after</th>";
  if (gqa) o << "<th scope=\"col\" class=\"num\">KV heads before</th><th scope=\"col\" class=\"num\">KV heads after</th>";
  o << "<th scope=\"col\" class=\"num\">MLP before</th><th scope=\"col\" class=\"num\">MLP after</th>"
    << "<th scope=\"col\" class=\"num\">attention ratio</th><th scope=\"col\" class=\"num\">MLP ratio</th><th scope=\"col\">note</th></tr></thead><tbody>";
  for (auto& l : r.layers) {
    o << "<tr><th scope=\"row\">" << l.layer << "</th><td class=\"num\">" << l.heads_before << "</td><td class=\"num\">" << l.heads_after
      << "</td>";
    if (gqa) o << "<td class=\"num\">" << l.kv_before << "</td><td class=\"num\">" << l.kv_after << "</td>";
    const double attn_ratio = l.heads_before ? 1.0 - double(l.heads_after) / l.heads_before : 0.0;
    const double mlp_ratio = l.mlp_before ? 1.0 - double(l.mlp_after) / l.mlp_before : 0.0;
    o << "<td class=\"num\">" << l.mlp_before << "</td><td class=\"num\">" << l.mlp_after << "</td><td class=\"num\">"
      << fixed(attn_ratio, 3) << "</td><td class=\"num\">" << fixed(mlp_ratio, 3) << "</td><td>" << (l.removed ? "block removed" : "")
      << "</td></tr>";
  }
  o << "</tbody></table></details>\n";
  return o.str();
}

// --compensate: each refitted projection's relative output error on the calibration set,
// before (the kept columns as they are) and after the refit.
std::string compensation_table(const ReportRun& r) {
  const PruneSummary& s = r.summary;
  std::ostringstream o;
  o << "<table class=\"compensation\"><caption>Compensation (" << esc(s.settings.compensate)
    << "): relative output error \u03a3\u2016y \u2212 y\u2032\u2016\u00b2 / \u03a3\u2016y\u2016\u00b2 of each pruned projection"
    << (s.compensation_seconds ? ", " + fixed(*s.compensation_seconds, 1) + " s" : "") << "</caption><thead><tr>"
    << "<th scope=\"col\">layer</th><th scope=\"col\" class=\"num\">o_proj plain</th><th scope=\"col\" class=\"num\">o_proj "
       "compensated</th><th scope=\"col\" class=\"num\">down_proj plain</th><th scope=\"col\" class=\"num\">down_proj "
       "compensated</th></tr></thead><tbody>";
  auto cells = [&](const ModuleError& m) {
    if (!m.pruned) return std::string("<td class=\"num\">\u2014</td><td class=\"num\">\u2014</td>");
    return "<td class=\"num\">" + fixed(m.plain, 5) + "</td><td class=\"num\">" + fixed(m.compensated, 5) + "</td>";
  };
  for (const LayerCompensationErrors& c : s.compensation)
    o << "<tr><th scope=\"row\">" << c.layer << "</th>" << cells(c.o_proj) << cells(c.down_proj) << "</tr>";
  o << "</tbody></table>\n";
  return o.str();
}

std::string roles_table(const ReportRun& r) {
  std::ostringstream o;
  o << "<table class=\"roles\"><caption>Parameters by role</caption><thead><tr><th scope=\"col\">role</th><th scope=\"col\" "
       "class=\"num\">before</th><th scope=\"col\" class=\"num\">after</th><th scope=\"col\" class=\"num\">removed</th></tr></thead><tbody>";
  auto row = [&](const std::string& name, int64_t b, int64_t a, bool total) {
    o << "<tr" << (total ? " class=\"total\"" : "") << "><th scope=\"row\">" << esc(name) << "</th><td class=\"num\">" << thousands(b)
      << "</td><td class=\"num\">" << thousands(a) << "</td><td class=\"num\">" << (b ? pct(1.0 - double(a) / double(b)) + "%" : "\u2013")
      << "</td></tr>";
  };
  for (auto& [name, ba] : r.params_by_role) row(name, ba.first, ba.second, false);
  row("total", r.summary.params_before, r.summary.params_after, true);
  o << "</tbody></table>\n";
  return o.str();
}

const char* kCss = R"CSS(
:root{color-scheme:light dark;--bg:#ffffff;--fg:#1c1d21;--muted:#5c6168;--grid:#e3e5e8;--axis:#70757c;--border:#d5d8dc;
--stripe:#f5f6f8;--kept:#0072b2;--removed:#d55e00;--before:#b9c0c8;--after:#0072b2;--thr:#c4006a;--box:#1c1d21;
--s0:#0072b2;--s1:#d55e00;--s2:#009e73;--s3:#cc79a7;--s4:#b08400;--s5:#56b4e9}
@media (prefers-color-scheme:dark){:root{--bg:#14161a;--fg:#e7e8ea;--muted:#a3a8b0;--grid:#2b2f35;--axis:#8b919a;--border:#353a41;
--stripe:#1b1e23;--kept:#56b4e9;--removed:#f0a33a;--before:#4d5561;--after:#56b4e9;--thr:#ff6eb4;--box:#e7e8ea;
--s0:#56b4e9;--s1:#f0a33a;--s2:#3cc99c;--s3:#e7a3cc;--s4:#f0e442;--s5:#9fb8ff;--dot-opacity:.85}}
@media print{:root{color-scheme:light;--bg:#ffffff;--fg:#000000;--muted:#444444;--grid:#dddddd;--axis:#555555;--border:#bbbbbb;
--stripe:#f3f3f3;--dot-opacity:.6;--kept:#0072b2;--removed:#d55e00;--before:#b9c0c8;--after:#0072b2;--thr:#c4006a;--box:#000000;
--s0:#0072b2;--s1:#d55e00;--s2:#009e73;--s3:#cc79a7;--s4:#b08400;--s5:#56b4e9}
body{max-width:none;margin:0;padding:0;font-size:11pt}nav,.noprint{display:none}
figure,table,tr,.card{break-inside:avoid}section.run{break-before:page}h2,h3{break-after:avoid}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
@page{margin:14mm}
html{background:var(--bg)}
body{background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
max-width:1000px;margin:0 auto;padding:12px 24px 40px}
h1{font-size:1.6em;margin:.4em 0 .1em}h2{font-size:1.3em;margin:1.6em 0 .4em;border-bottom:1px solid var(--border);padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .3em}
a{color:var(--kept)}code{font-size:.92em;overflow-wrap:anywhere}.muted{color:var(--muted)}.note{color:var(--muted);font-size:.93em}
nav ol{margin:.2em 0;padding-left:1.4em;columns:2}
figure{margin:.8em 0 1.2em}figcaption{color:var(--muted);font-size:.9em;margin-top:.2em}
svg.chart{display:block;width:100%;height:auto;max-width:960px;overflow:visible}
svg.chart text{fill:var(--fg);font-size:12px;font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
svg.chart text.tick{fill:var(--muted);font-size:11px}svg.chart text.axis-label{font-size:12.5px}
svg.chart text.val{fill:var(--muted);font-size:10.5px}
.grid{stroke:var(--grid);stroke-width:1}.axis{stroke:var(--axis);stroke-width:1}
.kept{fill:var(--kept)}.hatch-bg{fill:var(--removed)}.hatch-line{stroke:var(--bg);stroke-width:2.2;stroke-opacity:.55}
rect.removed{stroke:var(--removed);stroke-width:.8}
.before{fill:var(--before)}.after{fill:var(--after)}
.pt-kept{fill:var(--kept);fill-opacity:var(--dot-opacity,.6)}.pt-removed{fill:none;stroke:var(--removed);stroke-width:1.3}
.box rect{fill:none;stroke:var(--box);stroke-width:1.2}.box line{stroke:var(--box);stroke-width:1.2}.box line.median{stroke-width:2.4}
.threshold{stroke:var(--thr);stroke-width:2.2;stroke-dasharray:7 3}
.series .line{fill:none;stroke-width:2.2}.series .mark{stroke:var(--bg);stroke-width:1.2}
.s0 .line{stroke:var(--s0)}.s0 .mark{fill:var(--s0)}.s1 .line{stroke:var(--s1)}.s1 .mark{fill:var(--s1)}
.s2 .line{stroke:var(--s2)}.s2 .mark{fill:var(--s2)}.s3 .line{stroke:var(--s3)}.s3 .mark{fill:var(--s3)}
.s4 .line{stroke:var(--s4)}.s4 .mark{fill:var(--s4)}.s5 .line{stroke:var(--s5)}.s5 .mark{fill:var(--s5)}
table{border-collapse:collapse;margin:.6em 0 1em;font-variant-numeric:tabular-nums;font-size:.93em}
caption{caption-side:top;text-align:left;color:var(--muted);font-size:.92em;padding-bottom:.3em}
th,td{padding:3px 10px;border-bottom:1px solid var(--border);text-align:left}
thead th{border-bottom:2px solid var(--axis)}tbody tr:nth-child(even){background:var(--stripe)}
.num{text-align:right}tr.total th,tr.total td{font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:.6em 0}
.card{border:1px solid var(--border);border-radius:6px;padding:6px 12px;min-width:140px}
.card .k{color:var(--muted);font-size:.85em}.card .v{font-size:1.2em;font-weight:600}
details{margin:.4em 0 1em}summary{cursor:pointer;color:var(--muted)}
)CSS";

std::string series_key(const ReportRun& r, const std::vector<ReportRun>& runs) {
  auto varies = [&](auto field) {
    for (auto& o : runs)
      if (field(o) != field(runs.front())) return true;
    return false;
  };
  std::string k = r.summary.settings.criterion.empty() ? r.summary.settings.importance : r.summary.settings.criterion;
  if (!r.summary.settings.importance.empty() && r.summary.settings.importance != r.summary.settings.criterion && r.summary.settings.importance != "taylor") k = r.summary.settings.importance + " " + k;
  if (varies([](const ReportRun& x) { return x.summary.settings.strategy; })) k += ", " + r.summary.settings.strategy;
  if (varies([](const ReportRun& x) { return x.summary.settings.reduction; })) k += ", " + r.summary.settings.reduction;
  if (varies([](const ReportRun& x) { return x.summary.settings.global; })) k += r.summary.settings.global ? ", global" : ", local";
  if (varies([](const ReportRun& x) { return x.summary.settings.iterative_steps; })) k += ", " + std::to_string(r.summary.settings.iterative_steps) + " steps";
  if (varies([](const ReportRun& x) { return x.summary.settings.gqa_unit; })) k += ", " + r.summary.settings.gqa_unit;
  if (varies([](const ReportRun& x) { return x.summary.source_model; })) k += ", " + fs::path(r.summary.source_model).filename().string();
  return k;
}

const ReportEvalRow* find_row(const ReportRun& r, int64_t params) {
  for (auto& e : r.evals)
    if (e.params == params) return &e;
  return nullptr;
}

void sweep_section(Doc& doc, const std::vector<ReportRun>& runs) {
  doc.body << "<section id=\"sweep\"><h2>Sweep: quality against parameters removed</h2>\n";
  doc.toc.push_back({"sweep", "Sweep: quality against parameters removed"});
  // Series by criterion (plus whatever else differs between the runs); points sorted by x.
  std::vector<std::string> keys;
  for (auto& r : runs) {
    std::string k = series_key(r, runs);
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  std::vector<std::string> datasets;
  bool any_tasks = false;
  for (auto& r : runs)
    if (auto* e = find_row(r, r.summary.params_after)) {
      for (auto& [n, v] : e->ppl)
        if (std::find(datasets.begin(), datasets.end(), n) == datasets.end()) datasets.push_back(n);
      any_tasks = any_tasks || e->has_average;
    }
  auto build = [&](auto value) {  // value(const ReportEvalRow&, double*) -> bool
    std::vector<Series> out;
    for (auto& k : keys) {
      Series s{k, {}};
      bool base_added = false;
      for (auto& r : runs) {
        if (series_key(r, runs) != k) continue;
        double v;
        if (!base_added)
          if (auto* b = find_row(r, r.summary.params_before); b && value(*b, &v)) {
            s.pts.push_back({0, v, "unpruned (" + b->label + "): " + num(v)});
            base_added = true;
          }
        if (auto* e = find_row(r, r.summary.params_after); e && value(*e, &v))
          s.pts.push_back({100 * r.summary.fraction_removed(), v, r.label + ": " + fixed(100 * r.summary.fraction_removed(), 1) + "% removed, " + num(v)});
      }
      std::stable_sort(s.pts.begin(), s.pts.end(), [](auto& a, auto& b) { return a.x < b.x; });
      if (!s.pts.empty()) out.push_back(std::move(s));
    }
    return out;
  };
  int charts = 0;
  for (auto& d : datasets) {
    auto series = build([&](const ReportEvalRow& e, double* v) {
      for (auto& [n, x] : e.ppl)
        if (n == d) {
          *v = x;
          return true;
        }
      return false;
    });
    if (series.empty()) continue;
    std::string title = "Perplexity on " + d + " against parameters removed, one line per criterion";
    doc.figure(line_chart(doc, "sweep-ppl", title, "perplexity on " + d, series, 3,
                          "Perplexity is unitless; lower is better. The point at 0% is the unpruned model."),
               esc(title) + ". Lower is better; points at 0% are the unpruned model when its evaluation is saved in a run.");
    charts++;
  }
  if (any_tasks) {
    auto series = build([&](const ReportEvalRow& e, double* v) {
      if (!e.has_average) return false;
      *v = 100 * e.average;
      return true;
    });
    std::string title = "Zero-shot average accuracy against parameters removed, one line per criterion";
    doc.figure(line_chart(doc, "sweep-zeroshot", title, "zero-shot average accuracy (%)", series, 1e300,
                          "Accuracy in percent, mean of the task columns; higher is better."),
               esc(title) + ". Higher is better.");
    charts++;
  }
  if (charts) {  // the plotted numbers as a table
    doc.body << "<details><summary>Sweep numbers</summary><table class=\"sweep\"><thead><tr><th scope=\"col\">series</th>"
                "<th scope=\"col\">run</th><th scope=\"col\" class=\"num\">parameters removed</th>";
    for (auto& d : datasets) doc.body << "<th scope=\"col\" class=\"num\">" << esc(d) << " perplexity</th>";
    if (any_tasks) doc.body << "<th scope=\"col\" class=\"num\">zero-shot average</th>";
    doc.body << "</tr></thead><tbody>";
    for (auto& k : keys)
      for (auto& r : runs) {
        const ReportEvalRow* e = find_row(r, r.summary.params_after);
        if (series_key(r, runs) != k || !e) continue;
        doc.body << "<tr><td>" << esc(k) << "</td><th scope=\"row\">" << esc(r.label) << "</th><td class=\"num\">"
                 << pct(r.summary.fraction_removed()) << "%</td>";
        for (auto& d : datasets) {
          std::string v = "\u2013";
          for (auto& [n, x] : e->ppl)
            if (n == d) v = fixed(x, 2);
          doc.body << "<td class=\"num\">" << v << "</td>";
        }
        if (any_tasks) doc.body << "<td class=\"num\">" << (e->has_average ? pct(e->average) + "%" : "\u2013") << "</td>";
        doc.body << "</tr>";
      }
    doc.body << "</tbody></table></details>\n";
  }
  if (!charts)
    doc.body << "<p class=\"note\">No evaluation of the pruned models was found (a row whose parameter count equals the run's "
                "<code>params_after</code> in <code>RUN_DIR/eval*.json</code>): save <code>llmprune eval RUN_DIR --ppl ... --json &gt; "
                "RUN_DIR/eval.json</code> in each run to plot perplexity against parameters removed.</p>\n";
  doc.body << "</section>\n";
}

void summary_section(Doc& doc, const std::vector<ReportRun>& runs) {
  doc.body << "<section id=\"summary\"><h2>Runs</h2>\n<table class=\"summary\"><thead><tr><th scope=\"col\">run</th>"
              "<th scope=\"col\">strategy</th><th scope=\"col\">importance</th><th scope=\"col\" class=\"num\">ratio</th>"
              "<th scope=\"col\" class=\"num\">params before</th><th scope=\"col\" class=\"num\">params after</th>"
              "<th scope=\"col\" class=\"num\">removed</th><th scope=\"col\" class=\"num\">calib loss</th>"
              "<th scope=\"col\" class=\"num\">time</th></tr></thead><tbody>";
  doc.toc.push_back({"summary", "Runs"});
  for (size_t i = 0; i < runs.size(); i++) {
    auto& r = runs[i];
    std::string ratio = r.summary.settings.strategy == "block" && r.summary.settings.attn_ratio != r.summary.settings.mlp_ratio ? num(r.summary.settings.attn_ratio) + " / " + num(r.summary.settings.mlp_ratio)
                        : r.summary.settings.ratio > 0                                       ? num(r.summary.settings.ratio)
                                                                            : "\u2013";
    doc.body << "<tr><th scope=\"row\"><a href=\"#run-" << i << "\">" << esc(r.label) << "</a></th><td>" << esc(r.summary.settings.strategy) << "</td><td>"
             << esc(r.summary.settings.importance == r.summary.settings.criterion || r.summary.settings.importance.empty() ? r.summary.settings.criterion : r.summary.settings.importance + " " + r.summary.settings.criterion)
             << "</td><td class=\"num\">" << ratio << "</td><td class=\"num\">" << count_str(double(r.summary.params_before))
             << "</td><td class=\"num\">" << count_str(double(r.summary.params_after)) << "</td><td class=\"num\">"
             << pct(r.summary.fraction_removed()) << "%</td><td class=\"num\">" << (r.summary.calib_loss ? fixed(r.summary.calib_loss, 4) : "\u2013")
             << "</td><td class=\"num\">" << fixed(r.summary.seconds, 1) << " s</td></tr>";
  }
  doc.body << "</tbody></table></section>\n";
}

void run_section(Doc& doc, const ReportRun& r, size_t idx) {
  std::string sid = "run-" + std::to_string(idx);
  doc.toc.push_back({sid, "Run " + r.label});
  doc.body << "<section class=\"run\" id=\"" << sid << "\" data-run=\"" << idx << "\"><h2>Run <code>" << esc(r.label) << "</code></h2>\n";
  doc.body << "<p><code>" << esc(r.dir.string()) << "</code>";
  if (!r.summary.source_model.empty()) doc.body << " pruned from <code>" << esc(r.summary.source_model) << "</code>";
  doc.body << ": " << settings_line(r) << ".</p>\n";
  doc.body << "<div class=\"cards\">"
           << "<div class=\"card\"><div class=\"k\">parameters</div><div class=\"v\">" << count_str(double(r.summary.params_before)) << " \u2192 "
           << count_str(double(r.summary.params_after)) << "</div></div>"
           << "<div class=\"card\"><div class=\"k\">removed</div><div class=\"v\">" << pct(r.summary.fraction_removed()) << "%</div></div>"
           << "<div class=\"card\"><div class=\"k\">units removed</div><div class=\"v\">" << r.removed_units << "</div></div>";
  if (r.summary.hidden_before)
    doc.body << "<div class=\"card\"><div class=\"k\">hidden width</div><div class=\"v\">" << r.summary.hidden_before
             << (r.summary.hidden_after != r.summary.hidden_before ? " \u2192 " + std::to_string(r.summary.hidden_after) : "") << "</div></div>";
  if (r.summary.calib_loss) doc.body << "<div class=\"card\"><div class=\"k\">calibration loss</div><div class=\"v\">" << fixed(r.summary.calib_loss, 4) << "</div></div>";
  doc.body << "<div class=\"card\"><div class=\"k\">time, peak memory</div><div class=\"v\">" << fixed(r.summary.seconds, 1) << " s, "
           << fixed(double(r.summary.peak_rss_bytes) / (1 << 20), 0) << " MiB</div></div></div>\n";
  for (auto& n : r.notes) doc.body << "<p class=\"note\">" << esc(n) << "</p>\n";

  doc.body << "<h3>Structure per layer</h3>\n";
  doc.figure(layer_bars_chart(doc, r, idx, true),
             "Attention heads per layer: kept (solid) and removed (hatched). Hover a bar for its numbers.");
  doc.figure(layer_bars_chart(doc, r, idx, false), "MLP width (intermediate channels) per layer: kept (solid) and removed (hatched).");
  doc.body << layer_table(r);
  if (!r.summary.compensation.empty()) {
    doc.body << "<h3>Compensation</h3>\n";
    doc.body << compensation_table(r);
  }

  if (r.has_importance) {
    std::vector<std::string> kinds;
    for (auto& u : r.units)
      if (std::find(kinds.begin(), kinds.end(), u.kind) == kinds.end()) kinds.push_back(u.kind);
    std::sort(kinds.begin(), kinds.end(), [](auto& a, auto& b) { return kind_order(a) < kind_order(b); });
    doc.body << "<h3>Group importance</h3>\n";
    if (r.summary.settings.iterative_steps > 1)
      doc.body << "<p class=\"note\">Scores of step 1 of " << r.summary.settings.iterative_steps
               << " (the unpruned model); later steps re-score the pruned model and are in importance.json.</p>\n";
    for (auto& k : kinds) {
      std::string summary;
      std::string svg = importance_chart(doc, r, idx, k, &summary);
      doc.figure(svg, "Importance of " + esc(std::string(kind_title(k))) + (k == "layer" || k == "hidden" ? "" : " per layer") + ", scored by " + esc(scoring_of(r)) + " (" + esc(summary) +
                          "). Units at or below the dashed threshold were removed" +
                          (r.summary.settings.global || k == "layer" || k == "hidden" ? " (global ranking)." : " (per-layer ranking).") +
                          (k == "head" && r.summary.settings.gqa_unit == "query" && gqa_model(r)
                               ? " With --gqa-unit query, heads are removed evenly per KV group, so some kept heads can score below the line."
                               : ""));
    }
  }

  doc.body << "<h3>Parameters by role</h3>\n";
  if (!r.params_by_role.empty()) doc.figure(roles_chart(doc, r, idx), "Parameters by role before and after pruning.");
  doc.body << roles_table(r);

  doc.body << "<h3>Evaluation</h3>\n";
  if (r.evals.empty())
    doc.body << "<p class=\"note\">No <code>eval*.json</code> in the run directory. Save one with <code>llmprune eval base=MODEL "
                "--compare pruned="
             << esc(r.dir.string()) << " --ppl ... --tasks ... --json &gt; " << esc((r.dir / "eval.json").string())
             << "</code>.</p>\n";
  else
    doc.body << eval_table(r.evals, &r);
  doc.body << "</section>\n";
}

}  // namespace

std::string render_report(const std::vector<ReportRun>& runs, const ReportOptions& opt) {
  Doc doc(opt);
  summary_section(doc, runs);
  if (runs.size() > 1) sweep_section(doc, runs);
  for (size_t i = 0; i < runs.size(); i++) run_section(doc, runs[i], i);

  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       << "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n"
       << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light dark\">\n"
       << "<meta name=\"generator\" content=\"llmprune " << LLMPRUNE_VERSION << "\">\n<title>" << esc(opt.title) << "</title>\n<style>"
       << kCss << "</style>\n</head>\n<body>\n<header><h1>" << esc(opt.title) << "</h1><p class=\"muted\">" << runs.size()
       << (runs.size() == 1 ? " run" : " runs") << ", generated by llmprune " << LLMPRUNE_VERSION
       << ". Charts are inline SVG with text descriptions; colours follow the system's light or dark theme.</p></header>\n";
  html << "<nav aria-label=\"Contents\"><ol>";
  for (auto& [id, t] : doc.toc) html << "<li><a href=\"#" << id << "\">" << esc(t) << "</a></li>";
  html << "</ol></nav>\n<main>\n" << doc.body.str() << "</main>\n";
  html << "<footer><p class=\"note\">Thresholds: the dashed line marks the highest importance score among the removed units "
          "(per layer for per-layer ranking, one line for global ranking); units at or below it were removed. Parameters "
          "removed are counted over the whole model (embeddings included). See docs/report.md.</p></footer>\n</body>\n</html>\n";
  return html.str();
}

size_t write_report(const std::vector<std::string>& run_specs, const fs::path& out, const ReportOptions& opt) {
  if (run_specs.empty()) throw UserError("no run directories given");
  std::vector<ReportRun> runs;
  for (auto& s : run_specs) runs.push_back(load_report_run(s));
  std::string html = render_report(runs, opt);
  atomic_write_file(out, html);
  return html.size();
}

}  // namespace llmprune
