#pragma once
// Zero-shot multiple-choice benchmarks read from their original public files, turned into
// lm-evaluation-harness's loglikelihood requests (same prompts, same choice strings).
// docs/eval.md lists every file layout and prompt.
//
// A task directory holds one sub-folder per task (the layout of shared/fixtures/tasks):
//   boolq/val.jsonl (SuperGLUE) or boolq/dev.jsonl (Google)     -> boolq
//   piqa/valid.jsonl + piqa/valid-labels.lst                     -> piqa
//   hellaswag/hellaswag_val.jsonl                                -> hellaswag
//   winogrande/dev.jsonl (original) or winogrande/winogrande.jsonl (converted), plus an
//     optional winogrande/dev-labels.lst that must agree         -> winogrande
//   arc/ARC-Easy-Test.jsonl, arc/ARC-Challenge-Test.jsonl        -> arc_easy, arc_challenge
//   openbookqa/test.jsonl (AI2 jsonl) or openbookqa/test.tsv     -> openbookqa
//   kjv-cloze/test.jsonl (generic {query, choices, gold})        -> kjv_cloze
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace llmprune {

// One item as lm-eval scores it: choice k's score is the log-likelihood of conts[k] after
// contexts[k]; acc_norm divides it by the length in characters of choices[k].
struct McItem {
  std::vector<std::string> contexts;  // [K]; equal for every choice except WinoGrande's
  std::vector<std::string> conts;     // [K] continuations, target delimiter included (" yes")
  std::vector<std::string> choices;   // [K] lm-eval's doc_to_choice strings (no delimiter)
  int gold = 0;
  std::string where;                  // "file:line" of the item, for messages
};

struct TaskInfo {
  std::string name;           // "arc_easy"
  std::string display;        // "ARC-e" (table column)
  std::string folder;         // sub-folder of the task directory
  bool has_acc_norm = true;   // lm-eval reports acc_norm (not for boolq, winogrande)
  std::string paper_metric;   // "acc" or "acc_norm": the LLM-Pruner paper's column
};

struct TaskData {
  TaskInfo info;
  std::vector<std::filesystem::path> files;  // every file read, in order
  std::vector<McItem> items;
};

// The tasks in the paper's column order, then kjv_cloze.
const std::vector<TaskInfo>& known_tasks();
const TaskInfo& task_info(const std::string& name);  // UserError for an unknown name

// Reads and validates the whole task (every item, even beyond a later --limit).
// UserError "<file>:<line>: <what>" for malformed files, naming the path of a missing one.
TaskData load_task(const std::string& name, const std::filesystem::path& task_dir);

// Python string semantics the lm-eval prompts rely on (UTF-8 in, UTF-8 out).
std::string py_strip(const std::string& s);    // str.strip(): Python's whitespace set
std::string py_rstrip(const std::string& s);   // str.rstrip()
// str.capitalize(): first character upper-cased, the rest lower-cased. Case mapping covers
// ASCII and Latin-1 letters; other characters are kept as they are.
std::string py_capitalize(const std::string& s);
size_t utf8_length(const std::string& s);      // len() of the str: code points
// lm-eval's HellaSwag preprocess(): strip, " [title]" -> ". ", drop "[...]" (non-greedy, not
// across newlines), then one pass of "  " -> " ".
std::string hellaswag_preprocess(const std::string& s);

}  // namespace llmprune
