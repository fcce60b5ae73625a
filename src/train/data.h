#pragma once
// Training data for `llmprune tune`.
//
// Alpaca-style instruction data (JSON array or JSON lines; fields instruction, input, output)
// rendered with alpaca-lora's default template (templates/alpaca.json):
//   with input:    "Below is an instruction that describes a task, paired with an input that
//                   provides further context. Write a response that appropriately completes the
//                   request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n
//                   ### Response:\n" + output
//   without input: "Below is an instruction that describes a task. Write a response that
//                   appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n
//                   ### Response:\n" + output
// and tokenised as alpaca-lora's finetune.py does: BOS + text, truncated to cutoff_len, EOS
// appended when there is room; with train_on_inputs off, the first len(BOS + prompt) labels
// (the prompt tokenised on its own) are masked, so only the response (and EOS) is learned.
// A family whose prompts end with tokens of its own (ChatGLM-6B v1) gets prompt + [gMASK] <sop>
// + response + EOS (<eop>), the prompt and its framing masked (LLM-Pruner's ChatGLM layout).
//
// Plain text: the whole file tokenised once with BOS, cut into consecutive chunks of cutoff_len
// tokens (a final chunk of at least 2 tokens is kept); every prediction is learned.
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llmprune {

// One training sequence. labels[i] is the label of token i in HF's convention (position t
// predicts labels[t+1]); -1 = not learned.
struct Example {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
  int64_t scored() const;  // labels >= 0 after the first position (the predictions learned)
};

struct DataOptions {
  int cutoff_len = 256;
  bool train_on_inputs = false;  // also learn the prompt (Alpaca data)
  bool strict = false;           // refuse the file at the first bad record instead of skipping it
  bool add_eos = true;           // Alpaca: EOS after the response when it fits
  std::string format = "auto";   // auto (by extension: .json/.jsonl = alpaca) | alpaca | text
};

struct DataReport {
  std::string format;                 // "alpaca" or "text"
  int64_t records = 0;                // records read (alpaca) / chunks (text)
  int64_t skipped_bad = 0;            // malformed records skipped (non-strict)
  int64_t skipped_no_target = 0;      // records with nothing to learn within cutoff_len
  int64_t truncated = 0;              // records cut at cutoff_len
  std::vector<std::string> problems;  // "<file>: record N: <what>" for the first few bad records
};

std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// Reads and tokenises a data file. Errors name the file ("<file>: record N: <what>"; N is the
// 0-based record index, as data[N] in Python; JSON lines also give the line number).
std::vector<Example> load_examples(const std::string& file, const Tokenizer& tok, const DataOptions& opt,
                                   DataReport* report = nullptr);

// Digest of the examples in order (ids and labels), for checkpoint compatibility checks.
uint64_t examples_digest(const std::vector<Example>& ex);

}  // namespace llmprune
