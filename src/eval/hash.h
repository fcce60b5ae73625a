#pragma once
// XXH64 (Yann Collet's xxHash, 64-bit, seed 0), written from the published algorithm, for the
// fingerprints `eval --json` records: weight files and task files. Values equal `xxhsum -H1`.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace llmprune {

class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t n);
  uint64_t digest() const;

 private:
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buf_len_ = 0;
  uint64_t seed_;
};

uint64_t xxh64(const void* data, size_t n, uint64_t seed = 0);
// Streams a file through XXH64 (UserError naming the file when unreadable).
uint64_t xxh64_file(const std::filesystem::path& path);
std::string hex64(uint64_t v);  // 16 lower-case hex digits

}  // namespace llmprune
