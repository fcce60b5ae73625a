// Tests of the golden-file reader (tests/golden.h) and of the goldens themselves
// (tests/golden/*.lpgd, written by tools/reference.py): every entry the engine tests rely
// on is present, shapes agree with the fixture checkpoints, and the numbers are internally
// consistent (loss vs logits, ppl vs nll, reductions vs members). No engine code involved.
#include "golden.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace {

using llmprune::golden::allclose;
using llmprune::golden::GoldenFile;
using llmprune::golden::GoldenTensor;

const std::string kSource = LLMPRUNE_SOURCE_DIR;
const std::string kShared = LLMPRUNE_SHARED_DIR;

struct ModelCase {
  std::string name;
  double readme_ppl;  // fixtures/README.md, non-overlapping 128-token windows
};
const std::vector<ModelCase> kModels = {{"kjv-llama-mha", 26.5297}, {"kjv-llama-gqa-tied", 25.8586}};

std::string golden_path(const std::string& model) { return kSource + "/tests/golden/" + model + ".lpgd"; }
std::string model_dir(const std::string& model) { return kShared + "/fixtures/models/" + model; }

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(in);
}

// name -> shape, from the safetensors header (u64 length + json).
std::map<std::string, std::vector<int64_t>> checkpoint_shapes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  std::map<std::string, std::vector<int64_t>> out;
  const auto j = nlohmann::json::parse(header);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "__metadata__") out[it.key()] = it.value().at("shape").get<std::vector<int64_t>>();
  return out;
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Minimal writer, the mirror of tools/golden.py, for the format tests.
struct Writer {
  std::string bytes;
  uint32_t n = 0;
  template <class T>
  void put(const T& v) { bytes.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void entry(const std::string& name, uint8_t dtype, std::vector<int64_t> dims, const void* data, size_t nbytes) {
    put(static_cast<uint32_t>(name.size()));
    bytes += name;
    put(dtype);
    put(static_cast<uint32_t>(dims.size()));
    for (auto d : dims) put(d);
    bytes.append(static_cast<const char*>(data), nbytes);
    ++n;
  }
  std::string file(uint32_t version = 1, const char* magic = "LLMPGLD") const {
    std::string out(magic, 7);
    out.push_back('\0');
    out.append(reinterpret_cast<const char*>(&version), 4);
    out.append(reinterpret_cast<const char*>(&n), 4);
    return out + bytes;
  }
};

std::string write_temp(const std::string& tag, const std::string& bytes) {
  auto path = (std::filesystem::temp_directory_path() / ("llmprune_golden_" + tag + ".lpgd")).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

template <class F>
std::string thrown_message(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

GoldenTensor make_ref(std::vector<double> v, std::vector<int64_t> shape) {
  GoldenTensor t;
  t.name = "ref";
  t.shape = std::move(shape);
  t.values = std::move(v);
  return t;
}

// ----------------------------------------------------------------------------- format

TEST(GoldenFormat, ReadsAllDtypesInOrder) {
  Writer w;
  float f[3] = {1.5f, -2.0f, 0.1f};
  int32_t i[2] = {7, -3};
  double d = 3.25;
  w.entry("a/f32", 0, {3}, f, sizeof f);
  w.entry("b/i32", 1, {1, 2}, i, sizeof i);
  w.entry("c/f64", 2, {}, &d, sizeof d);
  auto path = write_temp("ok", w.file());
  auto g = GoldenFile::load(path);
  EXPECT_EQ(g.names(), (std::vector<std::string>{"a/f32", "b/i32", "c/f64"}));
  EXPECT_TRUE(g.has("b/i32"));
  EXPECT_FALSE(g.has("nope"));
  EXPECT_EQ(g.get("a/f32").dtype, 0);
  EXPECT_EQ(g.get("a/f32").values, (std::vector<double>{1.5, -2.0, static_cast<double>(0.1f)}));
  EXPECT_EQ(g.get("b/i32").shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(g.get("b/i32").values, (std::vector<double>{7, -3}));
  EXPECT_TRUE(g.get("c/f64").shape.empty());
  EXPECT_EQ(g.get("c/f64").scalar(), 3.25);
  EXPECT_NE(thrown_message([&] { g.get("nope"); }).find("nope"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(GoldenFormat, RejectsBadFilesNamingThem) {
  Writer w;
  double d[4] = {1, 2, 3, 4};
  w.entry("x", 2, {2, 2}, d, sizeof d);
  const std::string good = w.file();
  struct Bad {
    std::string tag, bytes, why;
  };
  std::string bad_dtype = good;
  bad_dtype[16 + 4 + 1] = 9;  // dtype byte of the first entry
  const std::vector<Bad> cases = {
      {"magic", w.file(1, "LLMPGLX"), "bad magic"},
      {"version", w.file(2), "version"},
      {"truncated", good.substr(0, good.size() - 1), "truncated"},
      {"header", good.substr(0, 10), "truncated"},
      {"trailing", good + "x", "trailing"},
      {"dtype", bad_dtype, "dtype"},
  };
  for (const auto& c : cases) {
    auto path = write_temp(c.tag, c.bytes);
    auto msg = thrown_message([&] { GoldenFile::load(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << c.tag << ": " << msg;
    EXPECT_NE(msg.find(c.why), std::string::npos) << c.tag << ": " << msg;
    std::filesystem::remove(path);
  }
  EXPECT_NE(thrown_message([] { GoldenFile::load("/nonexistent/x.lpgd"); }).find("/nonexistent/x.lpgd"),
            std::string::npos);
}

TEST(GoldenFormat, AllcloseUsesAtolPlusRtolAndNamesWorst) {
  auto ref = make_ref({1.0, 100.0, -3.0, 0.0}, {2, 2});
  std::vector<double> got = {1.0, 100.5, -3.0, 1e-9};
  EXPECT_TRUE(allclose(got, ref, 1e-8, 1e-2));  // 0.5 <= 1e-8 + 1e-2 * 100
  auto r = allclose(got, ref, 1e-8, 1e-3);      // 0.5 > 0.1
  ASSERT_FALSE(r);
  std::string msg = r.message();
  EXPECT_NE(msg.find("flat 1 [0,1]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got 100.5"), std::string::npos) << msg;
  got[2] = -2.0;  // |diff| 1 vs tol 3e-3: worse ratio than element 1
  msg = allclose(got, ref, 1e-8, 1e-3).message();
  EXPECT_NE(msg.find("2 of 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("flat 2 [1,0]"), std::string::npos) << msg;
  got = {1.0, 100.0, -3.0, std::nan("")};
  EXPECT_FALSE(allclose(got, ref, 1.0, 1.0));
  EXPECT_FALSE(allclose(std::vector<double>{1.0}, ref, 1.0, 1.0));  // size mismatch
  std::vector<float> gotf = {1.0f, 100.0f, -3.0f, 0.0f};
  EXPECT_TRUE(allclose(gotf, ref, 0.0, 0.0));
}

// ----------------------------------------------------------------------------- fixtures

struct Ctx {
  GoldenFile g;
  nlohmann::json cfg;
  std::map<std::string, std::vector<int64_t>> shapes;
};

Ctx open_model(const std::string& model) {
  return {GoldenFile::load(golden_path(model)), read_json(model_dir(model) + "/config.json"),
          checkpoint_shapes(model_dir(model) + "/model.safetensors")};
}

void expect_shape(const GoldenFile& g, const std::string& name, std::vector<int64_t> shape) {
  ASSERT_TRUE(g.has(name)) << name;
  EXPECT_EQ(g.get(name).shape, shape) << name;
}

void expect_all_finite(const GoldenTensor& t, bool nonneg = false) {
  for (size_t i = 0; i < t.values.size(); ++i) {
    ASSERT_TRUE(std::isfinite(t.values[i])) << t.name << "[" << i << "]";
    if (nonneg) {
      ASSERT_GE(t.values[i], 0.0) << t.name << "[" << i << "]";
    }
  }
}

TEST(GoldenFixtures, ForwardLossMatchesStoredLogits) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.name);
    auto c = open_model(m.name);
    const int64_t V = c.cfg["vocab_size"];
    expect_shape(c.g, "fwd/ids", {2, 32});
    expect_shape(c.g, "fwd/logits", {2, 32, V});
    const auto& ids = c.g.get("fwd/ids").values;
    const auto& lg = c.g.get("fwd/logits").values;
    EXPECT_EQ(ids[0], 1.0) << "BOS first";
    expect_all_finite(c.g.get("fwd/logits"));
    // Mean next-token CE over the 2 x 31 in-window predictions, log-softmax in double.
    double nll = 0;
    for (int b = 0; b < 2; ++b)
      for (int t = 0; t + 1 < 32; ++t) {
        const double* row = &lg[(b * 32 + t) * V];
        const double mx = *std::max_element(row, row + V);
        double se = 0;
        for (int64_t v = 0; v < V; ++v) se += std::exp(row[v] - mx);
        const auto target = static_cast<int64_t>(ids[b * 32 + t + 1]);
        ASSERT_TRUE(target >= 0 && target < V);
        nll += std::log(se) + mx - row[target];
      }
    const double loss = c.g.get("fwd/loss").scalar();
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_NEAR(nll / 62, loss, 1e-9 * loss);
  }
}

TEST(GoldenFixtures, PerplexityConsistentAndMatchesReadme) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.name);
    auto c = open_model(m.name);
    const double n = c.g.get("ppl/n_tokens").scalar();
    for (std::string key : {"kjv_test_128", "kjv_test_s64"}) {
      const double ppl = c.g.get("ppl/" + key).scalar();
      const double sum = c.g.get("ppl/" + key + "_nll_sum").scalar();
      const double cnt = c.g.get("ppl/" + key + "_count").scalar();
      const double win = c.g.get("ppl/" + key + "_windows").scalar();
      EXPECT_NEAR(std::exp(sum / cnt), ppl, 1e-12 * ppl) << key;
      if (key == "kjv_test_128") {
        EXPECT_EQ(win, std::floor(n / 128)) << key;
        EXPECT_EQ(cnt, 127 * win) << key;
      } else {
        // First window scores 127 predictions, each later one its last 64.
        EXPECT_EQ(win, std::floor((n - 128) / 64) + 1) << key;
        EXPECT_EQ(cnt, 127 + 64 * (win - 1)) << key;
      }
    }
    EXPECT_EQ(c.g.get("ppl/kjv_test_128_windows").scalar(), 390.0);
    // README gives 4 decimals.
    EXPECT_NEAR(c.g.get("ppl/kjv_test_128").scalar(), m.readme_ppl, 5e-5 + 1e-12);
    // Overlapping windows give every later prediction >= 64 tokens of context.
    EXPECT_LT(c.g.get("ppl/kjv_test_s64").scalar(), c.g.get("ppl/kjv_test_128").scalar());
  }
}

TEST(GoldenFixtures, CalibrationAndGradientsCoverTheCheckpoint) {
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.name);
    auto c = open_model(m.name);
    expect_shape(c.g, "calib/ids", {10, 64});
    EXPECT_EQ(c.g.get("calib/ids").values[0], 1.0) << "BOS first";
    const double loss = c.g.get("calib/loss").scalar();
    EXPECT_TRUE(loss > 0 && loss < std::log(static_cast<double>(c.cfg["vocab_size"])));
    EXPECT_EQ(c.shapes.count("lm_head.weight") == 0, c.cfg.value("tie_word_embeddings", false));
    size_t n_grad = 0;
    for (const auto& name : c.g.names()) n_grad += name.rfind("grad/", 0) == 0;
    EXPECT_EQ(n_grad, c.shapes.size()) << "one grad/ entry per checkpoint tensor";
    for (const auto& [name, shape] : c.shapes) {
      SCOPED_TRACE(name);
      const int64_t ne = numel(shape);
      for (auto [prefix, target] : {std::pair{std::string("grad"), int64_t{16384}}, {"fisher", int64_t{4096}}}) {
        ASSERT_TRUE(c.g.has(prefix + "/" + name));
        const auto& t = c.g.get(prefix + "/" + name);
        const auto p = static_cast<int64_t>(c.g.get(prefix + "stride/" + name).scalar());
        EXPECT_EQ(p, std::max<int64_t>(1, (ne + target - 1) / target));
        EXPECT_EQ(t.numel(), (ne + p - 1) / p);
        expect_all_finite(t, prefix == "fisher");
        EXPECT_TRUE(std::any_of(t.values.begin(), t.values.end(), [](double v) { return v != 0; }));
      }
      // g = mean of the per-sample gradients, so g^2 <= a = mean of their squares.
      if (c.g.get("gradstride/" + name).scalar() == 1 && c.g.get("fisherstride/" + name).scalar() == 1) {
        const auto& g = c.g.get("grad/" + name).values;
        const auto& a = c.g.get("fisher/" + name).values;
        for (size_t i = 0; i < g.size(); ++i) EXPECT_LE(g[i] * g[i], a[i] * (1 + 1e-4) + 1e-30) << i;
      }
    }
  }
}

TEST(GoldenFixtures, ImportanceShapesAndReductionsAgree) {
  const std::vector<std::string> criteria = {"l1", "l2", "vector", "element1", "element2", "fisher"};
  for (const auto& m : kModels) {
    SCOPED_TRACE(m.name);
    auto c = open_model(m.name);
    const int64_t L = c.cfg["num_hidden_layers"], H = c.cfg["hidden_size"], I = c.cfg["intermediate_size"];
    const int64_t nh = c.cfg["num_attention_heads"], nkv = c.cfg.value("num_key_value_heads", nh);
    const bool tied = c.cfg.value("tie_word_embeddings", false);
    // kind -> (shape, members in execution order)
    std::map<std::string, std::pair<std::vector<int64_t>, std::vector<std::string>>> kinds;
    kinds["mlp"] = {{L, I}, {"gate", "up", "down"}};
    if (nkv == nh) {
      kinds["head"] = {{L, nh}, {"q", "k", "v", "o"}};
    } else {
      kinds["kv_group"] = {{L, nkv}, {"q", "k", "v", "o"}};
      kinds["head"] = {{L, nh}, {"q", "o"}};
    }
    std::vector<std::string> hidden_roles = {"embed", "input_norm", "q", "k", "v", "o", "post_norm",
                                             "gate", "up", "down", "norm"};
    if (!tied) hidden_roles.push_back("lm_head");
    kinds["hidden"] = {{H}, hidden_roles};
    for (const auto& [kind, spec] : kinds) {
      SCOPED_TRACE(kind);
      for (const auto& crit : criteria) {
        expect_shape(c.g, "imp/" + crit + "/sum/" + kind, spec.first);
        expect_all_finite(c.g.get("imp/" + crit + "/sum/" + kind), /*nonneg=*/true);
      }
      for (std::string red : {"mean", "max", "prod", "first", "last"})
        expect_shape(c.g, "imp/element1/" + red + "/" + kind, spec.first);
      // Flatten the members into rows of the unit score array (hidden: per-layer roles
      // contribute one member per layer, in execution order layer by layer).
      std::vector<std::vector<double>> members;  // [member][layer * units + u] (hidden: [u])
      if (kind != "hidden") {
        for (const auto& role : spec.second) {
          const auto& t = c.g.get("member/element1/" + kind + "/" + role);
          ASSERT_EQ(t.shape, spec.first) << role;
          members.push_back(t.values);
        }
      } else {
        auto role = [&](const std::string& r) { return c.g.get("member/element1/hidden/" + r).values; };
        members.push_back(role("embed"));
        for (int64_t l = 0; l < L; ++l)
          for (const auto& r : spec.second) {
            if (r == "embed" || r == "norm" || r == "lm_head") continue;  // model-level members
            const auto v = role(r);
            ASSERT_EQ(v.size(), static_cast<size_t>(L * H)) << r;
            members.emplace_back(v.begin() + l * H, v.begin() + (l + 1) * H);
          }
        members.push_back(role("norm"));
        if (!tied) members.push_back(role("lm_head"));
        EXPECT_EQ(members.size(), static_cast<size_t>(2 + 9 * L + (tied ? 0 : 1)));
      }
      const size_t n = members[0].size();
      ASSERT_EQ(n, static_cast<size_t>(numel(spec.first)));
      std::vector<double> sum(n, 0), mean(n), mx(n, -1), prod(n, 1);
      for (const auto& mem : members)
        for (size_t i = 0; i < n; ++i) sum[i] += mem[i], mx[i] = std::max(mx[i], mem[i]), prod[i] *= mem[i];
      for (size_t i = 0; i < n; ++i) mean[i] = sum[i] / static_cast<double>(members.size());
      const std::string base = "imp/element1/";
      EXPECT_TRUE(allclose(sum, c.g.get(base + "sum/" + kind), 0, 1e-12));
      EXPECT_TRUE(allclose(mean, c.g.get(base + "mean/" + kind), 0, 1e-12));
      EXPECT_TRUE(allclose(mx, c.g.get(base + "max/" + kind), 0, 0));
      EXPECT_TRUE(allclose(prod, c.g.get(base + "prod/" + kind), 1e-300, 1e-9));
      EXPECT_TRUE(allclose(members.front(), c.g.get(base + "first/" + kind), 0, 0));
      EXPECT_TRUE(allclose(members.back(), c.g.get(base + "last/" + kind), 0, 0));
    }
  }
}

}  // namespace
