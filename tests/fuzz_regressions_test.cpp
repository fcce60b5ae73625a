// Inputs that crashed a libFuzzer target (fuzz/), kept under tests/data/fuzz/<target>/ and run
// through the same public entry points the CLI uses. Each must be rejected with a UserError that
// names the file (exit 2), never another exception or a sanitizer report. docs/robustness.md
// lists them.
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "eval/tasks.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;

fs::path data_dir(const std::string& target) { return test::source_dir() / "tests/data/fuzz" / target; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> inputs(const std::string& target) {
  std::vector<fs::path> out;
  if (fs::is_directory(data_dir(target)))
    for (auto& e : fs::directory_iterator(data_dir(target)))
      if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The two-shard tiny model of fuzz/index_fuzz.cpp.
fs::path two_shard_model(const std::string& tag) {
  fs::path d = test::temp_dir(tag);
  auto add = [](SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape) {
    w.add(name, DType::F32, shape, [shape](void* dst) {
      size_t n = 1;
      for (auto s : shape) n *= size_t(s);
      std::memset(dst, 0, n * 4);
    });
  };
  SafetensorsWriter a, b;
  add(a, "model.embed_tokens.weight", {32, 16});
  const std::string p = "model.layers.0.";
  add(b, p + "input_layernorm.weight", {16});
  add(b, p + "self_attn.q_proj.weight", {32, 16});
  add(b, p + "self_attn.k_proj.weight", {16, 16});
  add(b, p + "self_attn.v_proj.weight", {16, 16});
  add(b, p + "self_attn.o_proj.weight", {16, 32});
  add(b, p + "post_attention_layernorm.weight", {16});
  add(b, p + "mlp.gate_proj.weight", {24, 16});
  add(b, p + "mlp.up_proj.weight", {24, 16});
  add(b, p + "mlp.down_proj.weight", {16, 24});
  add(b, "model.norm.weight", {16});
  a.write(d / "model-00001-of-00002.safetensors");
  b.write(d / "model-00002-of-00002.safetensors");
  return d;
}

// Runs fn and expects a UserError whose message contains `needle` (no other exception type).
template <class Fn>
void expect_user_error(Fn&& fn, const std::string& needle, const std::string& input) {
  try {
    fn();
    ADD_FAILURE() << input << ": accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << input << ": " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << input << ": " << typeid(e).name() << " instead of UserError: " << e.what();
  }
}

// fuzz_index: a weight_map shard name longer than NAME_MAX made fs::exists throw
// std::filesystem::filesystem_error ("File name too long") out of load_checkpoint_tensors, which
// the CLI reported as an internal error with exit 1.
TEST(FuzzRegressions, IndexShardNameTooLong) {
  auto files = inputs("index");
  ASSERT_FALSE(files.empty());
  for (auto& f : files) {
    auto dir = two_shard_model("index");
    fs::copy_file(f, dir / "model.safetensors.index.json");
    expect_user_error([&] { load_checkpoint_tensors(dir); }, "shard named by the index is missing", f.filename().string());
  }
}

TEST(FuzzRegressions, IndexShardNameTooLongThroughCli) {
  auto dir = two_shard_model("index-cli");
  nlohmann::json cfg = {{"model_type", "llama"}, {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 1},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"vocab_size", 32},
                        {"tie_word_embeddings", true}};
  std::ofstream(dir / "config.json") << cfg.dump();
  fs::copy_file(data_dir("index") / "shard-name-too-long.json", dir / "model.safetensors.index.json");
  auto r = test::run_cli("info '" + dir.string() + "'");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("llmprune: error: " + dir.string() + "/model-00001-of-00002.safetensors7777", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("shard named by the index is missing"), std::string::npos) << r.err;
}

// A model path too long to stat: same filesystem_error, from Model::load's first check.
TEST(FuzzRegressions, ModelPathTooLong) {
  std::string long_name(5000, 'a');
  auto r = test::run_cli("info " + long_name);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot access: File name too long"), std::string::npos) << r.err;
}

// fuzz_sentencepiece:
//  darts-zero-length-key.model: a piece list that yields an empty key made libsentencepiece's
//    darts-clone trie builder throw Darts::Details::Exception (not a std::runtime_error) out of
//    SentencePieceProcessor::Load; the wrapper now turns it into a UserError naming the file.
//  encode-not-consumed.model: loads, but Encode fails ("all normalized characters are not
//    consumed"); that was a RuntimeError without the file (exit 1), now a UserError naming it.
TEST(FuzzRegressions, SentencePieceLoaderExceptions) {
  auto files = inputs("sentencepiece");
  ASSERT_GE(files.size(), 2u);
  for (auto& f : files)
    expect_user_error(
        [&] {
          auto tok = load_sentencepiece(f);
          tok->decode(tok->encode("In the beginning God created the heaven and the earth. 1234 \xc3\xa9t\xc3\xa9 \xe2\x96\x81<s>"));
        },
        f.string() + ": ", f.filename().string());
}

// fuzz_tasks: a JSON number too large for a double ("...e95628") is nlohmann's out_of_range, not
// its parse_error, and escaped read_jsonl's catch (exit 1, no file or line). The input's first
// byte selects the layout in fuzz/tasks_fuzz.cpp; 8 is openbookqa/test.jsonl.
TEST(FuzzRegressions, TaskJsonNumberOverflow) {
  std::string s = slurp(data_dir("tasks") / "obqa-number-overflow.bin");
  ASSERT_FALSE(s.empty());
  ASSERT_EQ(uint8_t(s[0]) % 11, 8);
  auto root = test::temp_dir("tasks");
  fs::create_directories(root / "openbookqa");
  std::ofstream(root / "openbookqa" / "test.jsonl", std::ios::binary) << s.substr(1);
  expect_user_error([&] { load_task("openbookqa", root); }, (root / "openbookqa" / "test.jsonl").string() + ":1: invalid JSON",
                    "obqa-number-overflow.bin");
}

// fuzz_tokenizer_json: model.vocab ids were read with get<int32_t>() after a ">= 0" check on the
// int64 value, so 14444444444444438 wrapped to a large positive id (a 5 GB table: out of memory)
// and 4294967295 to -1 (a write before the start of the id table). Ids are now bounded.
TEST(FuzzRegressions, TokenizerJsonVocabIdOutOfRange) {
  auto files = inputs("tokenizer_json");
  ASSERT_GE(files.size(), 2u);
  for (auto& f : files)
    expect_user_error([&] { load_hf_tokenizer_json(f); }, "is not an id in [0, 16777216)", f.filename().string());
}

// fuzz_gguf: a q/k tensor with 0 rows counts as "whole heads" (0 % head_dim == 0), and the row
// size for the rope permutation was then n_bytes / 0: SIGFPE, or UBSan's division by zero.
TEST(FuzzRegressions, GgufRopeTensorWithZeroRows) {
  const fs::path f = data_dir("gguf") / "rope-tensor-zero-rows.gguf";
  ASSERT_TRUE(fs::exists(f));
  expect_user_error([&] { load_gguf_model(f); }, f.string() + ": tensor '", f.filename().string());
  expect_user_error([&] { load_gguf_model(f); }, "has an empty dimension (0)", f.filename().string());
}

// fuzz_gguf, the next round: a q/k tensor with 0 columns has 0 bytes and no data pointer, and the
// rope permutation passed that null to memcpy (UBSan: null pointer passed as argument 2).
TEST(FuzzRegressions, GgufRopeTensorWithZeroColumns) {
  const fs::path f = data_dir("gguf") / "rope-tensor-zero-columns.gguf";
  ASSERT_TRUE(fs::exists(f));
  expect_user_error([&] { load_gguf_model(f); }, f.string() + ": tensor '", f.filename().string());
  expect_user_error([&] { load_gguf_model(f); }, "has an empty dimension (0)", f.filename().string());
}

// fuzz_gguf: general.alignment = 1 is a power of two (llama.cpp accepts it) and leaves F16 data
// at odd offsets; read_f32 loaded uint16_t through a misaligned pointer (UBSan, under make
// test-asan). Now it converts from an aligned copy: same values, and at least one tensor of this
// input is misaligned so that the path is taken.
TEST(FuzzRegressions, GgufMisalignedTensorData) {
  const std::string s = slurp(data_dir("gguf") / "f16-data-misaligned.gguf");
  ASSERT_FALSE(s.empty());
  // A buffer aligned like a mapping, so that only the file's offsets decide the alignment.
  std::vector<uint64_t> mem((s.size() + 7) / 8);
  std::memcpy(mem.data(), s.data(), s.size());
  auto f = gguf::GGUFFile::from_memory(reinterpret_cast<const uint8_t*>(mem.data()), s.size(), "f16-data-misaligned.gguf");
  int misaligned = 0;
  for (auto& t : f.tensors()) {
    DType dt;
    if (!gguf::dtype_of(t.ggml_type, &dt) || t.n_elements == 0) continue;
    auto bytes = f.tensor_bytes(t);
    if (reinterpret_cast<uintptr_t>(bytes.data()) % dtype_size(dt) != 0) misaligned++;
    std::vector<float> got(size_t(t.n_elements)), want(size_t(t.n_elements));
    f.read_f32(t, got.data());
    for (size_t i = 0; i < want.size(); i++) {
      if (dt == DType::F32) {
        std::memcpy(&want[i], bytes.data() + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        want[i] = dt == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    }
    EXPECT_EQ(std::memcmp(got.data(), want.data(), 4 * want.size()), 0) << t.name;
  }
  EXPECT_GT(misaligned, 0);
}

// Every committed crash input of the in-memory targets must be rejected without a crash.
TEST(FuzzRegressions, InMemoryParsersRejectCleanly) {
  for (auto& f : inputs("safetensors")) {
    std::string s = slurp(f);
    try {
      parse_safetensors(reinterpret_cast<const uint8_t*>(s.data()), s.size(), f.string());
    } catch (const UserError&) {
    }
  }
  for (auto& f : inputs("gguf")) {
    std::string s = slurp(f);
    try {
      gguf::parse_gguf_buffer(reinterpret_cast<const uint8_t*>(s.data()), s.size(), f.string());
    } catch (const UserError&) {
    }
  }
  for (auto& f : inputs("config")) {
    auto j = nlohmann::json::parse(slurp(f), nullptr, false);
    if (j.is_discarded()) continue;
    try {
      ModelConfig::from_json(j, f.string());
    } catch (const UserError&) {
    }
  }
}

}  // namespace
}  // namespace llmprune
