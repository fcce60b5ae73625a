#pragma once
// PyTorch checkpoints (torch.save of a state dict): pytorch_model.bin and its shards, in the zip
// format (torch >= 1.6: <prefix>/data.pkl + <prefix>/data/<key> records, stored uncompressed) and
// the legacy format (a sequence of pickles followed by the raw storages). Read without executing
// anything: io/torch_pickle.h interprets the pickle, only F32/F16/BF16 tensors are accepted.
//
// Tensors are views into the file's mapping, like safetensors tensors, when they are contiguous
// and aligned; a non-contiguous view (a transposed tensor) or a misaligned one (the legacy format
// does not align its storages) is materialised into an owned buffer. Tensors that share a storage
// (tied weights, fused q/k/v viewed at offsets) stay views of the same bytes.
#include <filesystem>
#include <map>
#include <string>

#include "core/tensor.h"

namespace llmprune {

// mmap + strict validation of one .bin file; throws UserError("<file>: <what>").
std::map<std::string, Tensor> read_pytorch_bin(const std::filesystem::path& path);

// The same checks on an image held in memory (tests, fuzzing); tensors are views into `data`
// (no owner) or owned copies as above.
std::map<std::string, Tensor> parse_pytorch_bin(const uint8_t* data, size_t size, const std::string& name);

}  // namespace llmprune
