#include "prune/calibration.h"

#include "core/error.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

std::vector<int32_t> read_calibration_windows(const std::string& model, int context, const CalibOptions& co) {
  if (co.seq_len > context)
    throw UserError(co.flag + "-seq-len " + std::to_string(co.seq_len) + " exceeds the model's context of " + std::to_string(context));
  auto tok = load_model_tokenizer(model);
  return calibration_windows(tokenize_file_with_bos(*tok, co.file), co);
}

}  // namespace llmprune
