// safetensors image -> parse_safetensors (header, offsets, dtypes, coverage of the data section),
// then, when it parses, Model::from_tensors against a fixed tiny config (role shapes, per-layer
// sizes) and, when that accepts it, one forward pass (validation must make the forward safe).
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/model.h"

using namespace llmprune;

namespace {

// Same as tests/checkpoint_errors_test.cpp's tiny model; the seeds hold its tensors.
const ModelConfig& tiny_config() {
  static const ModelConfig c = ModelConfig::from_json(
      {{"model_type", "llama"}, {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 1},
       {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}, {"vocab_size", 32},
       {"max_position_embeddings", 64}, {"tie_word_embeddings", true}},
      "fuzz/config.json");
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsFile f;
  try {
    f = parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const UserError& e) {
    fuzz::rejected(e);
    return 0;
  }
  for (auto& [name, t] : f.tensors) fuzz::touch(t.data, t.nbytes());
  try {
    Model m = Model::from_tensors(tiny_config(), f.tensors, "fuzz");
    count_params(m);
    // Unaligned views (parse_safetensors keeps them; SafetensorsFile::open copies) are copied here
    // the same way before computing.
    m.for_each_tensor_mut([](const std::string&, Tensor& t) {
      if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
        Tensor c = Tensor::zeros(t.dtype, t.shape);
        std::memcpy(c.data, t.data, t.nbytes());
        t = std::move(c);
      }
    });
    Runner r(m, 8);
    std::vector<int32_t> tokens = {1, 5, 31, 0};
    std::vector<float> logits(tokens.size() * size_t(m.cfg.vocab));
    r.forward(tokens.data(), 1, int(tokens.size()), logits.data());
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
