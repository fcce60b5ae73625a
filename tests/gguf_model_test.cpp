// GGUF export and import of models (src/model/gguf_model.cpp, docs/export.md): metadata key by
// key, tensors identical after the q/k row un-permutation, logits of the reloaded model equal to
// the source's, ragged models as llama.cpp's "deci" with per-layer arrays, a tokenizer rebuilt
// from GGUF metadata, the export CLI, and llama.cpp's perplexity windowing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/fs.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model_factory.h"
#include "prune/surgery.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;
using gguf::GGUFFile;
using test::fixture_model;
using test::temp_dir;

bool have_fixtures() { return fs::exists(fixture_model("kjv-llama-mha") / "model.safetensors"); }

std::vector<int32_t> some_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens, int B) {
  Runner r(m);
  int T = int(tokens.size()) / B;
  std::vector<float> out(size_t(B) * T * m.cfg.vocab);
  r.forward(tokens.data(), B, T, out.data());
  return out;
}

void expect_bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  size_t diff = 0;
  for (size_t i = 0; i < a.size(); i++) diff += std::memcmp(&a[i], &b[i], 4) != 0;
  EXPECT_EQ(diff, 0u) << "of " << a.size() << " logits";
}

std::vector<float> as_floats(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  to_f32(t.dtype, t.data, v.data(), v.size());
  return v;
}

// The GGUF tensor `name` back in HF row order, as fp32.
std::vector<float> gguf_tensor_hf_order(const GGUFFile& f, const std::string& name, bool rope, int head_dim) {
  auto v = f.read_f32(name);
  if (!rope) return v;
  const auto& ti = f.tensor(name);
  int64_t rows = int64_t(ti.shape()[0]);
  std::vector<float> out(v.size());
  rope_rows_gguf_to_hf(v.data(), out.data(), rows, v.size() / size_t(rows) * 4, head_dim);
  return out;
}

TEST(GGUFModel, RopePermutationMatchesConverterLayout) {
  // One head of 8 rows: HF rotate-half halves (0..3 | 4..7) become interleaved pairs
  // (0,4), (1,5), (2,6), (3,7), as llama.cpp's convert_hf_to_gguf permute() lays them out.
  std::vector<int32_t> hf = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17};
  std::vector<int32_t> gg(hf.size()), back(hf.size());
  rope_rows_hf_to_gguf(hf.data(), gg.data(), 16, 4, 8);
  EXPECT_EQ(gg, (std::vector<int32_t>{0, 4, 1, 5, 2, 6, 3, 7, 10, 14, 11, 15, 12, 16, 13, 17}));
  rope_rows_gguf_to_hf(gg.data(), back.data(), 16, 4, 8);
  EXPECT_EQ(back, hf);
  // Multi-byte rows round-trip too.
  auto w = test::random_vec(6 * 32 * 5, 3);
  std::vector<float> p(w.size()), q(w.size());
  rope_rows_hf_to_gguf(w.data(), p.data(), 6 * 32, 5 * 4, 32);
  EXPECT_NE(p, w);
  rope_rows_gguf_to_hf(p.data(), q.data(), 6 * 32, 5 * 4, 32);
  EXPECT_EQ(q, w);
  EXPECT_THROW(rope_rows_hf_to_gguf(w.data(), p.data(), 33, 4, 32), RuntimeError);
}

void check_fixture_export(const std::string& name, bool tied, int kv_heads, int d_ff) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  Model m = Model::load(fixture_model(name));
  auto tok = load_tokenizer(fixture_model(name));
  auto out = temp_dir("x") / (name + ".gguf");
  export_gguf(m, tok.get(), out, DType::F32);

  GGUFFile f = GGUFFile::open(out.string());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("general.name"), name);
  EXPECT_EQ(f.get_uint("general.file_type"), 0u);
  EXPECT_EQ(f.get_uint("llama.context_length"), 2048u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 256u);
  EXPECT_EQ(f.get_uint("llama.block_count"), 6u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), uint64_t(d_ff));
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), uint64_t(kv_heads));
  EXPECT_EQ(f.at("llama.attention.head_count").type(), gguf::ValueType::U32);  // llama.cpp reads u32 strictly
  EXPECT_FLOAT_EQ(float(f.get_float("llama.rope.freq_base")), 10000.0f);
  EXPECT_FLOAT_EQ(float(f.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(f.at("llama.attention.layer_norm_rms_epsilon").type(), gguf::ValueType::F32);
  EXPECT_EQ(f.get_uint("llama.rope.dimension_count"), 32u);
  EXPECT_EQ(f.get_uint("llama.attention.key_length"), 32u);
  EXPECT_EQ(f.get_uint("llama.attention.value_length"), 32u);
  EXPECT_EQ(f.get_uint("llama.vocab_size"), 4096u);
  // Vocabulary: SentencePiece pieces, scores and types, special ids.
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 4096u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(f.get_f32_array("tokenizer.ggml.scores").size(), 4096u);
  auto types = f.get_int_array("tokenizer.ggml.token_type");
  EXPECT_EQ(types[0], 2);  // unknown
  EXPECT_EQ(types[1], 3);  // control
  for (int i = 0; i < 4096; i++) EXPECT_EQ(tokens[size_t(i)], tok->id_to_piece(i));
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.unknown_token_id"), 0u);
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_eos_token"));
  EXPECT_TRUE(f.get_bool("tokenizer.ggml.add_space_prefix"));

  // Tensors: llama.cpp names, ggml dims, identical values after un-permuting q/k.
  EXPECT_EQ(f.find_tensor("output.weight") == nullptr, tied);
  EXPECT_EQ(f.tensors().size(), size_t(1 + 6 * 9 + 1 + (tied ? 0 : 1)));
  const auto& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.dims, (std::vector<uint64_t>{256, 4096}));
  EXPECT_EQ(f.tensor("blk.0.attn_k.weight").dims, (std::vector<uint64_t>{256, uint64_t(kv_heads * 32)}));
  EXPECT_EQ(f.tensor("blk.5.ffn_down.weight").dims, (std::vector<uint64_t>{uint64_t(d_ff), 256}));
  int checked = 0;
  m.for_each_tensor([&](const std::string& hf, const Tensor& t) {
    std::string g;
    bool rope = false;
    if (hf == "model.embed_tokens.weight") g = "token_embd.weight";
    else if (hf == "model.norm.weight") g = "output_norm.weight";
    else if (hf == "lm_head.weight") g = "output.weight";
    else {
      int l = std::atoi(hf.c_str() + std::strlen("model.layers."));
      std::string blk = "blk." + std::to_string(l) + ".";
      static const std::pair<const char*, const char*> roles[] = {
          {"input_layernorm", "attn_norm"}, {"q_proj", "attn_q"}, {"k_proj", "attn_k"}, {"v_proj", "attn_v"},
          {"o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"}, {"gate_proj", "ffn_gate"},
          {"up_proj", "ffn_up"}, {"down_proj", "ffn_down"}};
      for (auto [h, n] : roles)
        if (hf.find(std::string(".") + h + ".") != std::string::npos) g = blk + n + ".weight";
      rope = hf.find("q_proj") != std::string::npos || hf.find("k_proj") != std::string::npos;
    }
    ASSERT_FALSE(g.empty()) << hf;
    EXPECT_EQ(gguf_tensor_hf_order(f, g, rope, 32), as_floats(t)) << hf << " vs " << g;
    if (rope) EXPECT_NE(f.read_f32(g), as_floats(t)) << g << " should be stored permuted";
    checked++;
  });
  EXPECT_EQ(size_t(checked), f.tensors().size());

  // Reloaded: same config, same logits, bit for bit.
  Model g = Model::load(out);
  EXPECT_EQ(g.cfg.layers, m.cfg.layers);
  EXPECT_EQ(g.cfg.tied, tied);
  EXPECT_EQ(g.cfg.rms_eps, 1e-5);
  EXPECT_EQ(g.cfg.bos_id, 1);
  EXPECT_EQ(g.dir, out);
  auto ids = some_tokens(2 * 24, 4096, 7);
  expect_bitwise_equal(logits_of(g, ids, 2), logits_of(m, ids, 2));
}

TEST(GGUFModel, ExportMhaFixture) { check_fixture_export("kjv-llama-mha", false, 8, 688); }
TEST(GGUFModel, ExportGqaTiedFixture) { check_fixture_export("kjv-llama-gqa-tied", true, 2, 704); }

TEST(GGUFModel, Bf16AndF16ExportEqualConvertedModel) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  Model m = Model::load(fixture_model("kjv-llama-gqa-tied"));
  auto tok = load_tokenizer(fixture_model("kjv-llama-gqa-tied"));
  auto ids = some_tokens(32, 4096, 11);
  for (DType dt : {DType::BF16, DType::F16}) {
    auto out = temp_dir(dtype_name(dt)) / "m.gguf";
    export_gguf(m, tok.get(), out, dt);
    GGUFFile f = GGUFFile::open(out.string());
    EXPECT_EQ(f.get_uint("general.file_type"), dt == DType::BF16 ? 32u : 1u);
    EXPECT_EQ(f.tensor("blk.0.attn_q.weight").ggml_type, uint32_t(gguf::ggml_type_of(dt)));
    EXPECT_EQ(f.tensor("blk.0.attn_norm.weight").ggml_type, uint32_t(gguf::GGMLType::F32));  // 1-D stay F32
    // Expected: matrices rounded to dt, norms kept at F32 (as llama.cpp's converter does).
    Model conv = m;
    conv.for_each_tensor_mut([&](const std::string&, Tensor& t) {
      if (t.ndim() == 2) t = t.converted(dt);
    });
    Model g = Model::load(out);
    EXPECT_EQ(g.storage_dtype(), dt);
    expect_bitwise_equal(logits_of(g, ids, 1), logits_of(conv, ids, 1));
  }
}

TEST(GGUFModel, RaggedModelUsesDeciWithPerLayerArrays) {
  auto spec = test::RandomModelSpec::uniform(3, 4, 2, 40);
  spec.layers[1] = LayerConfig{2, 1, 0, 24};
  spec.layers[2] = LayerConfig{4, 2, 0, 16};
  spec.tied = true;
  Model m = test::make_random_model(spec);
  ASSERT_FALSE(m.cfg.uniform());
  auto out = temp_dir("r") / "ragged.gguf";
  export_gguf(m, nullptr, out, DType::F32);
  GGUFFile f = GGUFFile::open(out.string());
  EXPECT_EQ(f.get_string("general.architecture"), "deci");
  EXPECT_EQ(f.get_int_array("deci.attention.head_count"), (std::vector<int64_t>{4, 2, 4}));
  EXPECT_EQ(f.get_int_array("deci.attention.head_count_kv"), (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(f.get_int_array("deci.feed_forward_length"), (std::vector<int64_t>{40, 24, 16}));
  EXPECT_EQ(f.at("deci.feed_forward_length").get_if<gguf::Array>()->element_type, gguf::ValueType::U32);
  EXPECT_EQ(f.get_uint("deci.attention.key_length"), 8u);
  EXPECT_EQ(f.find("tokenizer.ggml.model"), nullptr);  // no tokenizer given
  Model g = Model::load(out);
  EXPECT_EQ(g.cfg.layers, m.cfg.layers);
  auto ids = some_tokens(3 * 10, 64, 5);
  expect_bitwise_equal(logits_of(g, ids, 3), logits_of(m, ids, 3));
}

TEST(GGUFModel, PrunedFixtureRoundTrip) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  Model m = Model::load(fixture_model("kjv-llama-mha"));
  GroupOptions o;
  auto groups = discover_groups(m, o);
  std::vector<Group> drop;
  for (auto& g : groups)
    if (((g.kind == UnitKind::Head || g.kind == UnitKind::KvGroup) && g.layer == 2 && g.index < 3) || (g.kind == UnitKind::Mlp && g.layer == 4 && g.index % 3 == 0))
      drop.push_back(g);
  ASSERT_FALSE(drop.empty());
  Model p = remove_groups(m, drop);
  ASSERT_FALSE(p.cfg.uniform());
  p.dir = fixture_model("kjv-llama-mha");  // tokenizer.model lives there
  auto tok = load_tokenizer(fixture_model("kjv-llama-mha"));
  auto out = temp_dir("p") / "pruned.gguf";
  export_gguf(p, tok.get(), out, DType::F32);
  GGUFFile f = GGUFFile::open(out.string());
  EXPECT_EQ(f.get_string("general.architecture"), "deci");
  EXPECT_EQ(f.get_int_array("deci.attention.head_count")[2], 5);
  EXPECT_EQ(f.get_int_array("deci.feed_forward_length")[4], 688 - 230);
  Model g = Model::load(out);
  EXPECT_EQ(g.cfg.layers, p.cfg.layers);
  auto ids = some_tokens(40, 4096, 9);
  expect_bitwise_equal(logits_of(g, ids, 1), logits_of(p, ids, 1));
  // Re-export of the GGUF-loaded model (no tokenizer given): tensors and tokenizer keys carry over.
  auto again = temp_dir("p2") / "again.gguf";
  export_gguf(g, nullptr, again, DType::F32);
  GGUFFile f2 = GGUFFile::open(again.string());
  ASSERT_EQ(f2.tensors().size(), f.tensors().size());
  for (auto& t : f.tensors()) {
    auto a = f.tensor_bytes(t), b = f2.tensor_bytes(f2.tensor(t.name));
    EXPECT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0) << t.name;
  }
  EXPECT_EQ(f2.get_string_array("tokenizer.ggml.tokens"), f.get_string_array("tokenizer.ggml.tokens"));
  EXPECT_EQ(f2.get_f32_array("tokenizer.ggml.scores"), f.get_f32_array("tokenizer.ggml.scores"));
}

TEST(GGUFModel, BiasesArePermutedAndRoundTrip) {
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  spec.qkv_bias = true;
  spec.head_dim = 8;  // 4 heads * 8 = hidden 32: llama.cpp sizes the q bias by the hidden size
  Model m = test::make_random_model(spec);
  auto out = temp_dir("b") / "bias.gguf";
  export_gguf(m, nullptr, out, DType::F32);
  GGUFFile f = GGUFFile::open(out.string());
  auto qb = gguf_tensor_hf_order(f, "blk.1.attn_q.bias", true, 8);
  EXPECT_EQ(qb, as_floats(m.layers[1][Role::QBias]));
  EXPECT_EQ(f.read_f32("blk.1.attn_v.bias"), as_floats(m.layers[1][Role::VBias]));
  Model g = Model::load(out);
  auto ids = some_tokens(12, 64, 2);
  expect_bitwise_equal(logits_of(g, ids, 1), logits_of(m, ids, 1));
  // Pruned heads with biases: the q bias has the q projection's rows (llama.cpp sizes it so since
  // create_tensor_qkv; LlamaCppClient runs such a file), exported as `deci` and read back exactly.
  spec.layers[1] = LayerConfig{2, 1, 0, 24};
  Model r = test::make_random_model(spec);
  auto out2 = temp_dir("b2") / "x.gguf";
  export_gguf(r, nullptr, out2, DType::F32);
  GGUFFile f2 = GGUFFile::open(out2.string());
  EXPECT_EQ(f2.get_string("general.architecture"), "deci");
  EXPECT_EQ(f2.tensor("blk.1.attn_q.bias").dims, (std::vector<uint64_t>{16}));  // 2 heads x 8, hidden 32
  EXPECT_EQ(gguf_tensor_hf_order(f2, "blk.1.attn_q.bias", true, 8), as_floats(r.layers[1][Role::QBias]));
  Model g2 = Model::load(out2);
  expect_bitwise_equal(logits_of(g2, ids, 1), logits_of(r, ids, 1));
}

TEST(GGUFModel, RopeScalingRoundTrips) {
  auto spec = test::RandomModelSpec::uniform(1, 4, 4, 16);
  Model m = test::make_random_model(spec);
  for (std::string type : {"linear", "llama3"}) {
    Model s = m;
    s.cfg.rope_scaling.type = type;
    s.cfg.rope_scaling.factor = 8;
    s.cfg.rope_scaling.original_max_position = 64;
    auto out = temp_dir(type) / "s.gguf";
    export_gguf(s, nullptr, out, DType::F32);
    GGUFFile f = GGUFFile::open(out.string());
    EXPECT_EQ(f.find_tensor("rope_freqs.weight") != nullptr, type == "llama3");
    Model g = Model::load(out);
    EXPECT_EQ(g.cfg.rope_scaling.type, type);
    EXPECT_EQ(g.cfg.rope_scaling.factor, 8);
    EXPECT_EQ(rope_inv_freq(g.cfg, 8), rope_inv_freq(s.cfg, 8));
  }
}

// Writes a GGUF from `src` with a tweak applied to the writer before finish().
template <class Tweak>
fs::path tweaked_copy(const fs::path& src, const std::string& tag, Tweak tweak, bool drop_q0 = false) {
  GGUFFile f = GGUFFile::open(src.string());
  auto out = temp_dir(tag) / "bad.gguf";
  gguf::GGUFWriter w(out.string());
  for (auto& kv : f.metadata()) w.set(kv.key, kv.value);
  auto holder = std::make_shared<GGUFFile>(GGUFFile::open(src.string()));
  for (auto& t : f.tensors()) {
    if (drop_q0 && t.name == "blk.0.attn_q.weight") continue;
    std::string name = t.name;
    w.add_tensor(gguf::TensorToWrite{t.name, t.dims, t.ggml_type, [holder, name](std::span<uint8_t> dst) {
                                       auto b = holder->tensor_bytes(holder->tensor(name));
                                       std::memcpy(dst.data(), b.data(), dst.size());
                                     }});
  }
  tweak(w);
  w.finish();
  return out;
}

void expect_load_error(const fs::path& p, const std::string& needle) {
  try {
    Model::load(p);
    FAIL() << "expected a UserError containing '" << needle << "'";
  } catch (const UserError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(GGUFModel, ImportErrorsNameFileAndField) {
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  Model m = test::make_random_model(spec);
  auto good = temp_dir("g") / "good.gguf";
  export_gguf(m, nullptr, good, DType::F32);
  expect_load_error(tweaked_copy(good, "arch", [](auto& w) { w.set("general.architecture", "qwen2"); }), "general.architecture");
  expect_load_error(tweaked_copy(good, "heads", [](auto& w) {
                      w.set("llama.attention.head_count", gguf::Value::array_of(std::vector<uint32_t>{4, 2}));
                    }),
                    "attention.head_count");
  expect_load_error(tweaked_copy(good, "len", [](auto& w) {
                      w.set("llama.feed_forward_length", gguf::Value::array_of(std::vector<uint32_t>{24, 24, 24}));
                    }),
                    "feed_forward_length");
  expect_load_error(tweaked_copy(good, "miss", [](auto&) {}, true), "blk.0.attn_q.weight");
  expect_load_error(tweaked_copy(good, "extra", [](auto& w) {
                      w.add_tensor(gguf::TensorToWrite::make("blk.9.attn_q.weight", {4}, DType::F32, [](std::span<uint8_t> d) {
                        std::memset(d.data(), 0, d.size());
                      }));
                    }),
                    "blk.9.attn_q.weight");
  expect_load_error(tweaked_copy(good, "nokey", [](auto& w) { w.set("llama.block_count", "six"); }), "llama.block_count");
  expect_load_error(tweaked_copy(good, "q4", [](auto& w) {
                      w.add_tensor(gguf::TensorToWrite{"blk.1.attn_q.bias", {32}, uint32_t(gguf::GGMLType::Q4_0),
                                                       [](std::span<uint8_t> d) { std::memset(d.data(), 0, d.size()); }});
                    }),
                    "Q4_0");
}

TEST(GGUFModel, TokenizerFromGgufMetadataMatchesSentencePiece) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  Model m = Model::load(fixture_model("kjv-llama-mha"));
  auto tok = load_tokenizer(fixture_model("kjv-llama-mha"));
  auto out = temp_dir("t") / "m.gguf";
  export_gguf(m, tok.get(), out, DType::F32);
  auto gt = load_gguf_tokenizer(out);
  EXPECT_EQ(gt->vocab_size(), 4096);
  EXPECT_EQ(gt->bos_id(), 1);
  EXPECT_EQ(gt->eos_id(), 2);
  std::string text = read_text_file(test::fixture_text("kjv.test.txt").string()).substr(0, 20000);
  text += "\nUnseen: Zürich ½ 漢字 🙂 and  two  spaces 12345.";
  auto a = tok->encode(text), b = gt->encode(text);
  EXPECT_EQ(a, b);
  EXPECT_EQ(gt->decode(b), tok->decode(a));
  // A gpt2-style vocabulary cannot be rebuilt: the error asks for tokenizer.json.
  auto bad = tweaked_copy(out, "gpt2", [](auto& w) { w.set("tokenizer.ggml.model", "gpt2"); });
  try {
    load_gguf_tokenizer(bad);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
  }
}

TEST(GGUFModel, ExportCli) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  auto dir = temp_dir("work");
  auto src = fixture_model("kjv-llama-gqa-tied").string();
  auto gg = (dir / "m.gguf").string();
  auto r = test::run_cli("export " + src + " --gguf " + gg + " --dtype bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("bf16"), std::string::npos) << r.out;
  EXPECT_EQ(GGUFFile::open(gg).get_uint("general.file_type"), 32u);
  // Existing output: refused without --force, replaced with it.
  r = test::run_cli("export " + src + " --gguf " + gg);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  r = test::run_cli("export " + src + " --gguf " + gg + " --force --dtype f32");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(GGUFFile::open(gg).get_uint("general.file_type"), 0u);
  r = test::run_cli("export " + src + " --gguf " + (dir / "x.gguf").string() + " --dtype f8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dtype"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "x.gguf"));
  r = test::run_cli("export " + src);
  EXPECT_EQ(r.exit_code, 2);
  // GGUF in, HF directory out: loads, same logits, tokenizer.model rebuilt from the GGUF vocabulary.
  auto hf = dir / "hf";
  r = test::run_cli("export " + gg + " --hf " + hf.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(hf / "tokenizer.model"));
  Model a = Model::load(src), b = Model::load(hf);
  auto ids = some_tokens(20, 4096, 4);
  expect_bitwise_equal(logits_of(b, ids, 1), logits_of(a, ids, 1));
  auto t1 = load_tokenizer(src), t2 = load_tokenizer(hf);
  EXPECT_EQ(t1->encode("In the beginning God created the heaven"), t2->encode("In the beginning God created the heaven"));
  // A GGUF whose folder has the tokenizer files runs through eval like the directory does.
  fs::copy_file(fixture_model("kjv-llama-gqa-tied") / "tokenizer.model", dir / "tokenizer.model");
  r = test::run_cli("eval " + gg + " --ppl " + test::fixture_text("kjv.test.txt").string() + " --max-windows 4 --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// llama-perplexity's windowing, computed with llmprune's forward pass: the file less one trailing
// newline, tokenised with BOS; consecutive n_ctx windows whose first token is replaced by BOS; only
// the second half of each window is scored (targets n_ctx/2+1 .. n_ctx-1). The reference values are
// llama.cpp's own running perplexities on our f32 export of kjv-llama-mha (docs/export.md).
TEST(GGUFModel, LlamaCppPerplexityConvention) {
  if (!have_fixtures()) GTEST_SKIP() << "no shared fixtures";
  int chunks = 10;
  if (const char* e = std::getenv("LLMPRUNE_LLAMACPP_CHUNKS")) chunks = std::atoi(e);
  // LLMPRUNE_LLAMACPP_MODEL=DIR_OR_GGUF computes the same number for another model (docs/export.md).
  fs::path model_path = fixture_model("kjv-llama-mha");
  const char* other = std::getenv("LLMPRUNE_LLAMACPP_MODEL");
  if (other && *other) model_path = other;
  Model m = Model::load(model_path);
  auto tok = load_tokenizer(fs::is_directory(model_path) ? model_path : model_path.parent_path());
  std::string text = read_text_file(test::fixture_text("kjv.test.txt").string());
  if (!text.empty() && text.back() == '\n') text.pop_back();
  std::vector<int32_t> ids = {tok->bos_id()};
  auto body = tok->encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  const int n_ctx = 128, first = n_ctx / 2;
  chunks = std::min<int>(chunks, int(ids.size()) / n_ctx);
  Runner r(m);
  double nll = 0;
  int64_t count = 0;
  for (int c = 0; c < chunks; c++) {
    std::vector<int32_t> w(ids.begin() + int64_t(c) * n_ctx, ids.begin() + int64_t(c + 1) * n_ctx);
    w[0] = tok->bos_id();
    int from = first + 1;
    auto res = sequence_nll(r, w.data(), 1, n_ctx, &from);
    nll += res.nll_sum;
    count += res.count;
  }
  EXPECT_EQ(count, int64_t(chunks) * (n_ctx - 1 - first));
  double ppl = std::exp(nll / double(count));
  std::printf("llama.cpp convention, %s, %d chunks of %d: PPL %.4f\n", model_path.c_str(), chunks, n_ctx, ppl);
  // llama-perplexity -c 128 -b 128 printed [10]19.7497 and, over all 390 chunks, 25.5034.
  if (other && *other) return;
  if (chunks == 10) EXPECT_NEAR(ppl, 19.7497, 0.005);
  if (chunks == 390) EXPECT_NEAR(ppl, 25.5034, 0.005);
}

}  // namespace
}  // namespace llmprune
