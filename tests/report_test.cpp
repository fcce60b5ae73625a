// llmprune report: the HTML's structure on synthetic runs (bars per layer, dots per unit, the
// threshold, one line per criterion, tables, escaping, accessibility, errors), the CLI on a real
// fixture prune, and the page rendered by headless Chromium (no console errors, expected SVG
// element counts in the live DOM, a screenshot).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "report/report.h"
#include "test_util.h"

namespace llmprune {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

void write(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) n++;
  return n;
}
// The whole <svg ...>...</svg> element whose opening tag contains `attr`.
std::string svg_with(const std::string& html, const std::string& attr, size_t nth = 0) {
  size_t from = 0;
  for (;;) {
    size_t p = html.find("<svg ", from);
    if (p == std::string::npos) return "";
    size_t gt = html.find('>', p);
    size_t end = html.find("</svg>", p);
    if (html.substr(p, gt - p).find(attr) != std::string::npos && nth-- == 0) return html.substr(p, end + 6 - p);
    from = end;
  }
}
// The element <g class="CLS" ...> ... up to the next one (or the legend, or the end of the svg).
std::vector<std::string> groups(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  std::string open = "<g class=\"" + cls + "\"";
  for (size_t p = svg.find(open); p != std::string::npos;) {
    size_t q = svg.find(open, p + 1);
    size_t end = std::min(q, svg.find("<g class=\"legend\"", p));
    out.push_back(svg.substr(p, (end == std::string::npos ? svg.size() : end) - p));
    p = q;
  }
  return out;
}

// A synthetic run: `heads_after`/`mlp_after` per layer (8 heads, 16 MLP channels before); each
// layer's units score index+1 (+ 100*layer for spread), the lowest removed; optional eval rows.
struct Synth {
  std::string criterion = "element1", importance = "taylor";
  std::vector<int> heads_after = {8, 6, 6, 8}, mlp_after = {16, 12, 12, 16};
  bool global = false;
  int64_t params_before = 100000, params_after = 80000;
  json evals;  // written to eval.json when not null
};

fs::path make_run(const fs::path& dir, const Synth& s) {
  fs::create_directories(dir);
  json removed = json::array(), imp = json::array(), layers = json::array();
  for (size_t l = 0; l < s.heads_after.size(); l++) {
    int L = int(l);
    layers.push_back({{"layer", L}, {"heads_before", 8}, {"heads_after", s.heads_after[l]}, {"kv_heads_before", 8},
                      {"kv_heads_after", s.heads_after[l]}, {"mlp_before", 16}, {"mlp_after", s.mlp_after[l]}});
    for (int i = 0; i < 8; i++) {
      json u = {{"layer", L}, {"kind", "head"}, {"index", i}, {"score", 0.5 + i + 100.0 * L}};
      imp.push_back(u);
      if (i < 8 - s.heads_after[l]) removed.push_back(u);
    }
    for (int i = 0; i < 16; i++) {
      json u = {{"layer", L}, {"kind", "mlp"}, {"index", i}, {"score", 0.25 * (i + 1) + 10.0 * L}};
      imp.push_back(u);
      if (i < 16 - s.mlp_after[l]) removed.push_back(u);
    }
  }
  json pj = {{"llmprune_version", "test"},
             {"source_model", "models/base"},
             {"settings",
              {{"strategy", "block"}, {"importance", s.importance}, {"taylor", "element1"}, {"criterion", s.criterion},
               {"group_reduction", "sum"}, {"attn_ratio", 0.25}, {"mlp_ratio", 0.25}, {"ratio", 0.25}, {"attn_layers", "1:3"},
               {"mlp_layers", "1:3"}, {"global", s.global}, {"iterative_steps", 1}, {"round_to", 1}, {"gqa_unit", "kv-group"},
               {"calib", "calib.txt"}, {"calib_samples", 10}, {"calib_seq_len", 64}, {"calib_sampling", "random"}, {"seed", 0}}},
             {"removed", removed},
             {"layers", layers},
             {"hidden_before", 64},
             {"hidden_after", 64},
             {"params_before", s.params_before},
             {"params_after", s.params_after},
             {"fraction_removed", 1.0 - double(s.params_after) / double(s.params_before)},
             {"params_by_role_before", {{"embed", 40000}, {"lm_head", 40000}, {"attention", 8000}, {"mlp", 11000}, {"norms", 1000}}},
             {"params_by_role_after", {{"embed", 40000}, {"lm_head", 40000}, {"attention", 6000}, {"mlp", 8000}, {"norms", 1000}}},
             {"calib_loss", 3.5},
             {"seconds", 1.25},
             {"peak_rss_bytes", 1 << 26}};
  write(dir / "pruning.json", pj.dump(2));
  write(dir / "importance.json", imp.dump(1));
  if (!s.evals.is_null()) write(dir / "eval.json", s.evals.dump(2));
  return dir;
}

json eval_row(const std::string& label, int64_t params, double ppl, double cloze, double piqa) {
  return {{"model", "/x/" + label},
          {"label", label},
          {"params", params},
          {"ppl", {{"kjv", {{"ppl", ppl}, {"file", "kjv.test.txt"}}}}},
          {"tasks",
           {{"kjv_cloze", {{"display", "KJV-cloze"}, {"metric", "acc"}, {"score", cloze}}},
            {"piqa", {{"display", "PIQA"}, {"metric", "acc"}, {"score", piqa}}}}},
          {"zero_shot_average", (cloze + piqa) / 2}};
}

std::string render_dirs(const std::vector<fs::path>& dirs, ReportOptions o = {}) {
  std::vector<ReportRun> runs;
  for (auto& d : dirs) runs.push_back(load_report_run(d.string()));
  return render_report(runs, o);
}

TEST(Report, LayerBarsOneBarPerLayerKeptAndRemoved) {
  auto dir = make_run(test::temp_dir("run") / "r", Synth{});
  std::string html = render_dirs({dir});
  for (std::string chart : {"heads", "mlp"}) {
    SCOPED_TRACE(chart);
    std::string svg = svg_with(html, "data-chart=\"" + chart + "\"");
    ASSERT_FALSE(svg.empty());
    EXPECT_NE(svg.find("data-layers=\"4\""), std::string::npos);
    auto bars = groups(svg, "bar");
    ASSERT_EQ(bars.size(), 4u);
    std::vector<int> after = chart == "heads" ? std::vector<int>{8, 6, 6, 8} : std::vector<int>{16, 12, 12, 16};
    int before = chart == "heads" ? 8 : 16;
    for (size_t l = 0; l < 4; l++) {
      EXPECT_NE(bars[l].find("data-layer=\"" + std::to_string(l) + "\" data-before=\"" + std::to_string(before) +
                             "\" data-after=\"" + std::to_string(after[l]) + "\""),
                std::string::npos)
          << bars[l];
      EXPECT_EQ(count(bars[l], "<rect class=\"kept\""), 1u);
      EXPECT_EQ(count(bars[l], "<rect class=\"removed\""), 1u);
      // The removed part's height is zero exactly where nothing was removed.
      std::smatch m;
      std::string rem = bars[l].substr(bars[l].find("<rect class=\"removed\""));
      ASSERT_TRUE(std::regex_search(rem, m, std::regex("height=\"([0-9.]+)\"")));
      EXPECT_EQ(std::stod(m[1]) == 0, after[l] == before) << "layer " << l;
    }
    // Axis labels with units, title and desc.
    EXPECT_NE(svg.find(chart == "heads" ? "attention heads (count)" : "MLP width (channels)"), std::string::npos);
    EXPECT_NE(svg.find("layer (0-based index)"), std::string::npos);
  }
}

TEST(Report, ImportanceStripDotsPerUnitAndLocalThresholds) {
  auto dir = make_run(test::temp_dir("run") / "r", Synth{});
  std::string html = render_dirs({dir});
  std::string svg = svg_with(html, "data-kind=\"head\"");
  ASSERT_FALSE(svg.empty());
  auto cols = groups(svg, "dist");
  ASSERT_EQ(cols.size(), 4u);  // one column per layer
  for (size_t l = 0; l < 4; l++) {
    size_t removed = l == 1 || l == 2 ? 2 : 0;
    EXPECT_EQ(count(cols[l], "class=\"pt-kept\"") + count(cols[l], "class=\"pt-removed\""), 8u);
    EXPECT_EQ(count(cols[l], "class=\"pt-removed\""), removed);
    EXPECT_EQ(count(cols[l], "class=\"threshold\""), removed ? 1u : 0u);
  }
  // The threshold is the highest removed score: layer 1 removed indices 0,1 -> 1.5 + 100.
  EXPECT_NE(cols[1].find("layer 1 threshold 101.5: 2 of 8 removed"), std::string::npos) << cols[1];
  std::string mlp = svg_with(html, "data-kind=\"mlp\"");
  EXPECT_NE(mlp.find("data-units=\"64\" data-removed=\"8\""), std::string::npos);
  EXPECT_NE(svg.find("importance score (unitless"), std::string::npos);
  EXPECT_NE(svg.find("Importance (taylor element1, group reduction sum) of attention heads per layer"), std::string::npos);
}

TEST(Report, GlobalRankingDrawsOneThreshold) {
  Synth s;
  s.global = true;
  auto dir = make_run(test::temp_dir("run") / "r", s);
  std::string svg = svg_with(render_dirs({dir}), "data-kind=\"head\"");
  EXPECT_EQ(count(svg, "<line class=\"threshold global\""), 1u);
  EXPECT_EQ(count(svg, "<line class=\"threshold\" x1"), 1u);  // the legend's sample only
  EXPECT_NE(svg.find("global threshold 201.5"), std::string::npos);
}

TEST(Report, ManyUnitsDrawBoxesOnly) {
  auto dir = make_run(test::temp_dir("run") / "r", Synth{});
  ReportOptions o;
  o.max_points_per_chart = 10;
  std::string svg = svg_with(render_dirs({dir}, o), "data-kind=\"mlp\"");
  EXPECT_EQ(count(svg, "<circle class=\"pt-"), 0u);
  EXPECT_EQ(count(svg, "<g class=\"box\"><line"), 4u);
  EXPECT_EQ(count(svg, "class=\"threshold\""), 2u + 1u);  // two pruned layers + legend
}

TEST(Report, RolesAndEvalTable) {
  Synth s;
  s.evals = {{"models", {eval_row("base", 100000, 26.53, 0.6733, 0.5201), eval_row("pruned", 80000, 31.204, 0.61, 0.5)}}};
  auto dir = make_run(test::temp_dir("run") / "r", s);
  std::string html = render_dirs({dir});
  std::string roles = svg_with(html, "data-chart=\"roles\"");
  EXPECT_NE(roles.find("data-roles=\"5\""), std::string::npos);
  EXPECT_EQ(groups(roles, "role").size(), 5u);
  EXPECT_EQ(count(roles, "<rect class=\"before\" x"), 5u);
  EXPECT_NE(roles.find("parameters (count)"), std::string::npos);
  // Evaluation table: both models, perplexity, tasks in percent, the average.
  size_t t = html.find("<table class=\"eval\">");
  ASSERT_NE(t, std::string::npos);
  std::string table = html.substr(t, html.find("</table>", t) - t);
  EXPECT_EQ(count(table, "<tr"), 3u);
  EXPECT_NE(table.find("KJV-cloze"), std::string::npos);
  EXPECT_NE(table.find("Average"), std::string::npos);
  EXPECT_NE(table.find("<td class=\"num\">26.53</td>"), std::string::npos);
  EXPECT_NE(table.find("<td class=\"num\">31.20</td>"), std::string::npos);
  EXPECT_NE(table.find("<td class=\"num\">67.33</td>"), std::string::npos);
  EXPECT_NE(table.find("<td class=\"num\">59.67</td>"), std::string::npos);  // (67.33 + 52.01) / 2
  EXPECT_NE(table.find("data-role=\"pruned\""), std::string::npos);
  EXPECT_NE(table.find("data-role=\"unpruned\""), std::string::npos);
  // One run: no sweep.
  EXPECT_EQ(html.find("id=\"sweep\""), std::string::npos);
}

TEST(Report, SweepOneLinePerCriterion) {
  auto root = test::temp_dir("sweep");
  std::vector<fs::path> dirs;
  int k = 0;
  for (std::string crit : {"element1", "l2"})
    for (double ratio : {0.2, 0.4}) {
      Synth s;
      s.criterion = crit;
      s.importance = crit == "l2" ? "l2" : "taylor";
      s.params_after = int64_t(100000 * (1 - ratio));
      double ppl = 26.5 * (1 + ratio * (crit == "l2" ? 4 : 2));
      s.evals = {{"models", {eval_row("base", 100000, 26.5, 0.67, 0.52), eval_row("pruned", s.params_after, ppl, 0.6, 0.5)}}};
      dirs.push_back(make_run(root / ("run" + std::to_string(k++)), s));
    }
  std::string html = render_dirs(dirs);
  ASSERT_NE(html.find("id=\"sweep\""), std::string::npos);
  std::string svg = svg_with(html, "data-chart=\"sweep-ppl\"");
  ASSERT_FALSE(svg.empty());
  EXPECT_NE(svg.find("data-series=\"2\""), std::string::npos);
  auto series = groups(svg, "series s0");
  ASSERT_EQ(series.size(), 2u);  // the series and its legend sample
  EXPECT_NE(series[0].find("data-series=\"element1\" data-points=\"3\""), std::string::npos) << series[0];
  EXPECT_NE(svg.find("data-series=\"l2\" data-points=\"3\""), std::string::npos);
  EXPECT_NE(svg.find("perplexity on kjv"), std::string::npos);
  EXPECT_NE(svg.find("parameters removed (% of the unpruned model)"), std::string::npos);
  std::string zs = svg_with(html, "data-chart=\"sweep-zeroshot\"");
  EXPECT_NE(zs.find("data-series=\"2\""), std::string::npos);
  // The plotted numbers as a table: one row per pruned run.
  size_t t = html.find("<table class=\"sweep\">");
  ASSERT_NE(t, std::string::npos);
  EXPECT_EQ(count(html.substr(t, html.find("</table>", t) - t), "<tr><td>"), 4u);
  // Four run sections, each with its bars.
  EXPECT_EQ(count(html, "<section class=\"run\""), 4u);
  EXPECT_EQ(count(html, "class=\"chart layer-bars\""), 8u);
}

TEST(Report, AccessibleSelfContainedAndEscaped) {
  auto dir = make_run(test::temp_dir("run") / "r", Synth{});
  ReportOptions o;
  o.title = "A <b>&\"report\"";
  std::vector<ReportRun> runs = {load_report_run("x<script>=" + dir.string())};
  std::string html = render_report(runs, o);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>&"), std::string::npos);
  EXPECT_NE(html.find("A &lt;b&gt;&amp;&quot;report&quot;"), std::string::npos);
  EXPECT_NE(html.find("x&lt;script&gt;"), std::string::npos);
  // Every chart: role=img, a title and a desc it is labelled by, axis labels.
  size_t svgs = count(html, "<svg ");
  EXPECT_EQ(svgs, 5u);  // heads, mlp, importance head, importance mlp, roles
  EXPECT_EQ(count(html, "role=\"img\" aria-labelledby=\"c"), svgs);
  EXPECT_EQ(count(html, "<title id=\"c"), svgs);
  EXPECT_EQ(count(html, "<desc id=\"c"), svgs);
  EXPECT_GE(count(html, "class=\"axis-label\""), 2 * svgs);
  // No network: nothing but the SVG namespace is a URL; CSP forbids loads.
  EXPECT_EQ(count(html, "http"), count(html, "http://www.w3.org/2000/svg") + count(html, "http-equiv"));
  EXPECT_NE(html.find("default-src 'none'"), std::string::npos);
  // Themes and print.
  EXPECT_NE(html.find("@media (prefers-color-scheme:dark)"), std::string::npos);
  EXPECT_NE(html.find("@media print"), std::string::npos);
}

TEST(Report, Errors) {
  auto root = test::temp_dir("err");
  EXPECT_THROW(load_report_run((root / "missing").string()), UserError);
  fs::create_directories(root / "empty");
  try {
    load_report_run((root / "empty").string());
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("pruning.json"), std::string::npos) << e.what();
  }
  auto dir = make_run(root / "r", Synth{});
  write(dir / "eval-bad.json", "{\"ppl\": {\"kjv\": {\"ppl\": \"x\"}}}");
  try {
    load_report_run(dir.string());
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("eval-bad.json"), std::string::npos) << e.what();
  }
  fs::remove(dir / "eval-bad.json");
  write(dir / "importance.json", "[{\"layer\": 1}]");
  EXPECT_THROW(load_report_run(dir.string()), UserError);
  fs::remove(dir / "importance.json");
  ReportRun r = load_report_run(dir.string());  // importance is optional
  EXPECT_FALSE(r.has_importance);
  EXPECT_EQ(render_report({r}).find("data-chart=\"importance\""), std::string::npos);
  write(dir / "pruning.json", "{\"layers\": []");
  EXPECT_THROW(load_report_run(dir.string()), UserError);
  auto cli = test::run_cli("report " + (root / "empty").string() + " --out " + (root / "x.html").string());
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_NE(cli.err.find("pruning.json"), std::string::npos) << cli.err;
  EXPECT_FALSE(fs::exists(root / "x.html"));
}

// A real prune of the MHA fixture with --report, then eval --json saved into the run directory.
// Made once per test process.
const fs::path& fixture_run() {
  static fs::path dir = [] {
    auto root = fs::temp_directory_path() / ("llmprune-report-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    auto run = root / "run1";
    auto r = test::run_cli("prune " + test::fixture_model("kjv-llama-mha").string() + " --out " + run.string() +
                           " --ratio 0.25 --attn-layers 1:5 --mlp-layers 1:5 --importance taylor --taylor element1 --calib " +
                           test::fixture_text("kjv.valid.txt").string() +
                           " --calib-samples 4 --calib-seq-len 64 --calib-sampling sequential --save-importance " +
                           (root / "imp.json").string() + " --report " + (root / "prune-report.html").string());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto e = test::run_cli("eval base=" + test::fixture_model("kjv-llama-mha").string() + " --compare pruned=" + run.string() +
                           " --ppl kjv=" + test::fixture_text("kjv.test.txt").string() + " --max-windows 40 --tasks kjv_cloze --task-dir " +
                           (test::shared_dir() / "fixtures/tasks").string() + " --limit 40 --json");
    EXPECT_EQ(e.exit_code, 0) << e.err;
    write(run / "eval.json", e.out);
    return run;
  }();
  return dir;
}

TEST(Report, PruneWritesImportanceAndReport) {
  const fs::path& run = fixture_run();
  ASSERT_TRUE(fs::exists(run / "importance.json"));
  EXPECT_EQ(slurp(run / "importance.json"), slurp(run.parent_path() / "imp.json"));  // same array as --save-importance
  std::string html = slurp(run.parent_path() / "prune-report.html");
  EXPECT_EQ(groups(svg_with(html, "data-chart=\"heads\""), "bar").size(), 6u);
  EXPECT_EQ(groups(svg_with(html, "data-kind=\"head\""), "dist").size(), 4u);  // layers 1..4 were candidates
  EXPECT_NE(svg_with(html, "data-kind=\"mlp\"").find("data-units=\"2752\" data-removed=\"688\""), std::string::npos);

  auto out = run.parent_path() / "report.html";
  auto r = test::run_cli("report mha-25=" + run.string() + " --out " + out.string() + " --title 'Fixture report'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote"), std::string::npos);
  html = slurp(out);
  size_t t = html.find("<table class=\"eval\">");
  ASSERT_NE(t, std::string::npos);
  std::string table = html.substr(t, html.find("</table>", t) - t);
  EXPECT_EQ(count(table, "<tr"), 3u);
  EXPECT_NE(table.find("KJV-cloze"), std::string::npos);
  EXPECT_NE(table.find("data-role=\"pruned\""), std::string::npos);
  EXPECT_NE(table.find("data-role=\"unpruned\""), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium

std::string chromium_binary() {
  if (const char* e = std::getenv("LLMPRUNE_CHROMIUM"); e && *e) return e;
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(c)) return c;
  return "";
}

struct Chrome {
  int rc = -1;
  std::string out, err;
};

Chrome run_chromium(const std::string& bin, const fs::path& work, const std::string& args) {
  std::string cmd = "timeout 180 '" + bin + "' --headless --no-sandbox --disable-gpu --disable-background-networking " +
                    "--no-first-run --hide-scrollbars --user-data-dir='" + (work / "profile").string() + "' " + args + " > '" +
                    (work / "chrome.out").string() + "' 2> '" + (work / "chrome.err").string() + "' < /dev/null";
  int rc = std::system(cmd.c_str());
  Chrome c;
  c.rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  c.out = slurp(work / "chrome.out");
  c.err = slurp(work / "chrome.err");
  return c;
}

std::string attr(const std::string& dom, const std::string& name) {
  std::smatch m;
  if (std::regex_search(dom, m, std::regex(name + "=\"([^\"]*)\""))) return m[1];
  return "<missing>";
}

// Collects errors (script errors, failed loads, CSP violations = network attempts, console.error)
// and counts the live DOM's SVG elements into attributes of <html>; read back with --dump-dom.
const char* kProbe = R"JS(<script>
window.__errs = [];
addEventListener('error', function (e) { __errs.push('error: ' + (e.message || (e.target && e.target.outerHTML))); }, true);
addEventListener('securitypolicyviolation', function (e) { __errs.push('csp: ' + e.blockedURI + ' ' + e.violatedDirective); });
(function () { var ce = console.error; console.error = function () { __errs.push('console: ' + [].join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
addEventListener('load', function () {
  var d = document.documentElement, q = function (s) { return document.querySelectorAll(s).length; };
  var zero = 0;
  document.querySelectorAll('svg.chart').forEach(function (s) { var r = s.getBoundingClientRect(); if (r.width < 100 || r.height < 50) zero++; });
  var bad = 0;
  document.querySelectorAll('svg.chart').forEach(function (s) {
    var t = s.querySelector(':scope > title'), ds = s.querySelector(':scope > desc');
    if (!t || !ds || !t.textContent || !ds.textContent || s.getAttribute('role') !== 'img') bad++;
  });
  d.setAttribute('data-probe-loaded', '1');
  d.setAttribute('data-probe-errors', __errs.join(' | '));
  d.setAttribute('data-probe-svgs', q('svg.chart'));
  d.setAttribute('data-probe-zero-size', zero);
  d.setAttribute('data-probe-unlabelled', bad);
  d.setAttribute('data-probe-head-bars', q('svg[data-chart=heads] g.bar'));
  d.setAttribute('data-probe-mlp-bars', q('svg[data-chart=mlp] g.bar'));
  d.setAttribute('data-probe-removed-rects', q('svg[data-chart=heads] g.bar rect.removed'));
  d.setAttribute('data-probe-head-columns', q('svg[data-kind=head] g.dist'));
  d.setAttribute('data-probe-head-dots', q('svg[data-kind=head] g.dist circle'));
  d.setAttribute('data-probe-thresholds', q('svg[data-kind=mlp] g.dist line.threshold'));
  d.setAttribute('data-probe-roles', q('svg[data-chart=roles] g.role'));
  d.setAttribute('data-probe-eval-rows', q('table.eval tbody tr'));
  var bar = document.querySelector('svg[data-chart=heads] g.bar rect.kept');
  d.setAttribute('data-probe-bar-height', bar ? bar.getBoundingClientRect().height.toFixed(1) : '-1');
});
</script>)JS";

TEST(Report, ChromiumRendersWithoutErrors) {
  std::string bin = chromium_binary();
  if (bin.empty()) GTEST_SKIP() << "chromium not installed (Debian: apt-get install chromium); set LLMPRUNE_CHROMIUM to another binary";
  const fs::path& run = fixture_run();
  auto work = test::temp_dir("chromium");
  auto page = work / "report.html";
  auto r = test::run_cli("report " + run.string() + " --out " + page.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string html = slurp(page);
  // The probe goes before the page's CSP <meta>, so it runs; the report itself has no script.
  std::string probed = html;
  probed.insert(probed.find("<head>") + 6, std::string("\n") + kProbe);
  write(work / "probe.html", probed);

  Chrome c = run_chromium(bin, work, "--enable-logging=stderr --v=0 --virtual-time-budget=5000 --dump-dom 'file://" +
                                         (work / "probe.html").string() + "'");
  ASSERT_EQ(c.rc, 0) << c.err;
  ASSERT_EQ(attr(c.out, "data-probe-loaded"), "1") << c.out.substr(0, 2000) << "\n" << c.err;
  EXPECT_EQ(attr(c.out, "data-probe-errors"), "");
  // Chromium's own log of console messages (CONSOLE lines) has no errors either.
  std::istringstream log(c.err);
  for (std::string line; std::getline(log, line);)
    if (line.find("CONSOLE") != std::string::npos) ADD_FAILURE() << line;
  EXPECT_EQ(attr(c.out, "data-probe-svgs"), "5");  // heads, mlp, importance head + mlp, roles
  EXPECT_EQ(attr(c.out, "data-probe-zero-size"), "0");
  EXPECT_EQ(attr(c.out, "data-probe-unlabelled"), "0");
  EXPECT_EQ(attr(c.out, "data-probe-head-bars"), "6");  // one bar per layer
  EXPECT_EQ(attr(c.out, "data-probe-mlp-bars"), "6");
  EXPECT_EQ(attr(c.out, "data-probe-removed-rects"), "6");
  EXPECT_EQ(attr(c.out, "data-probe-head-columns"), "4");  // layers 1..4 were candidates
  EXPECT_EQ(attr(c.out, "data-probe-head-dots"), "32");    // 4 layers x 8 heads
  EXPECT_EQ(attr(c.out, "data-probe-thresholds"), "4");    // one per pruned layer
  EXPECT_EQ(attr(c.out, "data-probe-roles"), "5");
  EXPECT_EQ(attr(c.out, "data-probe-eval-rows"), "2");
  EXPECT_GT(std::stod(attr(c.out, "data-probe-bar-height")), 20.0);

  // Screenshot of the unmodified report: a PNG of the window size, not blank.
  auto png = work / "report.png";
  c = run_chromium(bin, work, "--screenshot='" + png.string() + "' --window-size=1200,2400 'file://" + page.string() + "'");
  ASSERT_EQ(c.rc, 0) << c.err;
  ASSERT_TRUE(fs::exists(png)) << c.err;
  std::string bytes = slurp(png);
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return uint32_t(uint8_t(bytes[at])) << 24 | uint32_t(uint8_t(bytes[at + 1])) << 16 | uint32_t(uint8_t(bytes[at + 2])) << 8 |
           uint32_t(uint8_t(bytes[at + 3]));
  };
  EXPECT_EQ(be32(16), 1200u);
  EXPECT_EQ(be32(20), 2400u);
  EXPECT_GT(bytes.size(), 40000u) << "screenshot looks blank";
  if (const char* keep = std::getenv("LLMPRUNE_REPORT_SCREENSHOT")) fs::copy_file(png, keep, fs::copy_options::overwrite_existing);

  // The probe has teeth: a page that tries a network load (blocked by the report's CSP) fails.
  std::string bad = probed;
  bad.insert(bad.find("<main>"), "<img src=\"https://example.invalid/x.png\" alt=\"\">");
  write(work / "bad.html", bad);
  c = run_chromium(bin, work, "--virtual-time-budget=5000 --dump-dom 'file://" + (work / "bad.html").string() + "'");
  ASSERT_EQ(c.rc, 0) << c.err;
  std::string errs = attr(c.out, "data-probe-errors");
  EXPECT_NE(errs.find("csp: https://example.invalid"), std::string::npos) << errs;
}

}  // namespace
}  // namespace llmprune
