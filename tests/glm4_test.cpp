// GLM-4-0414 (transformers' Glm4ForCausalLM, model_type "glm4"): the "glm" block plus a norm on
// each sub-block's output before the residual add (ResidualDesc::post_norm, roles PostAttnNorm /
// PostMlpNorm). Logits, loss, every gradient and the Fisher diagonal against the float64 PyTorch
// goldens of tools/glm4_reference.py (tests/golden/glm4-tiny.lpgd, model tests/data/models/glm4-tiny);
// the post-norm backward against central differences; pruning = masking for heads, MLP channels,
// hidden channels (with the norm rescaling of surgery_test) and layers; save -> reload identical;
// families without the post-norms are unchanged; every subcommand on the tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/error.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/model.h"
#include "every_subcommand.h"
#include "golden.h"
#include "grad_check.h"
#include "model_factory.h"
#include "prune/depth.h"
#include "prune/surgery.h"
#include "test_util.h"

namespace llmprune {
namespace {

using nlohmann::json;
constexpr const char* kModel = "glm4-tiny";
const std::vector<int32_t> kIds = {1, 7, 3, 42, 9, 33, 5, 12, 60, 2};

using test::logits_of;

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); i++) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

golden::GoldenFile load_golden() {
  return golden::GoldenFile::load((test::source_dir() / "tests/golden" / (std::string(kModel) + ".lpgd")).string());
}

Model load_f32() {
  Model m = Model::load(test::fixture_model(kModel));
  m.for_each_tensor_mut([](const std::string&, Tensor& t) { t = t.converted(DType::F32); });
  return m;
}

TEST(Glm4, DescriptionHasPostNormsOnlyForGlm4) {
  const ArchDesc& g = arch_for_model_type("glm4", "x/config.json");
  EXPECT_TRUE(g.residual.post_norm);
  for (Role r : {Role::PostAttnNorm, Role::PostMlpNorm}) {
    EXPECT_TRUE(has_role(g, r));
    EXPECT_TRUE(role_desc(g, r).is_norm);
    EXPECT_EQ(role_desc(g, r).axis0, Space::Hidden);
    EXPECT_FALSE(is_matrix_role(r));  // never a LoRA target
  }
  EXPECT_TRUE(is_attention_role(Role::PostAttnNorm));  // removed with its sub-block
  EXPECT_FALSE(is_attention_role(Role::PostMlpNorm));
  EXPECT_EQ(layer_tensor_name(g, Role::PostAttnNorm, 3), "model.layers.3.post_self_attn_layernorm.weight");
  EXPECT_EQ(layer_tensor_name(g, Role::PostMlpNorm, 0), "model.layers.0.post_mlp_layernorm.weight");
  for (const std::string& t : supported_model_types()) {
    if (t == "glm4") continue;
    const ArchDesc& a = arch_for_model_type(t, "x/config.json");
    EXPECT_FALSE(a.residual.post_norm) << t;
    EXPECT_FALSE(has_role(a, Role::PostAttnNorm)) << t;
    EXPECT_FALSE(has_role(a, Role::PostMlpNorm)) << t;
  }
  // A checkpoint missing a post-norm is refused, naming the tensor.
  auto dir = test::temp_dir("glm4-missing");
  std::filesystem::copy(test::fixture_model(kModel), dir, std::filesystem::copy_options::recursive);
  auto tensors = load_checkpoint_tensors(test::fixture_model(kModel));
  tensors.erase("model.layers.1.post_mlp_layernorm.weight");
  SafetensorsWriter w;
  for (auto& [name, t] : tensors) {
    Tensor keep = t;
    w.add(name, keep.dtype, keep.shape, [keep](void* dst) { std::memcpy(dst, keep.data, keep.nbytes()); });
  }
  w.write(dir / "model.safetensors");
  try {
    Model::load(dir);
    ADD_FAILURE() << "a glm4 checkpoint without post_mlp_layernorm loaded";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.post_mlp_layernorm.weight"), std::string::npos) << e.what();
  }
}

TEST(Glm4, GoldenLogitsAndLoss) {
  auto g = load_golden();
  Model m = Model::load(test::fixture_model(kModel));
  EXPECT_EQ(m.cfg.layers[0], (LayerConfig{4, 2, 8, 48}));
  test::expect_golden_logits_and_loss(m, g, 2e-5, 1e-4);
}

TEST(Glm4, GoldenGradientsAndFisher) {
  auto g = load_golden();
  Model m = Model::load(test::fixture_model(kModel));
  const auto& gi = g.get("fwd/ids");
  std::vector<int32_t> ids(gi.values.begin(), gi.values.end());
  const int B = int(gi.shape[0]), T = int(gi.shape[1]);
  test::CollectSink sink(m);
  GradOptions opt;
  opt.per_sample = true;
  BackwardResult res = compute_gradients(m, ids.data(), B, T, opt, sink);
  EXPECT_NEAR(res.loss, g.get("fwd/loss").values[0], 1e-5);
  const int checked = test::expect_stored_grads_match_golden(m, sink.grads, g);  // gate_up_proj reassembled
  // 2 layers x (4 norms + q/k/v weights and biases + o + gate_up + down) + embedding, final norm, lm_head
  EXPECT_EQ(checked, 2 * 13 + 3);
}

// The post-norms' weights and the tensors whose gradients flow through them, against central
// differences of the mean NLL.
TEST(Glm4, PostNormBackwardMatchesFiniteDifferences) {
  Model m = load_f32();
  test::expect_layer0_grads_match_fd(m, kIds, {Role::PostAttnNorm, Role::PostMlpNorm, Role::O, Role::Down, Role::AttnNorm, Role::Q},
                                     {0, 5, 17, 39});
}

// Zeroing a unit's writers in the STORED tensors (q/k/v rows and biases of a KV group; rows j
// and F+j of gate_up_proj) gives the physically pruned model's logits; the pruned model saves
// in glm4 names with per-layer sizes and reloads with the same logits.
TEST(Glm4, PruningIsMasking) {
  Model m = load_f32();
  auto groups = discover_groups(m, GroupOptions{});
  std::vector<Group> cut;
  for (const Group& g : groups)
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 0) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 5 == 1))
      cut.push_back(g);
  ASSERT_EQ(cut.size(), 1u + 10u);
  Model pruned = remove_groups(m, cut);
  EXPECT_EQ(pruned.cfg.layers[1].n_head, 2);
  EXPECT_EQ(pruned.cfg.layers[0].d_ff, 38);

  auto stored = test::f32_tensors_of(test::fixture_model(kModel) / "model.safetensors");
  const int D = 8, F = 48;
  using test::zero_rows;
  for (const char* proj : {"q", "k", "v"})
    for (const char* kind : {"weight", "bias"})
      zero_rows(stored.at(std::string("model.layers.1.self_attn.") + proj + "_proj." + kind), 0, proj[0] == 'q' ? 2 * D : D);
  Tensor& gu = stored.at("model.layers.0.mlp.gate_up_proj.weight");
  for (int j = 1; j < F; j += 5) {
    zero_rows(gu, j, 1);
    zero_rows(gu, F + j, 1);
  }
  Model masked = Model::from_tensors(m.cfg, stored, "masked");
  auto want = logits_of(pruned, kIds);
  EXPECT_LE(max_abs_diff(logits_of(masked, kIds), want), 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, kIds), want), 1e-3);  // the cut matters

  auto dir = test::temp_dir("glm4-pruned");
  save_pruned(m, cut, dir, DType::F32, "");
  std::ifstream cj(dir / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["model_type"], "glm4");
  SafetensorsFile pf = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(pf.tensors.at("model.layers.0.mlp.gate_up_proj.weight").shape, (std::vector<int64_t>{76, 40}));
  EXPECT_EQ(pf.tensors.at("model.layers.1.post_self_attn_layernorm.weight").shape, (std::vector<int64_t>{40}));
  EXPECT_EQ(logits_of(Model::load(dir), kIds), want);
}

// Hidden channels: the post-norms lose the channel with the residual stream. zero_groups zeroes
// the writers (embedding column, o and down rows), so the sub-block outputs' channel is zero
// before their norms too; rescaling every RMSNorm (the post-norms included) by sqrt(C/C') and eps
// by C/C' makes the pruned model equal the zeroed one (surgery_test's compensation).
TEST(Glm4, HiddenChannelsAreMaskingWithNormCompensation) {
  Model m = load_f32();
  GroupOptions o;
  o.heads = o.mlp = false;
  o.hidden = true;
  auto gs = discover_groups(m, o);
  ASSERT_EQ(gs.size(), 40u);
  bool post_norm_member = false;
  for (const Member& mem : gs[3].members) post_norm_member |= mem.layer == 1 && mem.role == int(Role::PostMlpNorm);
  EXPECT_TRUE(post_norm_member) << "the post-norm weight is not in the hidden channel's group";
  std::vector<Group> plan = {gs[3], gs[17], gs[29]};
  Model p = remove_groups(m, plan);
  Model z = zero_groups(m, plan);
  ASSERT_EQ(p.cfg.hidden, 37);
  EXPECT_EQ(p.layers[0][Role::PostAttnNorm].dim(0), 37);
  auto zeroed = logits_of(z, kIds);
  const double ratio = 40.0 / 37.0;
  auto rescale = [&](Tensor& t) {
    for (int64_t i = 0; i < t.numel(); i++) t.f32_mut()[i] = float(t.f32()[i] * std::sqrt(ratio));
  };
  EXPECT_GT(max_abs_diff(logits_of(p, kIds), zeroed), 1e-3);  // masking is not removing, uncompensated
  for (auto& L : p.layers)
    for (Role r : {Role::AttnNorm, Role::MlpNorm, Role::PostAttnNorm, Role::PostMlpNorm}) rescale(L[r]);
  rescale(p.global[size_t(GlobalRole::FinalNorm)]);
  p.cfg.rms_eps *= ratio;
  EXPECT_LE(max_abs_diff(logits_of(p, kIds), zeroed), 1e-4);
}

// Depth pruning removes a sub-block's post-norm with it; the model saves without those tensors
// and reloads with the same logits, which equal the unpruned model run with those sub-blocks
// skipped (the depth search's mask).
TEST(Glm4, RemovedSubBlocksTakeTheirPostNorms) {
  Model m = load_f32();
  Model pruned = remove_sublayers(m, {{0, true}, {1, false}});
  EXPECT_TRUE(pruned.layers[0][Role::PostAttnNorm].empty());
  EXPECT_TRUE(pruned.layers[1][Role::PostMlpNorm].empty());
  EXPECT_FALSE(pruned.layers[0][Role::PostMlpNorm].empty());
  EXPECT_FALSE(pruned.layers[1][Role::PostAttnNorm].empty());
  auto want = logits_of(pruned, kIds);
  Runner masked(m);
  masked.skip_sublayers({1, 0}, {0, 1});
  std::vector<float> got(kIds.size() * size_t(m.cfg.vocab));
  masked.forward(kIds.data(), 1, int(kIds.size()), got.data());
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, kIds), want), 1e-3);
  auto dir = test::temp_dir("glm4-depth");
  save_model_files(pruned, dir, DType::F32, {});
  SafetensorsFile pf = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_FALSE(pf.tensors.count("model.layers.0.post_self_attn_layernorm.weight"));
  EXPECT_FALSE(pf.tensors.count("model.layers.1.post_mlp_layernorm.weight"));
  EXPECT_TRUE(pf.tensors.count("model.layers.1.post_self_attn_layernorm.weight"));
  EXPECT_EQ(logits_of(Model::load(dir), kIds), want);
}

// The random-model factory builds glm4 from the description (post-norms included); the decode
// path (KV cache, one token at a time) gives the full forward's logits.
TEST(Glm4, FactoryModelAndCachedDecode) {
  auto s = test::RandomModelSpec::uniform(2, 4, 2, 24);
  s.model_type = "glm4";
  s.attention_bias = true;
  Model m = test::make_random_model(s);
  EXPECT_FALSE(m.layers[1][Role::PostMlpNorm].empty());
  EXPECT_FALSE(m.layers[1][Role::QBias].empty());
  EXPECT_TRUE(m.layers[1][Role::OBias].empty());
  const std::vector<int32_t> ids = {1, 5, 9, 3, 7};
  auto full = logits_of(m, ids);
  Runner r(m);
  KVCache cache(m, 1, 8);
  std::vector<float> step(size_t(m.cfg.vocab));
  for (size_t t = 0; t < ids.size(); t++) {
    r.forward(&ids[t], 1, 1, step.data(), &cache);
    std::vector<float> want(full.begin() + long(t * m.cfg.vocab), full.begin() + long((t + 1) * m.cfg.vocab));
    EXPECT_LE(max_abs_diff(step, want), 1e-5) << "position " << t;
  }
}

TEST(Glm4Cli, EverySubcommandRuns) {
  const std::string model = test::fixture_model(kModel).string();
  auto dir = test::temp_dir("run");
  const auto p = test::run_every_subcommand(
      model, dir, {"glm4", "k_proj.weight", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"},
                   "model.layers.0.mlp.gate_up_proj.weight", kIds});
  // GGUF as llama.cpp's glm4 (its own check: LlamaCppClient.Glm4GgufAgreesWithLlmprune): the
  // post-norms as post_attention_norm / post_ffw_norm, the head size as key_length; uniform only.
  const std::string gguf = (dir / "x.gguf").string();
  test::cli_ok("export " + model + " --gguf " + gguf);
  gguf::GGUFFile gf = gguf::GGUFFile::open(gguf);
  EXPECT_EQ(gf.get_string("general.architecture"), "glm4");
  EXPECT_EQ(gf.get_uint("glm4.attention.key_length"), 8u);
  EXPECT_NE(gf.find_tensor("blk.1.post_attention_norm.weight"), nullptr);
  EXPECT_NE(gf.find_tensor("blk.1.post_ffw_norm.weight"), nullptr);
  test::expect_ragged_gguf_refused(p.pruned.string(), dir / "r.gguf");
}

}  // namespace
}  // namespace llmprune
