#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <unordered_set>

#include "core/error.h"
#include "core/fs.h"

namespace llmprune::gguf {

// The on-disk format is little-endian and we copy scalars straight from the mapping.
static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kWriteVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;           // ggml's GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;        // bounds recursion on hostile input
constexpr const char* kAlignmentKey = "general.alignment";

// Smallest encoding of one item of each type: lets us reject counts that cannot fit
// in the bytes that remain before allocating anything for them.
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::String: return 8;   // u64 length, empty text
    case ValueType::Array: return 12;   // u32 element type + u64 count, no items
  }
  return 1;
}

bool is_known_value_type(uint32_t id) { return id <= uint32_t(ValueType::F64); }

// A key or tensor name as it appears in a one-line message: control and non-ASCII bytes as
// \xNN, and long (possibly corrupted) names cut short.
std::string quote_name(const std::string& s) {
  constexpr size_t kMaxShown = 80;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShown; i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += char(c);
    } else {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\x%02x", c);
      out += esc;
    }
  }
  out += s.size() > kMaxShown ? "'... (" + std::to_string(s.size()) + " bytes)" : "'";
  return out;
}

uint64_t align_up(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

// Size computation shared by the reader (errors prefixed with the file) and the writer.
// Returns an empty string on success, else what is wrong.
std::string compute_tensor_size(uint32_t type_id, const std::vector<uint64_t>& dims,
                                uint64_t* n_elements, uint64_t* n_bytes) {
  const GGMLTypeTraits* traits = ggml_type_traits(type_id);
  if (!traits) return "has unknown ggml type " + std::to_string(type_id);
  if (dims.empty() || dims.size() > kMaxDims)
    return "has " + std::to_string(dims.size()) + " dims (1 to 4 are supported)";
  constexpr uint64_t kMaxCount = uint64_t(std::numeric_limits<int64_t>::max());
  uint64_t count = 1;
  for (size_t i = 0; i < dims.size(); i++) {
    if (dims[i] > kMaxCount)
      return "has dim " + std::to_string(i) + " = " + std::to_string(dims[i]) + ", which is too large";
    if (__builtin_mul_overflow(count, dims[i], &count) || count > kMaxCount)
      return "has too many elements (the dims product overflows)";
  }
  if (dims[0] % traits->block_elements != 0)
    return "has ne[0] = " + std::to_string(dims[0]) + ", not a multiple of the " + traits->name +
           " block size " + std::to_string(traits->block_elements);
  uint64_t bytes;
  if (__builtin_mul_overflow(count / traits->block_elements, uint64_t(traits->block_bytes), &bytes) ||
      bytes > kMaxCount)
    return "has a byte size that overflows";
  *n_elements = count;
  *n_bytes = bytes;
  return {};
}

// Bounds-checked little-endian cursor over the whole image. `context_` names what is being
// read (a key or tensor) so that every error says where the problem is.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  void set_context(std::string c) { context_ = std::move(c); }
  const std::string& context() const { return context_; }

  [[noreturn]] void fail(const std::string& what) const { throw input_error(name_, what); }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("truncated: " + std::string(what) + " of " + context_ + " needs " + std::to_string(n) +
           " bytes at offset " + std::to_string(pos_) + " but the file ends at " + std::to_string(size_));
  }

  template <class T>
  T scalar(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const char* what) {
    uint64_t len = scalar<uint64_t>(what);
    if (len > remaining())
      fail("string length " + std::to_string(len) + " of " + context_ + " runs past the end of the file (" +
           std::to_string(remaining()) + " bytes left at offset " + std::to_string(pos_) + ")");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }

  // Rejects `count` items of `type` when even their smallest encoding exceeds the bytes left.
  void check_count_fits(uint64_t count, uint64_t min_item_bytes, const std::string& what) const {
    if (count > remaining() / min_item_bytes)
      fail(what + " count " + std::to_string(count) + " of " + context_ + " cannot fit in the " +
           std::to_string(remaining()) + " bytes left at offset " + std::to_string(pos_));
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& name_;
  std::string context_ = "header";
};

Value read_value(Cursor& in, ValueType type, int depth);

Array read_array(Cursor& in, int depth) {
  if (depth >= kMaxArrayNesting)
    in.fail("arrays nested deeper than " + std::to_string(kMaxArrayNesting) + " in " + in.context());
  uint32_t elem_id = in.scalar<uint32_t>("array element type");
  if (!is_known_value_type(elem_id))
    in.fail(in.context() + " has an array of unknown value type " + std::to_string(elem_id));
  ValueType elem = ValueType(elem_id);
  uint64_t count = in.scalar<uint64_t>("array length");
  in.check_count_fits(count, min_encoded_size(elem), "array of " + value_type_name(elem));
  Array a;
  a.element_type = elem;
  a.items.reserve(size_t(count));
  for (uint64_t i = 0; i < count; i++) a.items.push_back(read_value(in, elem, depth + 1));
  return a;
}

Value read_value(Cursor& in, ValueType type, int depth) {
  switch (type) {
    case ValueType::U8: return in.scalar<uint8_t>("u8 value");
    case ValueType::I8: return in.scalar<int8_t>("i8 value");
    case ValueType::U16: return in.scalar<uint16_t>("u16 value");
    case ValueType::I16: return in.scalar<int16_t>("i16 value");
    case ValueType::U32: return in.scalar<uint32_t>("u32 value");
    case ValueType::I32: return in.scalar<int32_t>("i32 value");
    case ValueType::F32: return in.scalar<float>("f32 value");
    case ValueType::Bool: {
      uint8_t b = in.scalar<uint8_t>("bool value");
      if (b > 1) in.fail("bool value " + std::to_string(b) + " of " + in.context() + " is not 0 or 1");
      return b == 1;
    }
    case ValueType::String: return in.string("string value");
    case ValueType::Array: return read_array(in, depth);
    case ValueType::U64: return in.scalar<uint64_t>("u64 value");
    case ValueType::I64: return in.scalar<int64_t>("i64 value");
    case ValueType::F64: return in.scalar<double>("f64 value");
  }
  in.fail("unknown value type in " + in.context());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Types

std::string value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "type " + std::to_string(uint32_t(t));
}

bool Array::operator==(const Array& o) const {
  return element_type == o.element_type && items == o.items;
}

Value Value::array(ValueType element_type, std::vector<Value> items) {
  Array a;
  a.element_type = element_type;
  a.items = std::move(items);
  return Value(std::move(a));
}

const GGMLTypeTraits* ggml_type_traits(uint32_t type_id) {
  // Index = ggml type id; block sizes follow ggml's block structs (QK_K = 256 for k-quants).
  static const GGMLTypeTraits kTable[] = {
      {"F32", 1, 4},        {"F16", 1, 2},       {"Q4_0", 32, 18},   {"Q4_1", 32, 20},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {"Q5_0", 32, 22},   {"Q5_1", 32, 24},
      {"Q8_0", 32, 34},     {"Q8_1", 32, 36},    {"Q2_K", 256, 84},  {"Q3_K", 256, 110},
      {"Q4_K", 256, 144},   {"Q5_K", 256, 176},  {"Q6_K", 256, 210}, {"Q8_K", 256, 292},
      {"IQ2_XXS", 256, 66}, {"IQ2_XS", 256, 74}, {"IQ3_XXS", 256, 98}, {"IQ1_S", 256, 50},
      {"IQ4_NL", 32, 18},   {"IQ3_S", 256, 110}, {"IQ2_S", 256, 82}, {"IQ4_XS", 256, 136},
      {"I8", 1, 1},         {"I16", 1, 2},       {"I32", 1, 4},      {"I64", 1, 8},
      {"F64", 1, 8},        {"IQ1_M", 256, 56},  {"BF16", 1, 2},     {nullptr, 0, 0},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {"TQ1_0", 256, 54}, {"TQ2_0", 256, 66},
      {nullptr, 0, 0},      {nullptr, 0, 0},     {nullptr, 0, 0},    {"MXFP4", 32, 17},
  };
  constexpr uint32_t n = sizeof(kTable) / sizeof(kTable[0]);
  if (type_id >= n || kTable[type_id].name == nullptr) return nullptr;
  return &kTable[type_id];
}

std::string ggml_type_name(uint32_t type_id) {
  const GGMLTypeTraits* t = ggml_type_traits(type_id);
  return t ? std::string(t->name) : "type " + std::to_string(type_id);
}

GGMLType ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return GGMLType::F32;
    case DType::F16: return GGMLType::F16;
    case DType::BF16: return GGMLType::BF16;
  }
  return GGMLType::F32;
}

bool dtype_of(uint32_t type_id, DType* out) {
  switch (GGMLType(type_id)) {
    case GGMLType::F32: *out = DType::F32; return true;
    case GGMLType::F16: *out = DType::F16; return true;
    case GGMLType::BF16: *out = DType::BF16; return true;
    default: return false;
  }
}

uint64_t tensor_n_bytes(uint32_t type_id, const std::vector<uint64_t>& dims) {
  uint64_t n_elements = 0, n_bytes = 0;
  std::string why = compute_tensor_size(type_id, dims, &n_elements, &n_bytes);
  if (!why.empty()) throw UserError("tensor " + why);
  return n_bytes;
}

// ---------------------------------------------------------------------------------------------
// Parsing

ParsedGGUF parse_gguf(const uint8_t* data, size_t size, const std::string& name) {
  Cursor in(data, size, name);
  ParsedGGUF out;

  if (size < 4) in.fail("not a GGUF file (only " + std::to_string(size) + " bytes)");
  uint32_t magic = in.scalar<uint32_t>("magic");
  if (magic != kMagic) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%02x %02x %02x %02x", data[0], data[1], data[2], data[3]);
    in.fail(std::string("not a GGUF file (magic bytes ") + hex + ", expected \"GGUF\")");
  }
  out.version = in.scalar<uint32_t>("version");
  if (out.version == 1)
    in.fail("GGUF version 1 is not supported (32-bit counts); only versions 2 and 3 are");
  if (out.version != 2 && out.version != 3) {
    uint32_t swapped = __builtin_bswap32(out.version);
    if (swapped == 2 || swapped == 3) in.fail("big-endian GGUF files are not supported");
    in.fail("unsupported GGUF version " + std::to_string(out.version) + " (only 2 and 3)");
  }
  uint64_t tensor_count = in.scalar<uint64_t>("tensor count");
  uint64_t kv_count = in.scalar<uint64_t>("metadata count");
  // Smallest KV: u64 key length, u32 type, 1-byte value. Smallest tensor info: u64 name
  // length, u32 n_dims, one u64 dim, u32 type, u64 offset.
  in.check_count_fits(kv_count, 8 + 4 + 1, "metadata");
  in.check_count_fits(tensor_count, 8 + 4 + 8 + 4 + 8, "tensor");

  out.metadata.reserve(size_t(kv_count));
  std::unordered_set<std::string> seen_keys;
  for (uint64_t i = 0; i < kv_count; i++) {
    in.set_context("metadata entry " + std::to_string(i));
    std::string key = in.string("key");
    in.set_context("key " + quote_name(key));
    if (!seen_keys.insert(key).second) in.fail("duplicate key " + quote_name(key));
    uint32_t type_id = in.scalar<uint32_t>("value type");
    if (!is_known_value_type(type_id))
      in.fail("key " + quote_name(key) + " has unknown value type " + std::to_string(type_id));
    Value v = read_value(in, ValueType(type_id), 0);
    out.metadata.push_back({std::move(key), std::move(v)});
  }

  for (const KeyValue& kv : out.metadata) {
    if (kv.key != kAlignmentKey) continue;
    const uint32_t* a = kv.value.get_if<uint32_t>();
    if (!a)
      in.fail(std::string(kAlignmentKey) + " must be u32, not " + value_type_name(kv.value.type()));
    if (*a == 0 || !std::has_single_bit(*a))
      in.fail(std::string(kAlignmentKey) + " = " + std::to_string(*a) + " is not a power of two");
    out.alignment = *a;
  }

  in.set_context("header");
  in.check_count_fits(tensor_count, 8 + 4 + 8 + 4 + 8, "tensor");
  out.tensors.reserve(size_t(tensor_count));
  std::unordered_set<std::string> seen_tensors;
  for (uint64_t i = 0; i < tensor_count; i++) {
    in.set_context("tensor info " + std::to_string(i));
    TensorInfo t;
    t.name = in.string("tensor name");
    in.set_context("tensor " + quote_name(t.name));
    if (!seen_tensors.insert(t.name).second) in.fail("duplicate tensor name " + quote_name(t.name));
    uint32_t n_dims = in.scalar<uint32_t>("n_dims");
    if (n_dims == 0 || n_dims > kMaxDims)
      in.fail("tensor " + quote_name(t.name) + " has " + std::to_string(n_dims) + " dims (1 to 4 are supported)");
    t.dims.resize(n_dims);
    for (uint32_t d = 0; d < n_dims; d++) t.dims[d] = in.scalar<uint64_t>("dim");
    t.ggml_type = in.scalar<uint32_t>("ggml type");
    t.offset = in.scalar<uint64_t>("data offset");
    std::string why = compute_tensor_size(t.ggml_type, t.dims, &t.n_elements, &t.n_bytes);
    if (!why.empty()) in.fail("tensor " + quote_name(t.name) + " " + why);
    out.tensors.push_back(std::move(t));
  }

  out.data_offset = align_up(in.pos(), out.alignment);
  const uint64_t data_size = size > out.data_offset ? size - out.data_offset : 0;
  for (const TensorInfo& t : out.tensors) {
    if (t.offset % out.alignment != 0)
      in.fail("tensor " + quote_name(t.name) + " offset " + std::to_string(t.offset) +
              " is not a multiple of the alignment " + std::to_string(out.alignment));
    if (t.offset > data_size || t.n_bytes > data_size - t.offset)
      in.fail("tensor " + quote_name(t.name) + " data (" + std::to_string(t.n_bytes) + " bytes at data offset " +
              std::to_string(t.offset) + ") runs past the end of the file (data section has " +
              std::to_string(data_size) + " bytes)");
  }
  // Overlap check on the non-empty ranges, in offset order.
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(out.tensors.size());
  for (const TensorInfo& t : out.tensors)
    if (t.n_bytes > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); i++) {
    const TensorInfo* prev = by_offset[i - 1];
    const TensorInfo* cur = by_offset[i];
    if (prev->offset + prev->n_bytes > cur->offset)
      in.fail("tensors " + quote_name(prev->name) + " and " + quote_name(cur->name) + " overlap in the data section");
  }
  return out;
}

void parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& name) {
  (void)parse_gguf(data, size, name);
}

// ---------------------------------------------------------------------------------------------
// GGUFFile

GGUFFile GGUFFile::from_memory(const uint8_t* data, size_t size, const std::string& name) {
  GGUFFile f;
  f.name_ = name;
  f.data_ = data;
  f.size_ = size;
  f.parsed_ = parse_gguf(data, size, name);
  for (size_t i = 0; i < f.parsed_.metadata.size(); i++) f.key_index_[f.parsed_.metadata[i].key] = i;
  for (size_t i = 0; i < f.parsed_.tensors.size(); i++) f.tensor_index_[f.parsed_.tensors[i].name] = i;
  return f;
}

GGUFFile GGUFFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw input_error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw input_error(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw input_error(path, "not a regular file");
  }
  size_t size = size_t(st.st_size);
  void* map = nullptr;
  if (size > 0) {
    map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw RuntimeError(path + ": mmap failed: " + std::strerror(e));
    }
  }
  ::close(fd);  // the mapping keeps the file contents reachable
  static const uint8_t kEmpty = 0;
  const uint8_t* data = map ? static_cast<const uint8_t*>(map) : &kEmpty;
  try {
    GGUFFile f = from_memory(data, size, path);
    f.mapping_ = map;
    return f;
  } catch (...) {
    if (map) ::munmap(map, size);
    throw;
  }
}

GGUFFile::GGUFFile(GGUFFile&& o) noexcept
    : name_(std::move(o.name_)),
      data_(o.data_),
      size_(o.size_),
      mapping_(o.mapping_),
      parsed_(std::move(o.parsed_)),
      key_index_(std::move(o.key_index_)),
      tensor_index_(std::move(o.tensor_index_)) {
  o.mapping_ = nullptr;
  o.data_ = nullptr;
  o.size_ = 0;
}

GGUFFile& GGUFFile::operator=(GGUFFile&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    data_ = o.data_;
    size_ = o.size_;
    mapping_ = o.mapping_;
    parsed_ = std::move(o.parsed_);
    key_index_ = std::move(o.key_index_);
    tensor_index_ = std::move(o.tensor_index_);
    o.mapping_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

GGUFFile::~GGUFFile() { release(); }

void GGUFFile::release() {
  if (mapping_) ::munmap(mapping_, size_);
  mapping_ = nullptr;
}

const Value* GGUFFile::find(const std::string& key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &parsed_.metadata[it->second].value;
}

const Value& GGUFFile::at(const std::string& key) const {
  const Value* v = find(key);
  if (!v) throw input_error(name_, "missing key " + quote_name(key));
  return *v;
}

namespace {

// Integer value of any integer alternative, as a signed 128-bit number so that both u64 and
// i64 fit; nullopt-like `false` for non-integers.
bool integer_of(const Value& v, __int128* out) {
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          *out = __int128(x);
          return true;
        } else {
          return false;
        }
      },
      v.storage());
}

bool float_of(const Value& v, double* out) {
  if (const float* f = v.get_if<float>()) { *out = *f; return true; }
  if (const double* d = v.get_if<double>()) { *out = *d; return true; }
  return false;
}

}  // namespace

std::string GGUFFile::get_string(const std::string& key) const {
  const Value& v = at(key);
  if (const std::string* s = v.get_if<std::string>()) return *s;
  throw input_error(name_, "key " + quote_name(key) + " is " + value_type_name(v.type()) + ", expected string");
}

uint64_t GGUFFile::get_uint(const std::string& key) const {
  const Value& v = at(key);
  __int128 x;
  if (!integer_of(v, &x))
    throw input_error(name_, "key " + quote_name(key) + " is " + value_type_name(v.type()) + ", expected an integer");
  if (x < 0) throw input_error(name_, "key " + quote_name(key) + " is negative");
  return uint64_t(x);
}

int64_t GGUFFile::get_int(const std::string& key) const {
  const Value& v = at(key);
  __int128 x;
  if (!integer_of(v, &x))
    throw input_error(name_, "key " + quote_name(key) + " is " + value_type_name(v.type()) + ", expected an integer");
  if (x > std::numeric_limits<int64_t>::max())
    throw input_error(name_, "key " + quote_name(key) + " does not fit in a signed 64-bit integer");
  return int64_t(x);
}

double GGUFFile::get_float(const std::string& key) const {
  const Value& v = at(key);
  double d;
  if (!float_of(v, &d))
    throw input_error(name_, "key " + quote_name(key) + " is " + value_type_name(v.type()) + ", expected f32 or f64");
  return d;
}

bool GGUFFile::get_bool(const std::string& key) const {
  const Value& v = at(key);
  if (const bool* b = v.get_if<bool>()) return *b;
  throw input_error(name_, "key " + quote_name(key) + " is " + value_type_name(v.type()) + ", expected bool");
}

std::vector<std::string> GGUFFile::get_string_array(const std::string& key) const {
  const Value& v = at(key);
  const Array* a = v.get_if<Array>();
  if (!a || a->element_type != ValueType::String)
    throw input_error(name_, "key " + quote_name(key) + " is not an array of strings");
  std::vector<std::string> out;
  out.reserve(a->items.size());
  for (const Value& item : a->items) out.push_back(*item.get_if<std::string>());
  return out;
}

std::vector<float> GGUFFile::get_f32_array(const std::string& key) const {
  const Value& v = at(key);
  const Array* a = v.get_if<Array>();
  if (!a || (a->element_type != ValueType::F32 && a->element_type != ValueType::F64))
    throw input_error(name_, "key " + quote_name(key) + " is not an array of f32");
  std::vector<float> out;
  out.reserve(a->items.size());
  for (const Value& item : a->items) {
    double d = 0;
    float_of(item, &d);
    out.push_back(float(d));
  }
  return out;
}

std::vector<int64_t> GGUFFile::get_int_array(const std::string& key) const {
  const Value& v = at(key);
  const Array* a = v.get_if<Array>();
  const bool integer_elements = a && a->element_type != ValueType::F32 && a->element_type != ValueType::F64 &&
                                a->element_type != ValueType::Bool && a->element_type != ValueType::String &&
                                a->element_type != ValueType::Array;
  if (!integer_elements) throw input_error(name_, "key " + quote_name(key) + " is not an array of integers");
  std::vector<int64_t> out;
  out.reserve(a->items.size());
  for (const Value& item : a->items) {
    __int128 x = 0;
    integer_of(item, &x);
    if (x > std::numeric_limits<int64_t>::max())
      throw input_error(name_, "key " + quote_name(key) + " has an item that does not fit in a signed 64-bit integer");
    out.push_back(int64_t(x));
  }
  return out;
}

const TensorInfo* GGUFFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &parsed_.tensors[it->second];
}

const TensorInfo& GGUFFile::tensor(const std::string& name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw input_error(name_, "no tensor named " + quote_name(name));
  return *t;
}

std::span<const uint8_t> GGUFFile::tensor_bytes(const TensorInfo& t) const {
  // Ranges were validated at parse time; zero-byte tensors may sit past the end of the file.
  if (t.n_bytes == 0) return {};
  return {data_ + parsed_.data_offset + t.offset, size_t(t.n_bytes)};
}

DType GGUFFile::tensor_dtype(const TensorInfo& t) const {
  DType d;
  if (!dtype_of(t.ggml_type, &d))
    throw input_error(name_, "tensor " + quote_name(t.name) + " has type " + ggml_type_name(t.ggml_type) +
                                 ", only F32/F16/BF16 are supported");
  return d;
}

const void* GGUFFile::tensor_data(const TensorInfo& t) const {
  (void)tensor_dtype(t);
  return tensor_bytes(t).data();
}

void GGUFFile::read_f32(const TensorInfo& t, float* dst) const {
  DType d = tensor_dtype(t);
  if (t.n_elements == 0) return;
  auto bytes = tensor_bytes(t);
  // general.alignment may be 1, 2 or 4 (llama.cpp accepts any power of two), which leaves the
  // data of a 16- or 32-bit tensor misaligned; convert from an aligned copy then (fuzz_gguf).
  if (reinterpret_cast<uintptr_t>(bytes.data()) % dtype_size(d) != 0) {
    std::vector<float> aligned((bytes.size() + 3) / 4);
    std::memcpy(aligned.data(), bytes.data(), bytes.size());
    to_f32(d, aligned.data(), dst, size_t(t.n_elements));
    return;
  }
  to_f32(d, bytes.data(), dst, size_t(t.n_elements));
}

std::vector<float> GGUFFile::read_f32(const std::string& name) const {
  const TensorInfo& t = tensor(name);
  (void)tensor_dtype(t);
  std::vector<float> out(size_t(t.n_elements));
  read_f32(t, out.data());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

TensorToWrite TensorToWrite::make(std::string name, std::vector<uint64_t> dims, DType dtype,
                                  std::function<void(std::span<uint8_t>)> fill) {
  return TensorToWrite{std::move(name), std::move(dims), uint32_t(ggml_type_of(dtype)), std::move(fill)};
}

namespace {

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// Payload only; the caller writes the type id (arrays write their element type themselves).
void put_value(std::vector<uint8_t>& out, const Value& v, int depth, const std::string& path,
               const std::string& key) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          if (depth >= kMaxArrayNesting)
            throw input_error(path, "key " + quote_name(key) + " nests arrays deeper than " +
                                        std::to_string(kMaxArrayNesting));
          put<uint32_t>(out, uint32_t(x.element_type));
          put<uint64_t>(out, x.items.size());
          for (const Value& item : x.items) {
            if (item.type() != x.element_type)
              throw input_error(path, "key " + quote_name(key) + " has a " + value_type_name(item.type()) +
                                          " item in an array of " + value_type_name(x.element_type));
            put_value(out, item, depth + 1, path, key);
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          put<uint8_t>(out, x ? 1 : 0);
        } else {
          put<T>(out, x);
        }
      },
      v.storage());
}

void write_all(std::FILE* f, const void* data, size_t n, const std::string& path) {
  if (n > 0 && std::fwrite(data, 1, n, f) != n)
    throw RuntimeError(path + ": write failed: " + std::strerror(errno));
}

}  // namespace

GGUFWriter::GGUFWriter(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp-" + std::to_string(::getpid())) {}

GGUFWriter::~GGUFWriter() {
  if (tmp_exists_) std::remove(tmp_path_.c_str());
}

void GGUFWriter::set(const std::string& key, Value value) {
  auto it = key_index_.find(key);
  if (it != key_index_.end()) {
    metadata_[it->second].value = std::move(value);
    return;
  }
  key_index_[key] = metadata_.size();
  metadata_.push_back({key, std::move(value)});
}

void GGUFWriter::add_tensor(TensorToWrite tensor) {
  if (tensor_index_.count(tensor.name)) throw input_error(path_, "duplicate tensor name " + quote_name(tensor.name));
  uint64_t n_elements = 0, n_bytes = 0;
  std::string why = compute_tensor_size(tensor.ggml_type, tensor.dims, &n_elements, &n_bytes);
  if (!why.empty()) throw input_error(path_, "tensor " + quote_name(tensor.name) + " " + why);
  if (!tensor.fill) throw input_error(path_, "tensor " + quote_name(tensor.name) + " has no data source");
  tensor_index_[tensor.name] = tensors_.size();
  tensors_.push_back(std::move(tensor));
}

void GGUFWriter::finish() {
  uint64_t alignment = kDefaultAlignment;
  if (auto it = key_index_.find(kAlignmentKey); it != key_index_.end()) {
    const uint32_t* a = metadata_[it->second].value.get_if<uint32_t>();
    if (!a || *a == 0 || !std::has_single_bit(*a))
      throw input_error(path_, std::string(kAlignmentKey) + " must be a u32 power of two");
    alignment = *a;
  }

  // Everything before the data section is small: build it in memory.
  std::vector<uint8_t> head;
  put<uint32_t>(head, kMagic);
  put<uint32_t>(head, kWriteVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, metadata_.size());
  for (const KeyValue& kv : metadata_) {
    put_string(head, kv.key);
    put<uint32_t>(head, uint32_t(kv.value.type()));
    put_value(head, kv.value, 0, path_, kv.key);
  }
  std::vector<uint64_t> sizes(tensors_.size());
  uint64_t data_cursor = 0;
  for (size_t i = 0; i < tensors_.size(); i++) {
    const TensorToWrite& t = tensors_[i];
    sizes[i] = tensor_n_bytes(t.ggml_type, t.dims);
    put_string(head, t.name);
    put<uint32_t>(head, uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) put<uint64_t>(head, d);
    put<uint32_t>(head, t.ggml_type);
    put<uint64_t>(head, data_cursor);
    data_cursor = align_up(data_cursor + sizes[i], alignment);
  }
  // Without tensors there is no data section to align; like gguf-py, the file then ends
  // right after the metadata (llama.cpp's vocab-only files look like this).
  if (!tensors_.empty()) head.resize(align_up(head.size(), alignment), 0);

  std::FILE* f = nullptr;
  try {
    remove_stale_temps(path_);  // <path>.tmp-<pid> of killed runs
    f = std::fopen(tmp_path_.c_str(), "wb");
    if (!f) throw RuntimeError(path_ + ": cannot create " + tmp_path_ + ": " + std::strerror(errno));
    tmp_exists_ = true;
    // Errors name the file asked for; the temp file is removed on the way out.
    write_all(f, head.data(), head.size(), path_);
    std::vector<uint8_t> buffer;
    static const uint8_t kZeros[256] = {};
    for (size_t i = 0; i < tensors_.size(); i++) {
      buffer.resize(size_t(sizes[i]));
      tensors_[i].fill(std::span<uint8_t>(buffer.data(), buffer.size()));
      write_all(f, buffer.data(), buffer.size(), path_);
      uint64_t pad = align_up(sizes[i], alignment) - sizes[i];
      while (pad > 0) {
        size_t n = size_t(std::min<uint64_t>(pad, sizeof(kZeros)));
        write_all(f, kZeros, n, path_);
        pad -= n;
      }
    }
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      throw RuntimeError(path_ + ": write failed: " + std::strerror(errno));
    std::FILE* closing = f;
    f = nullptr;
    if (std::fclose(closing) != 0) throw RuntimeError(path_ + ": write failed: " + std::strerror(errno));
    if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0)
      throw RuntimeError(path_ + ": cannot rename " + tmp_path_ + " into place: " + std::strerror(errno));
    tmp_exists_ = false;
  } catch (...) {
    if (f) std::fclose(f);
    if (tmp_exists_) std::remove(tmp_path_.c_str());
    tmp_exists_ = false;
    throw;
  }
}

}  // namespace llmprune::gguf
