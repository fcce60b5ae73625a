#pragma once
// transformers remote code for ragged models (docs/export.md, "Loading in transformers"): the
// Python sources in src/model/hf_code/, embedded at build time, are written beside the weights of
// every ragged model whose family has them, and config.json's auto_map names their classes, so
// AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) builds per-layer sizes.
// Uniform models keep the plain config: transformers' own classes load them (ChatGLM, which
// transformers has no class for, gets the code uniform or not).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "arch/arch.h"
#include "model/config.h"

namespace llmprune {

struct HfCodeFile {
  const char* name;       // file name beside the weights
  std::string_view text;  // Python source
};
const std::vector<HfCodeFile>& hf_code_files();

// Sets config.json's auto_map entries for a ragged model of a family with remote code (and for
// every model of a family transformers has no class for: ArchDesc::hf_remote_always), replacing
// the input's AutoConfig / AutoModel* entries, and removes llmprune's entries otherwise (other
// auto_map entries are kept). Returns whether the hf_code_files() must be written beside the weights.
bool set_hf_auto_map(nlohmann::json& config_json, const ModelConfig& c, const ArchDesc& a);

// Writes hf_code_files() into `dir`, each atomically.
void write_hf_code_files(const std::filesystem::path& dir);

// The tokenizer's own Python (THUDM's tokenization_chatglm.py), named by the auto_map of the
// tokenizer_config.json already copied into `dir`, copied from `source_dir` when it is there, so
// AutoTokenizer.from_pretrained(dir, trust_remote_code=True) finds it.
void copy_tokenizer_code(const std::filesystem::path& source_dir, const std::filesystem::path& dir);

}  // namespace llmprune
