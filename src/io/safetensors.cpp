#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/pytorch_bin.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the spec's 100 MB limit

// Live mappings by start address, so release_mapped_pages only ever advises file mappings.
std::mutex g_maps_mu;
std::map<uintptr_t, size_t> g_maps;

struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  void track() {
    std::lock_guard<std::mutex> lk(g_maps_mu);
    g_maps[reinterpret_cast<uintptr_t>(addr)] = size;
  }
  ~Mapping() {
    if (addr && size) {
      {
        std::lock_guard<std::mutex> lk(g_maps_mu);
        g_maps.erase(reinterpret_cast<uintptr_t>(addr));
      }
      ::munmap(addr, size);
    }
  }
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 8) throw input_error(name, "file too short for a safetensors header (" + std::to_string(size) + " bytes)");
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > kMaxHeaderBytes) throw input_error(name, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > size - 8) throw input_error(name, "header length " + std::to_string(n) + " runs past the end of the file (truncated?)");
  json header = json::parse(reinterpret_cast<const char*>(data + 8), reinterpret_cast<const char*>(data + 8 + n), nullptr, false);
  if (header.is_discarded()) throw input_error(name, "header is not valid JSON");
  if (!header.is_object()) throw input_error(name, "header is not a JSON object");
  const uint8_t* base = data + 8 + n;
  uint64_t data_size = size - 8 - n;

  SafetensorsFile out;
  out.path = name;
  struct Span { uint64_t begin, end; std::string name; };
  std::vector<Span> spans;
  for (auto& [key, val] : header.items()) {
    if (key == "__metadata__") {
      if (!val.is_object()) throw input_error(name, "__metadata__ is not an object");
      for (auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) throw input_error(name, "__metadata__." + mk + " is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + key + "'";
    if (!val.is_object()) throw input_error(name, where + ": entry is not an object");
    if (!val.contains("dtype") || !val["dtype"].is_string()) throw input_error(name, where + ": missing dtype");
    if (!val.contains("shape") || !val["shape"].is_array()) throw input_error(name, where + ": missing shape");
    if (!val.contains("data_offsets") || !val["data_offsets"].is_array() || val["data_offsets"].size() != 2)
      throw input_error(name, where + ": data_offsets must be [begin, end]");
    std::string dt = val["dtype"].get<std::string>();
    Tensor t;
    if (!dtype_from_name(dt, &t.dtype))
      throw input_error(name, where + ": dtype " + dt + " is not supported (F32, F16, BF16 are)");
    uint64_t numel = 1;
    for (auto& d : val["shape"]) {
      if (!d.is_number_unsigned()) throw input_error(name, where + ": shape entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || mul_overflows(numel, v, &numel)) throw input_error(name, where + ": shape too large");
      t.shape.push_back(int64_t(v));
    }
    auto& off = val["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw input_error(name, where + ": data_offsets must be non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e) throw input_error(name, where + ": data_offsets begin > end");
    if (e > data_size)
      throw input_error(name, where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                                  "] past the end of the data (" + std::to_string(data_size) + " bytes; truncated?)");
    uint64_t want = 0;
    if (mul_overflows(numel, dtype_size(t.dtype), &want) || want != e - b)
      throw input_error(name, where + ": shape " + shape_str(t.shape) + " x " + dt + " needs " + std::to_string(want) +
                                  " bytes but data_offsets span " + std::to_string(e - b));
    t.data = const_cast<uint8_t*>(base + b);
    spans.push_back({b, e, key});
    out.tensors.emplace(key, std::move(t));
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  uint64_t cursor = 0;
  for (auto& s : spans) {
    if (s.begin < cursor) throw input_error(name, "tensor '" + s.name + "' overlaps the previous tensor's data");
    if (s.begin > cursor) throw input_error(name, "gap in the data before tensor '" + s.name + "' (the buffer must be fully indexed)");
    cursor = s.end;
  }
  if (cursor != data_size)
    throw input_error(name, "data section has " + std::to_string(data_size - cursor) + " trailing bytes not owned by any tensor");
  return out;
}

std::shared_ptr<void> map_file_readonly(const fs::path& path, const uint8_t** data, size_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw input_error(path.string(), std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw input_error(path.string(), "cannot stat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw input_error(path.string(), "not a regular file");
  }
  auto map = std::make_shared<Mapping>();
  map->size = size_t(st.st_size);
  if (map->size > 0) {
    map->addr = ::mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map->addr == MAP_FAILED) {
      map->addr = nullptr;
      ::close(fd);
      throw input_error(path.string(), std::string("mmap failed: ") + std::strerror(errno));
    }
    map->track();
  }
  ::close(fd);
  *data = static_cast<const uint8_t*>(map->addr);
  *size = map->size;
  return map;
}

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  const uint8_t* data = nullptr;
  size_t size = 0;
  std::shared_ptr<void> map = map_file_readonly(path, &data, &size);
  SafetensorsFile f = parse_safetensors(data, size, path.string());
  f.path = path;
  for (auto& [name, t] : f.tensors) {
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
      // Misaligned data (header length not padded): copy this tensor so fp32 loads are aligned.
      Tensor copy = Tensor::zeros(t.dtype, t.shape);
      std::memcpy(copy.data, t.data, t.nbytes());
      t = std::move(copy);
    } else {
      t.owner = map;
    }
  }
  return f;
}

namespace {

// One checkpoint format's file names and shard reader (safetensors, PyTorch .bin).
struct CheckpointFormat {
  const char* single;  // model.safetensors
  const char* index;   // model.safetensors.index.json
  std::map<std::string, Tensor> (*read_shard)(const fs::path&);
};

std::map<std::string, Tensor> read_safetensors_shard(const fs::path& f) { return SafetensorsFile::open(f).tensors; }

std::map<std::string, Tensor> load_checkpoint_format(const fs::path& dir, const CheckpointFormat& fmt, std::vector<fs::path>* files) {
  std::map<std::string, Tensor> all;
  std::vector<fs::path> shard_files;
  const fs::path index = dir / fmt.index;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index)) {
    std::ifstream in(index);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw input_error(index.string(), "not valid JSON");
    if (!j.contains("weight_map") || !j["weight_map"].is_object()) throw input_error(index.string(), "missing weight_map");
    std::set<std::string> seen;
    for (auto& [tname, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw input_error(index.string(), "weight_map." + tname + " is not a file name");
      std::string f = file.get<std::string>();
      if (f.empty() || f == "." || f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw input_error(index.string(), "weight_map." + tname + ": shard name '" + f + "' must be a plain file name");
      weight_map[tname] = f;
      if (seen.insert(f).second) shard_files.push_back(dir / f);
    }
  } else {
    shard_files.push_back(dir / fmt.single);
  }
  for (auto& f : shard_files) {
    std::error_code ec;  // the non-throwing overload: a too-long name is "missing", not a filesystem_error
    if (!fs::exists(f, ec)) throw input_error(f.string(), "shard named by the index is missing");
    for (auto& [name, t] : fmt.read_shard(f)) {
      if (all.count(name)) throw input_error(f.string(), "tensor '" + name + "' also appears in another shard");
      if (!weight_map.empty()) {
        auto it = weight_map.find(name);
        if (it == weight_map.end() || dir / it->second != f)
          throw input_error(f.string(), "tensor '" + name + "' is not listed for this shard in " + fmt.index);
      }
      all.emplace(name, std::move(t));
    }
  }
  for (auto& [tname, f] : weight_map)
    if (!all.count(tname)) throw input_error((dir / f).string(), "tensor '" + tname + "' listed in the index is missing");
  if (files) *files = shard_files;
  return all;
}

}  // namespace

std::map<std::string, Tensor> load_checkpoint_tensors(const fs::path& dir, std::vector<fs::path>* files) {
  static const CheckpointFormat kSafetensors{"model.safetensors", "model.safetensors.index.json", read_safetensors_shard};
  static const CheckpointFormat kPytorchBin{"pytorch_model.bin", "pytorch_model.bin.index.json", read_pytorch_bin};
  // safetensors wins when a repository ships both (it is what HF loads first, and cheaper to check).
  for (const CheckpointFormat* fmt : {&kSafetensors, &kPytorchBin})
    if (fs::exists(dir / fmt->index) || fs::exists(dir / fmt->single)) return load_checkpoint_format(dir, *fmt, files);
  throw input_error(dir.string(), "no model.safetensors or model.safetensors.index.json (nor pytorch_model.bin or pytorch_model.bin.index.json)");
}

size_t release_mapped_pages(const void* p, size_t n) {
  if (!p || n == 0) return 0;
  const uintptr_t b = reinterpret_cast<uintptr_t>(p), e = b + n;
  std::lock_guard<std::mutex> lk(g_maps_mu);
  auto it = g_maps.upper_bound(b);
  if (it == g_maps.begin()) return 0;
  --it;
  const uintptr_t mb = it->first, me = mb + it->second;
  if (b < mb || e > me) return 0;
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = b & ~(page - 1);                        // the mapping starts page-aligned
  const uintptr_t hi = std::min((e + page - 1) & ~(page - 1), (me + page - 1) & ~(page - 1));
  // Read-only private file mapping: the pages were never written, so dropping them loses nothing.
  if (::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) != 0) return 0;
  return hi - lo;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape, Fill fill) {
  entries_.push_back({name, dtype, std::move(shape), std::move(fill)});
}

void SafetensorsWriter::add_tensor(const std::string& name, const Tensor& t) {
  Tensor keep = t;
  add(name, t.dtype, t.shape, [keep](void* dst) { std::memcpy(dst, keep.data, keep.nbytes()); });
}

size_t SafetensorsWriter::total_bytes() const {
  size_t n = 0;
  for (auto& e : entries_) {
    size_t numel = 1;
    for (auto d : e.shape) numel *= size_t(d);
    n += numel * dtype_size(e.dtype);
  }
  return n;
}

void SafetensorsWriter::write(const fs::path& path) const {
  json header = json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (auto& e : entries_) {
    uint64_t numel = 1;
    for (auto d : e.shape) numel *= uint64_t(d);
    uint64_t bytes = numel * dtype_size(e.dtype);
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes.push_back(bytes);
  }
  std::string hs = header.dump();
  while ((hs.size() + 8) % 8 != 0) hs.push_back(' ');  // pad so the data starts 8-byte aligned
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw RuntimeError(path.string() + ": cannot create: " + std::strerror(errno));
  auto fail = [&](const std::string& what) {
    const int e = errno;
    std::fclose(f);
    std::remove(tmp.c_str());
    throw RuntimeError(path.string() + ": " + what + ": " + std::strerror(e));
  };
  uint64_t n = hs.size();
  if (std::fwrite(&n, 8, 1, f) != 1 || std::fwrite(hs.data(), 1, hs.size(), f) != hs.size()) fail("write failed");
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < entries_.size(); i++) {
    buf.assign(sizes[i], 0);
    try {
      entries_[i].fill(buf.data());
    } catch (...) {
      std::fclose(f);
      std::remove(tmp.c_str());
      throw;
    }
    if (sizes[i] && std::fwrite(buf.data(), 1, sizes[i], f) != sizes[i]) fail("write failed");
  }
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) fail("write failed");
  if (std::fclose(f) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw RuntimeError(path.string() + ": write failed: " + std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw RuntimeError(path.string() + ": rename failed: " + std::strerror(e));
  }
}

}  // namespace llmprune
