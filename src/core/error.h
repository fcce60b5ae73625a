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

}  // namespace llmprune
