#pragma once
// Shared helpers for the libFuzzer targets in this folder.
//
// Policy: a parser may reject any input, but only with llmprune::UserError (the CLI maps it to
// exit 2 and one "llmprune: error: <file>: <what>" line). Any other exception escapes
// LLVMFuzzerTestOneInput, terminates the process and is reported as a crash, as are ASan/UBSan
// findings, timeouts and out-of-memory.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace llmprune::fuzz {

// A private directory for targets that must go through a file, created once per process and
// removed at exit. Prefers /dev/shm (no disk I/O per execution).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    std::string tmpl = base + "/llmprune-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::filesystem::path p = tmpl;
    static struct Cleanup {
      std::filesystem::path p;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(p, ec);
      }
    } cleanup{p};
    return p;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!out) {
    std::perror("write_file");
    std::abort();
  }
}

inline void write_file(const std::filesystem::path& path, std::string_view s) {
  write_file(path, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Called for every rejection; prints it when LLMPRUNE_FUZZ_VERBOSE is set (to check that the
// seeds are accepted: LLMPRUNE_FUZZ_VERBOSE=1 build-fuzz/fuzz/fuzz_X -runs=0 fuzz/corpus/X).
inline void rejected(const UserError& e) {
  static const bool verbose = std::getenv("LLMPRUNE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

// Reads every byte of [p, p+n) so ASan checks the whole span is inside the input buffer.
inline void touch(const void* p, size_t n) {
  const volatile uint8_t* b = static_cast<const volatile uint8_t*>(p);
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc ^= b[i];
  (void)acc;
}

}  // namespace llmprune::fuzz
