#pragma once
// The central directory of a zip archive whose members are STORED (uncompressed), as torch.save
// writes them (each member's data 64-byte aligned, zip64 records past 4 GiB). Nothing is
// decompressed or copied: a member is a byte range of the archive, so callers take views into an
// mmap of the file. Compressed or encrypted members and multi-disk archives are refused.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmprune {

struct ZipMember {
  std::string name;
  uint64_t data_offset = 0;  // where the member's bytes start in the archive
  uint64_t size = 0;
};

// Strict: every member's local header and data must lie inside [0, size), names must be unique,
// sizes must agree between the central and local headers. Throws UserError("<file>: <what>").
std::vector<ZipMember> read_zip_directory(const uint8_t* data, size_t size, const std::string& file);

// True when the bytes start like a zip archive (a local file header), as torch.load tells its
// two formats apart.
bool looks_like_zip(const uint8_t* data, size_t size);

}  // namespace llmprune
