// Malformed checkpoints and bad usage: every case must exit 2 with exactly one stderr line
// "llmprune: error: <file>: <what>" that names the file and the offending field or tensor.
// Each test writes a tiny valid model (1 layer, GQA, tied) into a temp dir, corrupts one thing,
// and runs `llmprune info` on it. The table of messages is in docs/robustness.md.
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct TSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype = "F32";
};

// hidden 16, 4 query heads and 2 KV heads of head_dim 8 (q rows 32 != hidden, so a transposed
// o_proj is detectable), MLP 24, vocab 32, tied embeddings.
json tiny_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 16},
          {"intermediate_size", 24},
          {"num_hidden_layers", 1},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 8},
          {"vocab_size", 32},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", true},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

std::vector<TSpec> tiny_tensors() {
  const std::string p = "model.layers.0.";
  return {{"model.embed_tokens.weight", {32, 16}},
          {p + "input_layernorm.weight", {16}},
          {p + "self_attn.q_proj.weight", {32, 16}},
          {p + "self_attn.k_proj.weight", {16, 16}},
          {p + "self_attn.v_proj.weight", {16, 16}},
          {p + "self_attn.o_proj.weight", {16, 32}},
          {p + "post_attention_layernorm.weight", {16}},
          {p + "mlp.gate_proj.weight", {24, 16}},
          {p + "mlp.up_proj.weight", {24, 16}},
          {p + "mlp.down_proj.weight", {16, 24}},
          {"model.norm.weight", {16}}};
}

TSpec* find_tensor(std::vector<TSpec>& ts, const std::string& suffix) {
  for (auto& t : ts)
    if (t.name.size() >= suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) return &t;
  ADD_FAILURE() << "no tensor " << suffix;
  return nullptr;
}

size_t elem_size(const std::string& dt) { return dt == "F32" ? 4 : dt == "I64" || dt == "F64" ? 8 : 2; }

// A header laid out the way SafetensorsWriter lays it out (consecutive spans in list order).
json header_for(const std::vector<TSpec>& ts, uint64_t* data_bytes) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (auto& t : ts) {
    uint64_t n = elem_size(t.dtype);
    for (auto d : t.shape) n *= uint64_t(d);
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  *data_bytes = off;
  return h;
}

// 8-byte length (declared_len, or the real one when ~0), header bytes, then data_bytes of 0x3c.
void write_raw(const fs::path& path, const std::string& header, uint64_t data_bytes, uint64_t declared_len = ~0ull) {
  std::string hs = header;
  if (declared_len == ~0ull) {
    while (hs.size() % 8 != 0) hs.push_back(' ');
    declared_len = hs.size();
  }
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&declared_len), 8);
  out.write(hs.data(), std::streamsize(hs.size()));
  std::string data(data_bytes, '\x3c');
  out.write(data.data(), std::streamsize(data.size()));
}

void write_safetensors(const fs::path& path, const std::vector<TSpec>& ts) {
  uint64_t n = 0;
  json h = header_for(ts, &n);
  write_raw(path, h.dump(), n);
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
}

void write_text(const fs::path& path, const std::string& s) {
  std::ofstream out(path, std::ios::binary);
  out << s;
}

// A complete tiny model directory (config.json + model.safetensors).
fs::path tiny_model(const std::string& tag, const std::function<void(json&)>& edit_cfg = nullptr,
                    const std::function<void(std::vector<TSpec>&)>& edit_tensors = nullptr) {
  fs::path dir = test::temp_dir(tag);
  json cfg = tiny_config();
  if (edit_cfg) edit_cfg(cfg);
  write_json(dir / "config.json", cfg);
  auto ts = tiny_tensors();
  if (edit_tensors) edit_tensors(ts);
  write_safetensors(dir / "model.safetensors", ts);
  return dir;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// Exit 2 (1 for expect_error(r, 1, ...): runtime failures), one line on stderr, "llmprune: error: "
// prefix, and every needle in that line.
// The message is recorded as the test property "stderr" (docs/robustness.md's table is made from
// --gtest_output=json of this file's tests).
void expect_error(const test::CmdResult& r, int exit_code, const std::vector<std::string>& needles) {
  ::testing::Test::RecordProperty("stderr", r.err.substr(0, r.err.find('\n')));
  EXPECT_EQ(r.exit_code, exit_code) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "want exactly one line, got: " << r.err;
  EXPECT_EQ(r.err.rfind("llmprune: error: ", 0), 0u) << r.err;
  for (auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
  EXPECT_EQ(r.out, "") << "nothing on stdout on error";
}

void expect_user_error(const test::CmdResult& r, const std::vector<std::string>& needles) { expect_error(r, 2, needles); }

void expect_info_error(const fs::path& dir, const std::vector<std::string>& needles) {
  expect_user_error(test::run_cli("info " + q(dir)), needles);
}

std::string st(const fs::path& dir) { return (dir / "model.safetensors").string(); }
std::string cj(const fs::path& dir) { return (dir / "config.json").string(); }

// ---- the baseline: the tiny model itself is valid -----------------------------------------

TEST(CheckpointErrors, TinyModelLoads) {
  auto dir = tiny_model("ok");
  auto r = test::run_cli("info --json " + q(dir));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = json::parse(r.out);
  EXPECT_EQ(j["hidden_size"], 16);
  EXPECT_EQ(j["layers"][0]["heads"], 4);
  EXPECT_EQ(j["layers"][0]["kv_heads"], 2);
  EXPECT_EQ(j["layers"][0]["mlp"], 24);
}

// ---- safetensors container ------------------------------------------------------------------

TEST(CheckpointErrors, TruncatedData) {
  auto dir = tiny_model("trunc");
  fs::resize_file(st(dir), fs::file_size(st(dir)) - 100);
  // Header entries are checked in name order; down_proj is the first one the cut reaches.
  expect_info_error(dir, {st(dir), "tensor 'model.layers.0.mlp.down_proj.weight'", "past the end of the data", "truncated?"});
}

TEST(CheckpointErrors, TruncatedInsideHeader) {
  auto dir = tiny_model("trunc-header");
  fs::resize_file(st(dir), 200);
  expect_info_error(dir, {st(dir), "header length", "runs past the end of the file"});
}

TEST(CheckpointErrors, FileShorterThanLengthPrefix) {
  auto dir = tiny_model("trunc-5");
  fs::resize_file(st(dir), 5);
  expect_info_error(dir, {st(dir), "file too short for a safetensors header (5 bytes)"});
}

TEST(CheckpointErrors, EmptyFile) {
  auto dir = tiny_model("empty");
  fs::resize_file(st(dir), 0);
  expect_info_error(dir, {st(dir), "file too short"});
}

TEST(CheckpointErrors, BadHeaderJson) {
  auto dir = tiny_model("bad-json");
  uint64_t n = 0;
  std::string h = header_for(tiny_tensors(), &n).dump();
  h.pop_back();  // drop the closing brace
  write_raw(st(dir), h, n);
  expect_info_error(dir, {st(dir), "header is not valid JSON"});
}

TEST(CheckpointErrors, HeaderNotAnObject) {
  auto dir = tiny_model("header-array");
  write_raw(st(dir), "[1, 2, 3]", 0);
  expect_info_error(dir, {st(dir), "header is not a JSON object"});
}

TEST(CheckpointErrors, HeaderLengthPastEnd) {
  auto dir = tiny_model("hlen");
  uint64_t n = 0;
  std::string h = header_for(tiny_tensors(), &n).dump();
  write_raw(st(dir), h, n, /*declared_len=*/1ull << 24);
  expect_info_error(dir, {st(dir), "header length 16777216 runs past the end of the file"});
}

TEST(CheckpointErrors, HeaderLengthOverLimit) {
  auto dir = tiny_model("hlen-huge");
  write_raw(st(dir), "{}", 0, /*declared_len=*/0xffffffffffffff00ull);
  expect_info_error(dir, {st(dir), "exceeds the 100 MB limit"});
}

TEST(CheckpointErrors, TensorOffsetsPastEnd) {
  auto dir = tiny_model("offsets");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"]["data_offsets"] = {n - 64, n + 64};
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "data_offsets", "past the end of the data"});
}

TEST(CheckpointErrors, OffsetsBeginAfterEnd) {
  auto dir = tiny_model("offsets-rev");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"]["data_offsets"] = {n, n - 64};
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "data_offsets begin > end"});
}

TEST(CheckpointErrors, NegativeOffsets) {
  auto dir = tiny_model("offsets-neg");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"]["data_offsets"] = {-64, 0};
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "data_offsets must be non-negative integers"});
}

TEST(CheckpointErrors, OverlappingTensors) {
  auto dir = tiny_model("overlap");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  // input_layernorm (64 bytes) moved onto the first 64 bytes of the embedding; the file shrinks
  // by 64 bytes so the data is still fully covered.
  const std::string ln = "model.layers.0.input_layernorm.weight";
  uint64_t b = h[ln]["data_offsets"][0];
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    uint64_t s = v["data_offsets"][0], e = v["data_offsets"][1];
    if (s > b) v["data_offsets"] = {s - 64, e - 64};
  }
  h[ln]["data_offsets"] = {0, 64};
  write_raw(st(dir), h.dump(), n - 64);
  expect_info_error(dir, {st(dir), "overlaps the previous tensor's data"});
}

TEST(CheckpointErrors, GapInData) {
  auto dir = tiny_model("gap");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  write_raw(st(dir), h.dump(), n + 16);  // 16 bytes no tensor owns
  expect_info_error(dir, {st(dir), "16 trailing bytes not owned by any tensor"});
}

TEST(CheckpointErrors, ShapeTimesDtypeNotByteLength) {
  auto dir = tiny_model("nbytes");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"]["shape"] = {15};
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "shape [15] x F32 needs 60 bytes but data_offsets span 64"});
}

TEST(CheckpointErrors, ShapeOverflow) {
  auto dir = tiny_model("shape-overflow");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"]["shape"] = {1ull << 40, 1ull << 40};
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "shape too large"});
}

TEST(CheckpointErrors, UnsupportedDtype) {
  auto dir = tiny_model("dtype", nullptr, [](std::vector<TSpec>& ts) { find_tensor(ts, "model.norm.weight")->dtype = "I64"; });
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "dtype I64 is not supported"});
}

TEST(CheckpointErrors, MissingDtype) {
  auto dir = tiny_model("no-dtype");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["model.norm.weight"].erase("dtype");
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "tensor 'model.norm.weight'", "missing dtype"});
}

TEST(CheckpointErrors, MetadataNotStrings) {
  auto dir = tiny_model("meta");
  uint64_t n = 0;
  json h = header_for(tiny_tensors(), &n);
  h["__metadata__"]["format"] = 3;
  write_raw(st(dir), h.dump(), n);
  expect_info_error(dir, {st(dir), "__metadata__.format is not a string"});
}

TEST(CheckpointErrors, MixedMatrixDtypes) {
  auto dir = tiny_model("mixed", nullptr, [](std::vector<TSpec>& ts) { find_tensor(ts, "mlp.up_proj.weight")->dtype = "BF16"; });
  expect_info_error(dir, {dir.string(), "tensor 'model.layers.0.mlp.up_proj.weight' is BF16 but the model is F32"});
}

// ---- tensor shapes against their roles -------------------------------------------------------

TEST(CheckpointErrors, QRowsNotMultipleOfHeadDim) {
  auto dir = tiny_model("q-rows", nullptr, [](std::vector<TSpec>& ts) {
    find_tensor(ts, "q_proj.weight")->shape = {30, 16};
    find_tensor(ts, "o_proj.weight")->shape = {16, 30};
  });
  expect_info_error(dir, {dir.string(), "tensor 'model.layers.0.self_attn.q_proj.weight' has 30 rows, not a positive multiple of head_dim 8"});
}

TEST(CheckpointErrors, OProjTransposed) {
  auto dir = tiny_model("o-transposed", nullptr, [](std::vector<TSpec>& ts) { find_tensor(ts, "o_proj.weight")->shape = {32, 16}; });
  expect_info_error(dir, {dir.string(), "tensor 'model.layers.0.self_attn.o_proj.weight' has shape [32, 16], expected [16, 32]"});
}

TEST(CheckpointErrors, KvHeadsNotDividingQueryHeads) {
  auto dir = tiny_model("kv-heads", nullptr, [](std::vector<TSpec>& ts) {
    find_tensor(ts, "k_proj.weight")->shape = {24, 16};
    find_tensor(ts, "v_proj.weight")->shape = {24, 16};
  });
  expect_info_error(dir, {dir.string(), "layer 0: 4 query heads are not a multiple of 3 KV heads"});
}

TEST(CheckpointErrors, VectorWhereMatrixExpected) {
  auto dir = tiny_model("gate-1d", nullptr, [](std::vector<TSpec>& ts) { find_tensor(ts, "gate_proj.weight")->shape = {384}; });
  expect_info_error(dir, {dir.string(), "tensor 'model.layers.0.mlp.gate_proj.weight' must be 2-D, has shape [384]"});
}

TEST(CheckpointErrors, EmbeddingVocabMismatch) {
  auto dir = tiny_model("embed", [](json& c) { c["vocab_size"] = 33; });
  expect_info_error(dir, {dir.string(), "tensor 'model.embed_tokens.weight' has shape [32, 16], expected [33, 16]"});
}

TEST(CheckpointErrors, DownProjWidthDisagreesWithGate) {
  auto dir = tiny_model("down", nullptr, [](std::vector<TSpec>& ts) { find_tensor(ts, "down_proj.weight")->shape = {16, 20}; });
  expect_info_error(dir, {dir.string(), "tensor 'model.layers.0.mlp.down_proj.weight' has shape [16, 20], expected [16, 24]"});
}

TEST(CheckpointErrors, MissingTensor) {
  auto dir = tiny_model("missing", nullptr, [](std::vector<TSpec>& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](const TSpec& t) { return t.name.find("down_proj") != std::string::npos; }), ts.end());
  });
  expect_info_error(dir, {dir.string(), "missing tensor 'model.layers.0.mlp.down_proj.weight'"});
}

TEST(CheckpointErrors, MissingLmHeadWhenUntied) {
  auto dir = tiny_model("untied", [](json& c) { c["tie_word_embeddings"] = false; });
  expect_info_error(dir, {dir.string(), "missing tensor 'lm_head.weight'"});
}

TEST(CheckpointErrors, UnexpectedExtraTensor) {
  auto dir = tiny_model("extra", nullptr, [](std::vector<TSpec>& ts) { ts.push_back({"model.layers.1.mlp.up_proj.weight", {24, 16}}); });
  expect_info_error(dir, {dir.string(), "unexpected tensor 'model.layers.1.mlp.up_proj.weight'"});
}

TEST(CheckpointErrors, MoreLayersInConfigThanTensors) {
  auto dir = tiny_model("layers", [](json& c) { c["num_hidden_layers"] = 2; });
  expect_info_error(dir, {dir.string(), "missing tensor 'model.layers.1.input_layernorm.weight'"});
}

// A config claiming a billion layers must fail on the first missing layer, not try to allocate
// a billion layer slots first (found while writing these tests; Model::from_tensors now grows
// the layer list as it finds each layer's tensors).
TEST(CheckpointErrors, HugeLayerCountFailsFast) {
  auto dir = tiny_model("layers-huge", [](json& c) { c["num_hidden_layers"] = 1 << 30; });
  expect_info_error(dir, {dir.string(), "missing tensor 'model.layers.1.input_layernorm.weight'"});
}

// ---- config.json -------------------------------------------------------------------------------

TEST(CheckpointErrors, ConfigMissing) {
  auto dir = tiny_model("cfg-missing");
  fs::remove(dir / "config.json");
  expect_info_error(dir, {cj(dir), "missing (not an HF model directory?)"});
}

TEST(CheckpointErrors, ConfigInvalidJson) {
  auto dir = tiny_model("cfg-json");
  write_text(dir / "config.json", "{\"model_type\": \"llama\", \"hidden_size\": 16,");
  expect_info_error(dir, {cj(dir), "not valid JSON"});
}

TEST(CheckpointErrors, ConfigNotAnObject) {
  auto dir = tiny_model("cfg-array");
  write_text(dir / "config.json", "[]");
  expect_info_error(dir, {cj(dir), "not a JSON object"});
}

TEST(CheckpointErrors, UnknownModelType) {
  auto dir = tiny_model("cfg-type", [](json& c) { c["model_type"] = "gpt2"; });
  expect_info_error(dir, {cj(dir), "model_type 'gpt2' is not supported (llama, mistral, qwen2, chatglm, phi3, glm, glm4 are)"});
}

TEST(CheckpointErrors, MissingModelType) {
  auto dir = tiny_model("cfg-no-type", [](json& c) { c.erase("model_type"); });
  expect_info_error(dir, {cj(dir), "missing field 'model_type'"});
}

TEST(CheckpointErrors, UnknownRopeScaling) {
  auto dir = tiny_model("cfg-rope", [](json& c) { c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; });
  expect_info_error(dir, {cj(dir), "rope_scaling type 'yarn' is not supported (linear, llama3 are)"});
}

TEST(CheckpointErrors, RopeScalingTypeNotAString) {
  auto dir = tiny_model("cfg-rope-num", [](json& c) { c["rope_scaling"] = {{"type", 2}, {"factor", 4.0}}; });
  expect_info_error(dir, {cj(dir), "rope_scaling.type must be a string"});
}

TEST(CheckpointErrors, RopeScalingFactorNotPositive) {
  auto dir = tiny_model("cfg-rope-factor", [](json& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 0}}; });
  expect_info_error(dir, {cj(dir), "rope_scaling.factor must be positive"});
}

TEST(CheckpointErrors, MissingHiddenSize) {
  auto dir = tiny_model("cfg-hidden", [](json& c) { c.erase("hidden_size"); });
  expect_info_error(dir, {cj(dir), "missing field 'hidden_size'"});
}

TEST(CheckpointErrors, HiddenSizeNotAnInteger) {
  auto dir = tiny_model("cfg-hidden-str", [](json& c) { c["hidden_size"] = "16"; });
  expect_info_error(dir, {cj(dir), "field 'hidden_size' must be a non-negative integer"});
}

TEST(CheckpointErrors, HeadsNotMultipleOfKvHeads) {
  auto dir = tiny_model("cfg-kv", [](json& c) { c["num_key_value_heads"] = 3; });
  expect_info_error(dir, {cj(dir), "num_attention_heads must be a multiple of num_key_value_heads"});
}

TEST(CheckpointErrors, OddHeadDim) {
  auto dir = tiny_model("cfg-hd", [](json& c) { c["head_dim"] = 7; });
  expect_info_error(dir, {cj(dir), "head_dim must be a positive even number"});
}

TEST(CheckpointErrors, UnsupportedActivation) {
  auto dir = tiny_model("cfg-act", [](json& c) { c["hidden_act"] = "gelu"; });
  expect_info_error(dir, {cj(dir), "hidden_act 'gelu' is not supported"});
}

TEST(CheckpointErrors, EosTokenIdNotAnInteger) {
  auto dir = tiny_model("cfg-eos", [](json& c) { c["eos_token_id"] = {"</s>"}; });
  expect_info_error(dir, {cj(dir), "eos_token_id"});
}

TEST(CheckpointErrors, SlidingWindowFlagNotABool) {
  auto dir = tiny_model("cfg-sw", [](json& c) {
    c["model_type"] = "mistral";
    c["sliding_window"] = 4096;
    c["use_sliding_window"] = "yes";
  });
  expect_info_error(dir, {cj(dir), "use_sliding_window"});
}

// ---- sharded checkpoints ----------------------------------------------------------------------

// Two shards: the embedding alone in shard 1, everything else in shard 2.
fs::path sharded_model(const std::string& tag, json* index_out = nullptr) {
  fs::path dir = test::temp_dir(tag);
  write_json(dir / "config.json", tiny_config());
  auto ts = tiny_tensors();
  std::vector<TSpec> a(ts.begin(), ts.begin() + 1), b(ts.begin() + 1, ts.end());
  write_safetensors(dir / "model-00001-of-00002.safetensors", a);
  write_safetensors(dir / "model-00002-of-00002.safetensors", b);
  json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (auto& t : a) idx["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (auto& t : b) idx["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", idx);
  if (index_out) *index_out = idx;
  return dir;
}

std::string ix(const fs::path& dir) { return (dir / "model.safetensors.index.json").string(); }

TEST(CheckpointErrors, ShardedModelLoads) {
  auto dir = sharded_model("sharded-ok");
  auto r = test::run_cli("info --json " + q(dir));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["params"]["total"], 32 * 16 + 16 + 32 * 16 + 16 * 16 * 2 + 16 * 32 + 16 + 24 * 16 * 3 + 16);
}

TEST(CheckpointErrors, IndexPointsToMissingShard) {
  auto dir = sharded_model("shard-missing");
  fs::remove(dir / "model-00002-of-00002.safetensors");
  expect_info_error(dir, {(dir / "model-00002-of-00002.safetensors").string(), "shard named by the index is missing"});
}

TEST(CheckpointErrors, IndexListsAbsentTensor) {
  json idx;
  auto dir = sharded_model("shard-absent", &idx);
  idx["weight_map"]["model.layers.0.self_attn.q_norm.weight"] = "model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {(dir / "model-00002-of-00002.safetensors").string(),
                          "tensor 'model.layers.0.self_attn.q_norm.weight' listed in the index is missing"});
}

TEST(CheckpointErrors, ShardHoldsTensorNotInIndex) {
  json idx;
  auto dir = sharded_model("shard-unlisted", &idx);
  idx["weight_map"].erase("model.norm.weight");
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {(dir / "model-00002-of-00002.safetensors").string(),
                          "tensor 'model.norm.weight' is not listed for this shard"});
}

TEST(CheckpointErrors, TensorInTwoShards) {
  auto dir = sharded_model("shard-dup");
  auto ts = tiny_tensors();
  std::vector<TSpec> a = {ts[0], ts.back()};  // model.norm.weight also in shard 1
  write_safetensors(dir / "model-00001-of-00002.safetensors", a);
  // The index maps each name to one shard, so the copy in the other shard is the one reported.
  expect_info_error(dir, {(dir / "model-00001-of-00002.safetensors").string(),
                          "tensor 'model.norm.weight' is not listed for this shard"});
}

TEST(CheckpointErrors, ShardNameWithParentDir) {
  json idx;
  auto dir = sharded_model("shard-dotdot", &idx);
  idx["weight_map"]["model.norm.weight"] = "../model-00002-of-00002.safetensors";
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {ix(dir), "weight_map.model.norm.weight", "shard name '../model-00002-of-00002.safetensors' must be a plain file name"});
}

TEST(CheckpointErrors, ShardNameAbsolute) {
  json idx;
  auto dir = sharded_model("shard-abs", &idx);
  idx["weight_map"]["model.norm.weight"] = "/etc/passwd";
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {ix(dir), "shard name '/etc/passwd' must be a plain file name"});
}

TEST(CheckpointErrors, ShardNameIsTheDirectoryItself) {
  json idx;
  auto dir = sharded_model("shard-dot", &idx);
  idx["weight_map"]["model.norm.weight"] = ".";
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {ix(dir), "shard name '.' must be a plain file name"});
}

TEST(CheckpointErrors, IndexNotJson) {
  auto dir = sharded_model("index-json");
  write_text(dir / "model.safetensors.index.json", "{\"weight_map\": ");
  expect_info_error(dir, {ix(dir), "not valid JSON"});
}

TEST(CheckpointErrors, IndexWithoutWeightMap) {
  auto dir = sharded_model("index-no-map");
  write_json(dir / "model.safetensors.index.json", {{"metadata", json::object()}});
  expect_info_error(dir, {ix(dir), "missing weight_map"});
}

TEST(CheckpointErrors, IndexShardNotAString) {
  json idx;
  auto dir = sharded_model("index-num", &idx);
  idx["weight_map"]["model.norm.weight"] = 2;
  write_json(dir / "model.safetensors.index.json", idx);
  expect_info_error(dir, {ix(dir), "weight_map.model.norm.weight is not a file name"});
}

TEST(CheckpointErrors, NoWeightsAtAll) {
  auto dir = tiny_model("no-weights");
  fs::remove(dir / "model.safetensors");
  expect_info_error(dir, {dir.string(), "no model.safetensors or model.safetensors.index.json"});
}

TEST(CheckpointErrors, WeightsFileIsADirectory) {
  auto dir = tiny_model("st-dir");
  fs::remove(dir / "model.safetensors");
  fs::create_directory(dir / "model.safetensors");
  expect_info_error(dir, {st(dir), "not a regular file"});
}

// ---- other inputs -----------------------------------------------------------------------------

TEST(CheckpointErrors, ModelPathMissing) {
  auto dir = test::temp_dir("nothing");
  expect_info_error(dir / "nope", {(dir / "nope").string(), "no such file or directory"});
}

TEST(CheckpointErrors, ModelPathIsAPlainFile) {
  auto dir = tiny_model("plain");
  expect_info_error(dir / "config.json", {cj(dir), "expected a model directory"});
}

TEST(CheckpointErrors, GarbageGguf) {
  auto dir = test::temp_dir("gguf");
  write_text(dir / "m.gguf", "GGUF\x03\x00\x00\x00garbage");
  expect_info_error(dir / "m.gguf", {(dir / "m.gguf").string()});
}

// A directory an interrupted run left under its temporary name (docs/robustness.md).
TEST(CheckpointErrors, IncompleteOutputOfAnInterruptedRun) {
  auto dir = tiny_model("x.tmp-12345");
  write_text(dir / ".llmprune-incomplete", dir.filename().string() + "\n");
  expect_info_error(dir, {dir.string(), "incomplete output of an interrupted llmprune run (delete it)"});
}

TEST(CheckpointErrors, CorruptTokenizerModel) {
  auto src = test::fixture_model("kjv-llama-gqa-tied");
  if (!fs::exists(src)) GTEST_SKIP() << "fixture missing";
  auto dir = test::temp_dir("tok");
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json"}) fs::create_symlink(src / f, dir / f);
  write_text(dir / "tokenizer.model", std::string("\x0a\x05hello\xff\xff\xff", 10));
  auto txt = dir / "t.txt";
  write_text(txt, "In the beginning\n");
  auto r = test::run_cli("eval " + q(dir) + " --ppl " + q(txt));
  expect_user_error(r, {(dir / "tokenizer.model").string(), "not a SentencePiece model"});
}

// ---- usage errors -----------------------------------------------------------------------------

class UsageErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = test::fixture_model("kjv-llama-gqa-tied");
    text_ = test::fixture_text("kjv.valid.txt");
    if (!fs::exists(model_) || !fs::exists(text_)) GTEST_SKIP() << "fixtures missing";
  }
  std::string eval(const std::string& extra) { return "eval " + q(model_) + " --ppl " + q(text_) + " " + extra; }
  std::string prune(const std::string& extra) {
    out_ = test::temp_dir("out") / "pruned";
    return "prune " + q(model_) + " --out " + q(out_) + " " + extra;
  }
  fs::path model_, text_, out_;
};

TEST_F(UsageErrors, SeqLenZero) { expect_user_error(test::run_cli(eval("--seq-len 0")), {"--seq-len must be at least 2"}); }

TEST_F(UsageErrors, SeqLenNotANumber) { expect_user_error(test::run_cli(eval("--seq-len abc")), {"--seq-len", "(see --help)"}); }

TEST_F(UsageErrors, SeqLenBeyondContext) {
  expect_user_error(test::run_cli(eval("--seq-len 4096")), {"--seq-len 4096 exceeds the context", "2048"});
}

TEST_F(UsageErrors, StrideBeyondSeqLen) {
  expect_user_error(test::run_cli(eval("--seq-len 128 --stride 500")), {"--stride must be in [1, --seq-len]"});
}

TEST_F(UsageErrors, NegativeStride) { expect_user_error(test::run_cli(eval("--stride -1")), {"--stride must be in [1, --seq-len]"}); }

TEST_F(UsageErrors, BatchZero) { expect_user_error(test::run_cli(eval("--batch 0")), {"--batch must be positive"}); }

TEST_F(UsageErrors, MaxWindowsNegative) {
  expect_user_error(test::run_cli(eval("--max-windows -1")), {"--max-windows must not be negative"});
}

TEST_F(UsageErrors, PplTextShorterThanOneWindow) {
  auto dir = test::temp_dir("short");
  auto txt = dir / "short.txt";
  std::ofstream(txt) << "In the beginning";
  expect_user_error(test::run_cli("eval " + q(model_) + " --ppl " + q(txt) + " --seq-len 128"),
                    {txt.string() + ": has ", "fewer than one window of --seq-len 128"});
}

TEST_F(UsageErrors, NothingToEvaluate) {
  expect_user_error(test::run_cli("eval " + q(model_)), {"nothing to evaluate"});
}

TEST_F(UsageErrors, MissingTextFile) {
  auto missing = test::temp_dir("m") / "missing.txt";
  expect_user_error(test::run_cli("eval " + q(model_) + " --ppl " + q(missing)), {missing.string()});
}

TEST_F(UsageErrors, MissingModel) {
  auto missing = test::temp_dir("m") / "no-model";
  expect_user_error(test::run_cli("eval " + q(missing) + " --ppl " + q(text_)), {missing.string(), "no such file or directory"});
}

TEST_F(UsageErrors, PruneRatioOutsideZeroToOne) {
  expect_user_error(test::run_cli(prune("--ratio -1 --importance l1")), {"--ratio must be in [0, 1)"});
  expect_user_error(test::run_cli(prune("--attn-ratio 1 --importance l1")), {"--attn-ratio must be in [0, 1)"});
  EXPECT_FALSE(fs::exists(out_));
}

TEST_F(UsageErrors, PruneLayerRangeOutsideTheModel) {
  expect_user_error(test::run_cli(prune("--ratio 0.2 --mlp-layers 2:9 --importance l1")),
                    {"--mlp-layers 2:9 is outside the model's 6 layers (0-based, end-exclusive)"});
}

TEST_F(UsageErrors, PruneCalibSamplesNotPositive) {
  expect_user_error(test::run_cli(prune("--ratio 0.2 --calib " + q(text_) + " --calib-samples 0")), {"--calib-samples must be positive"});
}

TEST_F(UsageErrors, PruneCalibSeqLenBeyondContext) {
  expect_user_error(test::run_cli(prune("--ratio 0.2 --calib " + q(text_) + " --calib-seq-len 4096")),
                    {"--calib-seq-len 4096 exceeds the model's context of 2048"});
}

TEST_F(UsageErrors, PruneCalibrationTextTooShort) {
  auto txt = test::temp_dir("short") / "short.txt";
  write_text(txt, "In the beginning God created the heaven and the earth.\n");
  expect_user_error(test::run_cli(prune("--ratio 0.2 --calib " + q(txt))),
                    {txt.string(), "tokens, fewer than --calib-samples x --calib-seq-len = 640"});
}

TEST_F(UsageErrors, PruneMaxMemoryTooSmall) {
  expect_user_error(test::run_cli(prune("--ratio 0.2 --calib " + q(text_) + " --max-memory 10M")),
                    {"estimated peak memory", "exceeds --max-memory 10M", "lower --calib-samples / --calib-seq-len or raise the budget"});
}

TEST_F(UsageErrors, OutputExistsWithoutForce) {
  const std::string cmd = prune("--ratio 0.2 --importance l1");
  fs::create_directories(out_);
  expect_user_error(test::run_cli(cmd), {out_.string() + ": output already exists (use --force to replace it)"});
  auto gguf = out_.parent_path() / "m.gguf";
  write_text(gguf, "GGUF");
  expect_user_error(test::run_cli("export " + q(model_) + " --gguf " + q(gguf)),
                    {gguf.string() + ": output already exists (use --force to replace it)"});
  expect_user_error(test::run_cli("export " + q(model_) + " --hf " + q(out_)), {out_.string() + ": output already exists"});
}

// A model whose weights hold NaN: the importance pass stops on the non-finite calibration loss
// (exit 1, a runtime failure) and writes nothing.
TEST_F(UsageErrors, NonFiniteCalibrationLoss) {
  auto dir = test::temp_dir("nan-model");
  for (const char* f : {"config.json", "tokenizer.model"}) fs::copy_file(model_ / f, dir / f);
  std::string bytes;
  {
    std::ifstream in(model_ / "model.safetensors", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  json h = json::parse(bytes.substr(8, hlen));
  uint64_t b = h["model.norm.weight"]["data_offsets"][0], e = h["model.norm.weight"]["data_offsets"][1];
  std::fill(bytes.begin() + long(8 + hlen + b), bytes.begin() + long(8 + hlen + e), '\xff');  // F32 NaN
  write_text(dir / "model.safetensors", bytes);
  expect_error(test::run_cli("prune " + q(dir) + " --out " + q(dir / "out") + " --ratio 0.2 --calib " + q(text_) +
                             " --calib-samples 2 --calib-seq-len 16"),
               1, {dir.string() + ": calibration loss is not finite (NaN/Inf)"});
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST_F(UsageErrors, UnknownSubcommandOption) {
  expect_user_error(test::run_cli("info " + q(model_) + " --bogus"), {"--bogus", "(see --help)"});
}

}  // namespace
}  // namespace llmprune
