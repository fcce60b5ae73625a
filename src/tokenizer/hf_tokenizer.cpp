// HF tokenizer.json support. Until the BPE implementation lands (issue 7) this detects the file
// and says so, rather than mis-tokenising.
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& file) {
  auto spm = file.parent_path() / "tokenizer.model";
  if (std::filesystem::exists(spm)) return load_sentencepiece(spm);
  throw input_error(file.string(), "HF tokenizer.json (BPE) is not supported yet; provide tokenizer.model");
}

}  // namespace llmprune
