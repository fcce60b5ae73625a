#pragma once
// GGUF v2/v3 container: typed metadata, tensor directory, aligned tensor data.
// This layer knows the file format only; what the keys and tensors mean for a model is elsewhere.
// Format notes and the list of checks are in docs/gguf.md.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/dtype.h"

namespace llmprune::gguf {

// Metadata value types; the numbers are the on-disk type ids.
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
  String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};
std::string value_type_name(ValueType t);  // "u8", ..., "string", "array"

class Value;

// A homogeneous array; every item has type `element_type` (items may themselves be arrays).
struct Array {
  ValueType element_type = ValueType::U8;
  std::vector<Value> items;
  bool operator==(const Array&) const;
};

// One metadata value. The variant's alternative index equals the on-disk ValueType id.
class Value {
 public:
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, Array, uint64_t, int64_t, double>;

  Value() : storage_(uint8_t{0}) {}
  Value(uint8_t v) : storage_(v) {}
  Value(int8_t v) : storage_(v) {}
  Value(uint16_t v) : storage_(v) {}
  Value(int16_t v) : storage_(v) {}
  Value(uint32_t v) : storage_(v) {}
  Value(int32_t v) : storage_(v) {}
  Value(float v) : storage_(v) {}
  Value(bool v) : storage_(v) {}
  Value(std::string v) : storage_(std::move(v)) {}
  Value(const char* v) : storage_(std::string(v)) {}
  Value(Array v) : storage_(std::move(v)) {}
  Value(uint64_t v) : storage_(v) {}
  Value(int64_t v) : storage_(v) {}
  Value(double v) : storage_(v) {}

  // Arrays from plain vectors; the element type follows T (std::string gives a string array).
  template <class T>
  static Value array_of(const std::vector<T>& xs) {
    Array a;
    a.element_type = Value(T{}).type();
    a.items.reserve(xs.size());
    for (const T& x : xs) a.items.emplace_back(x);
    return Value(std::move(a));
  }
  // An array of arrays (or of anything else) built from ready Values; all must have `element_type`.
  static Value array(ValueType element_type, std::vector<Value> items);

  ValueType type() const { return ValueType(storage_.index()); }
  const Storage& storage() const { return storage_; }
  template <class T> bool holds() const { return std::holds_alternative<T>(storage_); }
  template <class T> const T* get_if() const { return std::get_if<T>(&storage_); }

  bool operator==(const Value& o) const { return storage_ == o.storage_; }

 private:
  Storage storage_;
};

struct KeyValue {
  std::string key;
  Value value;
};

// ggml tensor types. Only F32/F16/BF16 can be read as values; the others are listed by name.
enum class GGMLType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};
// Layout of one ggml type: `block_elements` values are stored in `block_bytes` bytes.
struct GGMLTypeTraits {
  const char* name;
  uint32_t block_elements;
  uint32_t block_bytes;
};
// nullptr for type ids this reader does not know (including removed ones such as 4 and 5).
const GGMLTypeTraits* ggml_type_traits(uint32_t type_id);
std::string ggml_type_name(uint32_t type_id);  // "Q4_K", or "type 77" when unknown
GGMLType ggml_type_of(DType t);
// True (and *out set) for F32/F16/BF16.
bool dtype_of(uint32_t type_id, DType* out);

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] varies fastest (= number of columns)
  uint32_t ggml_type = 0;      // raw id; see GGMLType
  uint64_t offset = 0;         // from the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  // Row-major (PyTorch/safetensors) order: dims reversed, e.g. {rows, cols} for a matrix.
  std::vector<uint64_t> shape() const { return {dims.rbegin(), dims.rend()}; }
};

// Everything the header section says, validated against a buffer of `file_size` bytes.
struct ParsedGGUF {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // absolute offset of the data section (aligned)
  std::vector<KeyValue> metadata;  // file order
  std::vector<TensorInfo> tensors;  // file order
};

// Validates a whole GGUF image in memory; throws UserError "<name>: <what>" on any defect.
// This is the single parse path: GGUFFile uses it too. Suitable as a fuzzing entry point.
ParsedGGUF parse_gguf(const uint8_t* data, size_t size, const std::string& name);
void parse_gguf_buffer(const uint8_t* data, size_t size, const std::string& name);

class GGUFFile {
 public:
  // mmaps `path` read-only and parses it; the mapping lives as long as this object.
  static GGUFFile open(const std::string& path);
  // Parses a caller-owned buffer, which must outlive the returned object.
  static GGUFFile from_memory(const uint8_t* data, size_t size, const std::string& name);

  GGUFFile(GGUFFile&&) noexcept;
  GGUFFile& operator=(GGUFFile&&) noexcept;
  GGUFFile(const GGUFFile&) = delete;
  GGUFFile& operator=(const GGUFFile&) = delete;
  ~GGUFFile();

  const std::string& path() const { return name_; }
  uint32_t version() const { return parsed_.version; }
  uint64_t alignment() const { return parsed_.alignment; }
  uint64_t data_offset() const { return parsed_.data_offset; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

  // Metadata, in file order.
  const std::vector<KeyValue>& metadata() const { return parsed_.metadata; }
  const Value* find(const std::string& key) const;  // nullptr when absent
  const Value& at(const std::string& key) const;    // throws "<file>: missing key 'k'"
  // Typed getters; throw a UserError naming the file and key on absence or type mismatch.
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;  // any integer type holding a value >= 0
  int64_t get_int(const std::string& key) const;    // any integer type that fits int64
  double get_float(const std::string& key) const;   // f32 or f64
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_f32_array(const std::string& key) const;  // f32 (or f64) array
  std::vector<int64_t> get_int_array(const std::string& key) const;  // any integer array

  // Tensors, in file order.
  const std::vector<TensorInfo>& tensors() const { return parsed_.tensors; }
  const TensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent
  const TensorInfo& tensor(const std::string& name) const;       // throws when absent
  // Raw stored bytes of any tensor type (pointer into the mapping).
  std::span<const uint8_t> tensor_bytes(const TensorInfo& t) const;
  // F32/F16/BF16 only: storage dtype and a pointer to the stored values.
  // Other types throw "tensor X has type Q4_K, only F32/F16/BF16 are supported".
  DType tensor_dtype(const TensorInfo& t) const;
  const void* tensor_data(const TensorInfo& t) const;
  // Converts to fp32 into `dst` (t.n_elements floats), or into a new vector.
  void read_f32(const TensorInfo& t, float* dst) const;
  std::vector<float> read_f32(const std::string& name) const;

 private:
  GGUFFile() = default;
  void release();

  std::string name_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when we own an mmap of size_ bytes
  ParsedGGUF parsed_;
  std::unordered_map<std::string, size_t> key_index_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// A tensor to write. `fill` is called once, during finish(), with a buffer of exactly
// n_bytes to fill with the stored bytes; tensors are produced one at a time.
struct TensorToWrite {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] varies fastest (= number of columns)
  uint32_t ggml_type = 0;      // F32/F16/BF16, or any known type when copying raw bytes
  std::function<void(std::span<uint8_t> out)> fill;

  static TensorToWrite make(std::string name, std::vector<uint64_t> dims, DType dtype,
                            std::function<void(std::span<uint8_t>)> fill);
};

// Byte size of a tensor of `type_id` with ggml-order `dims`; throws UserError on unknown
// types, more than 4 dims, size overflow, or dims[0] not a multiple of the block size.
uint64_t tensor_n_bytes(uint32_t type_id, const std::vector<uint64_t>& dims);

class GGUFWriter {
 public:
  explicit GGUFWriter(std::string path);
  ~GGUFWriter();  // removes the temp file if finish() did not complete
  GGUFWriter(const GGUFWriter&) = delete;
  GGUFWriter& operator=(const GGUFWriter&) = delete;

  // Adds a key, or replaces its value in place (order is kept).
  void set(const std::string& key, Value value);
  void add_tensor(TensorToWrite tensor);
  const std::vector<KeyValue>& metadata() const { return metadata_; }

  // Writes <path>.tmp-<pid> (header, metadata, tensor infos, aligned data) and renames it to <path>.
  // Alignment is 32 unless general.alignment (u32, power of two) is set.
  void finish();

 private:
  std::string path_;
  std::string tmp_path_;
  bool tmp_exists_ = false;
  std::vector<KeyValue> metadata_;
  std::unordered_map<std::string, size_t> key_index_;
  std::vector<TensorToWrite> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace llmprune::gguf
