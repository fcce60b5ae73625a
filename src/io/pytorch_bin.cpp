#include "io/pytorch_bin.h"

#include <cstring>
#include <memory>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/zip_reader.h"

namespace fs = std::filesystem;

namespace llmprune {
namespace {

constexpr size_t kMaxDims = 8;

struct StorageBytes {
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

uint64_t storage_nbytes(const TorchStorageRef& s, const std::string& file) {
  uint64_t n = 0;
  if (mul_overflows(s.numel, s.element_size, &n)) throw input_error(file, "storage '" + printable_name(s.key) + "' is too large");
  return n;
}

// Zip format: <prefix>/data.pkl names storages kept as <prefix>/data/<key>.
std::vector<StorageBytes> zip_storages(const uint8_t* data, size_t size, const std::string& file, TorchStateDict* dict) {
  const std::vector<ZipMember> members = read_zip_directory(data, size, file);
  const ZipMember* pkl = nullptr;
  for (auto& m : members) {
    const size_t slash = m.name.find('/');
    if (slash != std::string::npos && m.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      if (pkl) throw input_error(file, "zip archive holds two pickles ('" + printable_name(pkl->name) + "' and '" + printable_name(m.name) + "')");
      pkl = &m;
    }
  }
  if (!pkl) throw input_error(file, "zip archive has no <name>/data.pkl record (not a torch.save checkpoint)");
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl"));
  std::map<std::string, const ZipMember*> by_name;
  for (auto& m : members) by_name[m.name] = &m;
  if (auto it = by_name.find(prefix + "byteorder"); it != by_name.end()) {
    const std::string order(reinterpret_cast<const char*>(data + it->second->data_offset), size_t(it->second->size));
    if (order != "little") throw input_error(file, "byteorder record says '" + printable_name(order) + "' (only little-endian checkpoints are supported)");
  }
  *dict = parse_torch_pickle(data + pkl->data_offset, size_t(pkl->size), file);
  std::vector<StorageBytes> out;
  for (const TorchStorageRef& s : dict->storages) {
    auto it = by_name.find(prefix + "data/" + s.key);
    if (it == by_name.end()) throw input_error(file, "storage record '" + printable_name(prefix + "data/" + s.key) + "' is missing");
    const ZipMember& m = *it->second;
    if (s.element_size && m.size != storage_nbytes(s, file))
      throw input_error(file, "storage '" + printable_name(m.name) + "' holds " + std::to_string(m.size) + " bytes but its pickle declares " +
                                  std::to_string(s.numel) + " x " + s.type_name + " = " + std::to_string(storage_nbytes(s, file)) + " bytes");
    out.push_back({data + m.data_offset, m.size});
  }
  return out;
}

// Legacy format: after the pickles, for each key of the key list an int64 element count and
// the storage's bytes, back to back.
std::vector<StorageBytes> legacy_storages(const uint8_t* data, size_t size, const std::string& file, TorchStateDict* dict) {
  TorchLegacyLayout layout = parse_torch_legacy(data, size, file);
  *dict = std::move(layout.dict);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < dict->storages.size(); i++) index[dict->storages[i].key] = i;
  std::vector<StorageBytes> out(dict->storages.size());
  std::vector<bool> seen(dict->storages.size(), false);
  uint64_t pos = layout.data_offset;
  for (const std::string& key : layout.storage_order) {
    auto it = index.find(key);
    if (it == index.end()) throw input_error(file, "legacy format: storage '" + printable_name(key) + "' has data but no tensor declares it");
    if (seen[it->second]) throw input_error(file, "legacy format: storage '" + printable_name(key) + "' is listed twice");
    seen[it->second] = true;
    const TorchStorageRef& s = dict->storages[it->second];
    if (s.element_size == 0) throw input_error(file, "legacy format: storage '" + printable_name(key) + "' has type " + s.type_name + ", which is not supported");
    if (size - pos < 8) throw input_error(file, "legacy format: storage '" + printable_name(key) + "' runs past the end of the file (truncated?)");
    int64_t count = 0;
    std::memcpy(&count, data + pos, 8);
    pos += 8;
    if (count < 0 || uint64_t(count) != s.numel)
      throw input_error(file, "legacy format: storage '" + printable_name(key) + "' holds " + std::to_string(count) + " elements but its pickle declares " + std::to_string(s.numel));
    const uint64_t n = storage_nbytes(s, file);
    if (n > size - pos) throw input_error(file, "legacy format: storage '" + printable_name(key) + "' (" + std::to_string(n) + " bytes) runs past the end of the file (truncated?)");
    out[it->second] = {data + pos, n};
    pos += n;
  }
  for (size_t i = 0; i < seen.size(); i++)
    if (!seen[i]) throw input_error(file, "legacy format: storage '" + printable_name(dict->storages[i].key) + "' has no data");
  if (pos != size) throw input_error(file, "legacy format: " + std::to_string(size - pos) + " bytes follow the last storage");
  return out;
}

// One state dict entry as a Tensor: a view into the storage bytes when contiguous and aligned,
// an owned copy otherwise.
Tensor make_tensor(const TorchTensorRef& t, const TorchStorageRef& s, const StorageBytes& bytes, const std::string& file,
                   const std::shared_ptr<void>& owner) {
  const std::string where = "tensor '" + printable_name(t.name) + "': ";
  if (t.shape.size() > kMaxDims) throw input_error(file, where + std::to_string(t.shape.size()) + " dimensions (at most 8 are supported)");
  uint64_t numel = 1, last = t.offset;  // last: the highest storage element the view reaches
  for (size_t d = 0; d < t.shape.size(); d++) {
    if (t.shape[d] <= 0) throw input_error(file, where + "shape " + shape_str(t.shape) + " has an empty or negative dimension");
    if (t.stride[d] < 0) throw input_error(file, where + "negative stride");
    uint64_t span = 0;
    if (mul_overflows(numel, uint64_t(t.shape[d]), &numel) || mul_overflows(uint64_t(t.shape[d] - 1), uint64_t(t.stride[d]), &span) ||
        add_overflows(last, span, &last))
      throw input_error(file, where + "shape " + shape_str(t.shape) + " is too large");
  }
  if (numel > s.numel)  // a stride-0 (expanded) view: materialising it could take any amount of memory
    throw input_error(file, where + "shape " + shape_str(t.shape) + " views more elements than its storage '" + printable_name(s.key) +
                                "' holds (an expanded view; save it with .contiguous())");
  if (last >= s.numel)
    throw input_error(file, where + "shape " + shape_str(t.shape) + " at storage offset " + std::to_string(t.offset) + " needs element " +
                                std::to_string(last) + " of storage '" + printable_name(s.key) + "', which holds " + std::to_string(s.numel) + " elements");
  const size_t es = s.element_size;
  const uint8_t* base = bytes.data + t.offset * es;  // last < numel: inside the storage, no overflow
  bool contiguous = true;
  int64_t expect = 1;
  for (size_t d = t.shape.size(); d-- > 0;) {
    if (t.shape[d] != 1 && t.stride[d] != expect) contiguous = false;
    expect *= t.shape[d];  // <= numel: no overflow
  }
  Tensor out;
  out.dtype = s.dtype;
  out.shape = t.shape;
  if (contiguous && reinterpret_cast<uintptr_t>(base) % es == 0) {
    out.data = const_cast<uint8_t*>(base);
    out.owner = owner;
    return out;
  }
  out = Tensor::zeros(s.dtype, t.shape);
  uint8_t* dst = static_cast<uint8_t*>(out.data);
  if (contiguous) {
    std::memcpy(dst, base, numel * es);
    return out;
  }
  // Strided gather in row-major order of the view's shape.
  std::vector<int64_t> idx(t.shape.size(), 0);
  uint64_t src = 0;
  for (uint64_t i = 0; i < numel; i++) {
    std::memcpy(dst + i * es, base + src * es, es);
    for (size_t d = t.shape.size(); d-- > 0;) {
      src += uint64_t(t.stride[d]);
      if (++idx[d] < t.shape[d]) break;
      src -= uint64_t(t.stride[d]) * uint64_t(t.shape[d]);
      idx[d] = 0;
    }
  }
  return out;
}

std::map<std::string, Tensor> parse_impl(const uint8_t* data, size_t size, const std::string& file, const std::shared_ptr<void>& owner) {
  TorchStateDict dict;
  std::vector<StorageBytes> storages;
  if (looks_like_zip(data, size)) {
    storages = zip_storages(data, size, file, &dict);
  } else {
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) throw input_error(file, "gzip-compressed data, not a PyTorch checkpoint");
    if (size > 262 && std::memcmp(data + 257, "ustar", 5) == 0)
      throw input_error(file, "tar archive (the PyTorch format before 0.4) is not supported");
    storages = legacy_storages(data, size, file, &dict);
  }
  for (const TorchTensorRef& t : dict.tensors) {
    const TorchStorageRef& s = dict.storages[t.storage];
    if (!s.supported)
      throw input_error(file, "tensor '" + printable_name(t.name) + "': dtype " + s.type_name + " is not supported (F32, F16, BF16 are)");
  }
  std::map<std::string, Tensor> out;
  for (const TorchTensorRef& t : dict.tensors)
    out.emplace(t.name, make_tensor(t, dict.storages[t.storage], storages[t.storage], file, owner));
  return out;
}

}  // namespace

std::map<std::string, Tensor> parse_pytorch_bin(const uint8_t* data, size_t size, const std::string& name) {
  return parse_impl(data, size, name, nullptr);
}

std::map<std::string, Tensor> read_pytorch_bin(const fs::path& path) {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> map = map_file_readonly(path, &data, &size);
  if (size == 0) throw input_error(path.string(), "empty file");
  return parse_impl(data, size, path.string(), map);
}

}  // namespace llmprune
