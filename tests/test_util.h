#pragma once
// Shared helpers for tests: fixture paths, running the CLI, random data.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace llmprune::test {

inline std::filesystem::path source_dir() { return LLMPRUNE_SOURCE_DIR; }
inline std::filesystem::path shared_dir() { return LLMPRUNE_SHARED_DIR; }
// A shared trained fixture, or a small model committed under tests/data/models (llama-bias-tiny).
inline std::filesystem::path fixture_model(const std::string& name) {
  std::filesystem::path committed = source_dir() / "tests/data/models" / name;
  return std::filesystem::exists(committed) ? committed : shared_dir() / "fixtures/models" / name;
}
inline std::filesystem::path fixture_text(const std::string& name) { return shared_dir() / "fixtures/text" / name; }

// This test process's temp area: $TMPDIR/llmprune-test-PID. Removed when the process's tests
// all passed (test_util.cpp); kept for inspection after a failure.
inline std::filesystem::path temp_root() {
  return std::filesystem::temp_directory_path() / ("llmprune-test-" + std::to_string(::getpid()));
}

// A fresh empty directory under temp_root(), unique per test.
inline std::filesystem::path temp_dir(const std::string& tag) {
  auto base = temp_root();
  auto info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto p = base / (std::string(info ? info->test_suite_name() : "x") + "." + (info ? info->name() : "y") + "." + tag);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

struct CmdResult {
  int exit_code = -1;
  std::string out, err;
};

// A whole file's bytes (empty when it cannot be read).
inline std::string read_bytes(const std::filesystem::path& f) {
  std::ifstream in(f, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `llmprune <args>` through the shell; captures stdout and stderr.
CmdResult run_cli(const std::string& args);

// n token ids uniform in [0, vocab).
inline std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

inline std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace llmprune::test
