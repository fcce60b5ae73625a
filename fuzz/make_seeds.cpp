// Writes the generated part of the seed corpora (fuzz/corpus/<target>/gen-*): tiny safetensors
// images of the model the safetensors/index targets expect, and small GGUF files covering every
// metadata type. Run once by hand after changing it: build-fuzz/fuzz/make_fuzz_seeds fuzz/corpus
// (the outputs are committed; the rest of the corpus is hand-written or cut from the fixtures).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/gguf_model.h"
#include "model/model.h"

using namespace llmprune;
namespace fs = std::filesystem;

namespace {

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
};

std::vector<Spec> tiny(int heads, int kv_heads, int ff) {
  const int C = 16, D = 8, V = 32;
  const std::string p = "model.layers.0.";
  return {{"model.embed_tokens.weight", {V, C}},
          {p + "input_layernorm.weight", {C}},
          {p + "self_attn.q_proj.weight", {heads * D, C}},
          {p + "self_attn.k_proj.weight", {kv_heads * D, C}},
          {p + "self_attn.v_proj.weight", {kv_heads * D, C}},
          {p + "self_attn.o_proj.weight", {C, heads * D}},
          {p + "post_attention_layernorm.weight", {C}},
          {p + "mlp.gate_proj.weight", {ff, C}},
          {p + "mlp.up_proj.weight", {ff, C}},
          {p + "mlp.down_proj.weight", {C, ff}},
          {"model.norm.weight", {C}}};
}

void write_st(const fs::path& path, const std::vector<Spec>& specs, DType dt, bool metadata) {
  SafetensorsWriter w;
  if (metadata) w.set_metadata("format", "pt");
  int seed = 0;
  for (auto& s : specs) {
    seed++;
    w.add(s.name, dt, s.shape, [s, dt, seed](void* dst) {
      size_t n = 1;
      for (auto d : s.shape) n *= size_t(d);
      std::vector<float> v(n);
      for (size_t i = 0; i < n; i++) v[i] = 0.05f * std::sin(float(i * 7 + size_t(seed)));
      from_f32(dt, v.data(), dst, n);
    });
  }
  w.write(path);
}

void write_gguf(const fs::path& path, bool with_metadata) {
  using namespace gguf;
  GGUFWriter w(path.string());
  w.set("general.architecture", Value("llama"));
  w.set("general.name", Value("fuzz-seed"));
  w.set("llama.block_count", Value(uint32_t(1)));
  w.set("llama.embedding_length", Value(uint32_t(16)));
  w.set("llama.rope.freq_base", Value(10000.0f));
  if (with_metadata) {
    w.set("t.u8", Value(uint8_t(255)));
    w.set("t.i8", Value(int8_t(-128)));
    w.set("t.u16", Value(uint16_t(65535)));
    w.set("t.i16", Value(int16_t(-32768)));
    w.set("t.i32", Value(int32_t(-2000000000)));
    w.set("t.bool", Value(true));
    w.set("t.u64", Value(std::numeric_limits<uint64_t>::max()));
    w.set("t.i64", Value(std::numeric_limits<int64_t>::min()));
    w.set("t.f64", Value(3.141592653589793));
    w.set("tokenizer.ggml.model", Value("llama"));
    w.set("tokenizer.ggml.bos_token_id", Value(uint32_t(1)));
    w.set("tokenizer.ggml.eos_token_id", Value(uint32_t(2)));
    // A usable SentencePiece-style vocabulary: specials, the 256 byte pieces, a few words.
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    char buf[8];
    for (int b = 0; b < 256; b++) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      tokens.push_back(buf), scores.push_back(0), types.push_back(6);
    }
    for (const char* w : {"\xe2\x96\x81", "\xe2\x96\x81t", "\xe2\x96\x81th", "\xe2\x96\x81the", "e", "h", "t"})
      tokens.push_back(w), scores.push_back(-float(tokens.size())), types.push_back(1);
    w.set("tokenizer.ggml.tokens", Value::array_of(tokens));
    w.set("tokenizer.ggml.scores", Value::array_of(scores));
    w.set("tokenizer.ggml.token_type", Value::array_of(types));
    w.set("a.u64", Value::array_of(std::vector<uint64_t>{0, uint64_t(1) << 63}));
    w.set("a.nested", Value::array(ValueType::Array, {Value::array_of(std::vector<std::string>{"x", "yy"}),
                                                       Value::array_of(std::vector<std::string>{})}));
  }
  auto pattern = [](std::vector<uint64_t> dims, DType dt) {
    return [dims, dt](std::span<uint8_t> out) {
      size_t n = out.size() / dtype_size(dt);
      std::vector<float> v(n);
      for (size_t i = 0; i < n; i++) v[i] = 0.01f * float(i % 13);
      if (n) from_f32(dt, v.data(), out.data(), n);
    };
  };
  w.add_tensor(gguf::TensorToWrite::make("token_embd.weight", {16, 4}, DType::F32, pattern({16, 4}, DType::F32)));
  w.add_tensor(gguf::TensorToWrite::make("blk.0.attn_q.weight", {16, 2}, DType::F16, pattern({16, 2}, DType::F16)));
  w.add_tensor(gguf::TensorToWrite::make("output_norm.weight", {16}, DType::BF16, pattern({16}, DType::BF16)));
  // A quantised tensor (raw bytes): one Q4_0 block of 32 values is 18 bytes.
  w.add_tensor(gguf::TensorToWrite{"blk.0.ffn_up.weight", {32, 1}, uint32_t(GGMLType::Q4_0),
                                   [](std::span<uint8_t> out) { std::memset(out.data(), 0x11, out.size()); }});
  w.finish();
}

// The tiny model of write_st as a GGUF file, through the exporter (a real-world layout).
void write_model_gguf(const fs::path& path, const std::vector<Spec>& specs) {
  fs::path tmp = path;
  tmp += ".st";
  write_st(tmp, specs, DType::F32, false);
  auto file = SafetensorsFile::open(tmp);
  ModelConfig cfg = ModelConfig::from_json(
      {{"model_type", "llama"}, {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 1},
       {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"vocab_size", 32},
       {"max_position_embeddings", 64}, {"tie_word_embeddings", true}},
      "seed/config.json");
  Model m = Model::from_tensors(cfg, file.tensors, "seed");
  export_gguf(m, nullptr, path, DType::F32);
  fs::remove(tmp);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds CORPUS_DIR (fuzz/corpus)\n");
    return 2;
  }
  fs::path out = argv[1];
  fs::create_directories(out / "safetensors");
  fs::create_directories(out / "gguf");
  write_st(out / "safetensors" / "gen-tiny-f32.safetensors", tiny(4, 2, 24), DType::F32, true);
  write_st(out / "safetensors" / "gen-tiny-bf16-mha.safetensors", tiny(2, 2, 8), DType::BF16, false);
  write_st(out / "safetensors" / "gen-tiny-f16-mqa.safetensors", tiny(4, 1, 4), DType::F16, true);
  write_st(out / "safetensors" / "gen-one-tensor.safetensors", {{"model.norm.weight", {16}}}, DType::F32, true);
  write_gguf(out / "gguf" / "gen-small.gguf", false);
  write_gguf(out / "gguf" / "gen-all-types.gguf", true);
  write_model_gguf(out / "gguf" / "gen-tiny-model.gguf", tiny(4, 2, 24));
  std::printf("seeds written under %s\n", out.c_str());
  return 0;
}
