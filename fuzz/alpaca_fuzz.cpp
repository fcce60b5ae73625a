// Training data for `llmprune tune` -> load_examples (Alpaca JSON array / JSON lines, plain
// text). The first input byte picks the file extension and the options; the rest is the file.
// A byte tokenizer stands in for a real one (id = byte + 3, BOS 1, EOS 2), so the target tests
// the record parsing, templating, truncation and label masking, not a tokenizer.
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "train/data.h"

using namespace llmprune;

namespace {

class ByteTokenizer : public Tokenizer {
 public:
  ByteTokenizer() { set_special_ids(1, 2); }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(int32_t(c) + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id >= 3 && id < 259) s.push_back(char(id - 3));
    return s;
  }
  int32_t vocab_size() const override { return 259; }
  std::string id_to_piece(int32_t id) const override { return std::to_string(id); }
  std::string kind() const override { return "bytes"; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const ByteTokenizer tok;
  const uint8_t sel = data[0];
  static const char* const kExt[] = {".json", ".jsonl", ".txt", ".json"};
  DataOptions opt;
  opt.strict = sel & 4;
  opt.train_on_inputs = sel & 8;
  opt.add_eos = !(sel & 16);
  opt.cutoff_len = 2 + 37 * ((sel >> 5) & 7);  // 2 .. 261: cuts inside and after the prompt
  auto path = fuzz::scratch_dir() / (std::string("data") + kExt[sel & 3]);
  fuzz::write_file(path, data + 1, size - 1);
  try {
    DataReport rep;
    auto ex = load_examples(path.string(), tok, opt, &rep);
    for (auto& e : ex) {
      if (e.ids.size() != e.labels.size() || e.ids.size() > size_t(opt.cutoff_len) || e.scored() <= 0) __builtin_trap();
      for (size_t i = 0; i < e.ids.size(); i++)
        if (e.labels[i] != -1 && e.labels[i] != e.ids[i]) __builtin_trap();
    }
    examples_digest(ex);
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
