#pragma once
// Included by tests/tokenizer_*_test.cpp. Reading the tokenizer test vectors (llama.cpp's .inp/.out layout, see
// tests/data/tokenizers/README.md) and small file helpers shared by the tokenizer tests.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tokenizer_test {

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct Case {
  std::string input;
  std::vector<int32_t> ids;
};

// .inp: each input followed by "\n__ggml_vocab_test__\n"; .out: one line of ids per input.
inline std::vector<Case> read_cases(const std::filesystem::path& inp, const std::filesystem::path& out) {
  const std::string marker = "\n__ggml_vocab_test__\n";
  const std::string inputs = read_file(inp);
  std::vector<Case> cases;
  size_t pos = 0;
  while (pos < inputs.size()) {
    size_t end = inputs.find(marker, pos);
    if (end == std::string::npos) throw std::runtime_error(inp.string() + ": input without marker");
    cases.push_back({inputs.substr(pos, end - pos), {}});
    pos = end + marker.size();
  }
  std::istringstream lines(read_file(out));
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    if (i >= cases.size()) throw std::runtime_error(out.string() + ": more id lines than inputs");
    std::istringstream ids(line);
    int64_t id;
    while (ids >> id) cases[i].ids.push_back(static_cast<int32_t>(id));
    i++;
  }
  if (i != cases.size()) throw std::runtime_error(out.string() + ": fewer id lines than inputs");
  return cases;
}

inline std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';  // (two appends, not " " + ...: GCC 12 warns falsely on the temporary)
    s += std::to_string(id);
  }
  return s;
}

// Printable form of a test input for failure messages.
inline std::string escaped(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

inline std::filesystem::path source_dir() { return LLMPRUNE_SOURCE_DIR; }
inline std::filesystem::path shared_dir() { return LLMPRUNE_SHARED_DIR; }
inline std::filesystem::path fixtures_dir() { return source_dir() / "tests/data/tokenizers"; }

}  // namespace tokenizer_test
