#pragma once
// Errors the CLI turns into one line `llmprune: error: <what>`.
// UserError (bad input or usage) exits 2; RuntimeError (disk full, numerical failure) exits 1.
#include <stdexcept>
#include <string>

namespace llmprune {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "<file>: <what>" — every message about an input names the file.
inline UserError input_error(const std::string& file, const std::string& what) {
  return UserError(file + ": " + what);
}

// A name read from an input file, safe to put in a one-line message: bytes outside printable
// ASCII become '?', and it is cut at 80 characters.
inline std::string printable_name(const std::string& s) {
  std::string out;
  for (unsigned char c : s.substr(0, 80)) out += (c >= 0x20 && c < 0x7f) ? char(c) : '?';
  if (s.size() > 80) out += "...";
  return out;
}

}  // namespace llmprune
