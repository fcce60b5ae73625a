// Calibration text -> token windows for a pruning pass (Taylor gradients, FLAP statistics,
// compensation, Wanda), read with the model's own tokenizer so a family's specials and prompt
// prefix (ChatGLM's [gMASK] sop) are the ones the model sees at inference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "importance/importance.h"

namespace llmprune {

// co.file tokenised by `model`'s tokenizer (BOS once, then the whole text) and cut into
// co.samples x co.seq_len tokens ([samples, seq_len], row-major). UserErrors name co.flag's
// flags: seq_len beyond the model's `context`, a text shorter than the windows (naming co.file).
std::vector<int32_t> read_calibration_windows(const std::string& model, int context, const CalibOptions& co);

}  // namespace llmprune
