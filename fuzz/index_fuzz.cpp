// model.safetensors.index.json text -> load_checkpoint_tensors over a scratch directory that
// holds a valid two-shard tiny model (shard names, weight_map consistency, missing/duplicate
// tensors), then Model::from_tensors on what it returns.
#include <cstring>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"

using namespace llmprune;
namespace fs = std::filesystem;

namespace {

const ModelConfig& tiny_config() {
  static const ModelConfig c = ModelConfig::from_json(
      {{"model_type", "llama"}, {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 1},
       {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"vocab_size", 32},
       {"max_position_embeddings", 64}, {"tie_word_embeddings", true}},
      "fuzz/config.json");
  return c;
}

// The scratch model directory, with its two shards written once per process.
const fs::path& model_dir() {
  static const fs::path dir = [] {
    fs::path d = fuzz::scratch_dir() / "model";
    fs::create_directories(d);
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
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = model_dir();
  fuzz::write_file(dir / "model.safetensors.index.json", data, size);
  try {
    auto tensors = load_checkpoint_tensors(dir);
    Model::from_tensors(tiny_config(), std::move(tensors), dir.string());
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
