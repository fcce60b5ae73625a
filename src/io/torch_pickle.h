#pragma once
// A pickle reader for torch.save'd state dicts that executes nothing: a small opcode interpreter
// that knows the few globals such a pickle names and builds plain descriptions from them.
//
// Accepted globals: collections.OrderedDict (called with no arguments), torch._utils's
// _rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter / _rebuild_parameter_with_state, and
// the typed storage classes torch.<X>Storage, which may appear only inside a persistent id
// ('storage', torch.<X>Storage, key, location, numel[, None]). Any other global, or an accepted one
// used another way (a storage class called through REDUCE, OrderedDict with arguments), is refused
// with "<file>: pickle global 'os.system' is not allowed" before anything is built from it. The
// result must be a dict of str -> tensor. See docs/robustness.md, "PyTorch .bin checkpoints".
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llmprune {

struct TorchStorageRef {
  std::string key;        // the record name: data/<key> in a zip archive; the legacy format's key
  std::string type_name;  // "torch.HalfStorage"
  bool supported = false; // F32 / F16 / BF16
  DType dtype = DType::F32;
  size_t element_size = 0; // 0 when unknown (quantized types)
  uint64_t numel = 0;      // elements, as the persistent id states
};

struct TorchTensorRef {
  std::string name;
  size_t storage = 0;  // index into TorchStateDict::storages
  uint64_t offset = 0; // in elements
  std::vector<int64_t> shape, stride;
};

struct TorchStateDict {
  std::vector<TorchStorageRef> storages;  // one per distinct key (tied tensors share one)
  std::vector<TorchTensorRef> tensors;    // in the pickle's order; names are unique
};

// data.pkl of a zip checkpoint: exactly one pickle (nothing may follow STOP).
TorchStateDict parse_torch_pickle(const uint8_t* data, size_t size, const std::string& file);

// The legacy (pre-1.6, non-zip) format: pickles of the magic number, the protocol version (1001)
// and sys_info (little endian), the state dict, then the list of storage keys, then for each key in
// that order an int64 element count and the storage's bytes.
struct TorchLegacyLayout {
  TorchStateDict dict;
  std::vector<std::string> storage_order;  // keys in the order their data follows
  size_t data_offset = 0;                  // where the first storage record starts
};
TorchLegacyLayout parse_torch_legacy(const uint8_t* data, size_t size, const std::string& file);

}  // namespace llmprune
