// config.json text -> ModelConfig::from_json (every field's type and range checks), then the
// derived values the rest of the program computes from a config: RoPE tables and to_json().
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"

using namespace llmprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // ModelConfig::load reports "not valid JSON" itself
  try {
    ModelConfig c = ModelConfig::from_json(j, "fuzz/config.json");
    if (c.head_dim <= 4096) rope_inv_freq(c, c.head_dim);
    c.to_json().dump();
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
