// Zero-shot task files -> load_task. The first input byte picks a task layout; the rest is the
// main file, optionally followed by "\0" and a second file (PIQA / WinoGrande labels).
// Files are written into a scratch task directory, which is rebuilt for every input.
#include <string>
#include <string_view>

#include "eval/tasks.h"
#include "fuzz_util.h"

using namespace llmprune;
namespace fs = std::filesystem;

namespace {

struct Layout {
  const char* task;
  const char* folder;
  const char* file1;
  const char* file2;  // nullptr: no second file
};

const Layout kLayouts[] = {
    {"boolq", "boolq", "val.jsonl", nullptr},
    {"boolq", "boolq", "dev.jsonl", nullptr},
    {"piqa", "piqa", "valid.jsonl", "valid-labels.lst"},
    {"hellaswag", "hellaswag", "hellaswag_val.jsonl", nullptr},
    {"winogrande", "winogrande", "dev.jsonl", "dev-labels.lst"},
    {"winogrande", "winogrande", "winogrande.jsonl", "dev-labels.lst"},
    {"arc_easy", "arc", "ARC-Easy-Test.jsonl", nullptr},
    {"arc_challenge", "arc", "ARC-Challenge-Test.jsonl", nullptr},
    {"openbookqa", "openbookqa", "test.jsonl", nullptr},
    {"openbookqa", "openbookqa", "test.tsv", nullptr},
    {"kjv_cloze", "kjv-cloze", "test.jsonl", nullptr},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const Layout& L = kLayouts[data[0] % (sizeof kLayouts / sizeof kLayouts[0])];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string_view a = rest, b;
  bool has_b = false;
  if (auto z = rest.find('\0'); z != std::string_view::npos) {
    a = rest.substr(0, z);
    b = rest.substr(z + 1);
    has_b = true;
  }
  fs::path root = fuzz::scratch_dir() / "tasks";
  fs::remove_all(root);
  fs::create_directories(root / L.folder);
  fuzz::write_file(root / L.folder / L.file1, a);
  if (L.file2 && has_b) fuzz::write_file(root / L.folder / L.file2, b);
  try {
    TaskData d = load_task(L.task, root);
    for (auto& it : d.items) {
      if (it.contexts.size() != it.conts.size() || it.conts.size() != it.choices.size()) __builtin_trap();
      if (it.gold < 0 || size_t(it.gold) >= it.choices.size()) __builtin_trap();
      for (auto& c : it.choices) utf8_length(c);
    }
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
