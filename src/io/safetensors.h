#pragma once
// safetensors: 8-byte little-endian header length N, N bytes of JSON header
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then data.
// Files are mmap'd read-only; tensors are views into the mapping (no copy of the whole file).
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace llmprune {

struct SafetensorsFile {
  std::filesystem::path path;
  std::map<std::string, Tensor> tensors;          // in header order is not kept; names are unique
  std::map<std::string, std::string> metadata;

  // mmap + strict validation; throws UserError("<file>: <what>") on any inconsistency.
  static SafetensorsFile open(const std::filesystem::path& path);
};

// Validates a safetensors image held in memory (same checks as open(); for tests and fuzzing).
// Returns the tensors as views into `data` (no owner).
SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name);

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json; when neither exists, pytorch_model.bin or the shards named by
// pytorch_model.bin.index.json (io/pytorch_bin.h). Names must be unique across shards.
std::map<std::string, Tensor> load_checkpoint_tensors(const std::filesystem::path& dir,
                                                      std::vector<std::filesystem::path>* files = nullptr);

// mmaps `path` read-only and registers the mapping for release_mapped_pages; the returned owner
// keeps it alive (put it in Tensor::owner of views into it). Throws UserError naming the file.
std::shared_ptr<void> map_file_readonly(const std::filesystem::path& path, const uint8_t** data, size_t* size);

// Drops this process's pages of [p, p+n) when the range lies inside a live read-only mapping made
// by map_file_readonly (whole pages, rounded outwards); a no-op for any other memory (owned
// buffers are never touched). The bytes stay in the page cache and fault back in on the next
// read, so a model streamed layer by layer does not accumulate in RSS. Returns the bytes released.
size_t release_mapped_pages(const void* p, size_t n);
inline size_t release_mapped_pages(const Tensor& t) { return t.empty() ? 0 : release_mapped_pages(t.data, t.nbytes()); }

// Streaming writer: declare tensors first (name, dtype, shape), then write() produces the file,
// asking `fill(name, dst)` for each tensor's bytes in order, so the whole model is never held.
class SafetensorsWriter {
 public:
  using Fill = std::function<void(void* dst)>;
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, Fill fill);
  void add_tensor(const std::string& name, const Tensor& t);  // copies t's bytes as they are
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes to `path` (temp + rename). Tensors are laid out in insertion order.
  void write(const std::filesystem::path& path) const;
  size_t total_bytes() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    Fill fill;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace llmprune
