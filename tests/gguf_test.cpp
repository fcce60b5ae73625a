// GGUF container: round trips, the real llama.cpp vocab file, malformed inputs, mutation fuzzing.
#include "io/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "core/error.h"

namespace fs = std::filesystem;
using namespace llmprune;
using namespace llmprune::gguf;

namespace {

const std::string kVocabPath =
    std::string(LLMPRUNE_SHARED_DIR) + "/fixtures/tokenizers/llamacpp-vocab/ggml-vocab-llama-spm.gguf";

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A per-test scratch directory, removed afterwards.
class GGUFTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("llmprune_gguf_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// Fills a tensor with a deterministic pattern stored as `dtype`; returns the fp32 values
// that reading it back must produce.
std::vector<float> pattern_values(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) v[i] = std::sin(seed + 0.37f * float(i)) * (1.0f + float(i % 7));
  return v;
}

std::vector<float> rounded_through(DType dtype, const std::vector<float>& v) {
  if (v.empty()) return {};
  std::vector<uint8_t> stored(v.size() * dtype_size(dtype));
  from_f32(dtype, v.data(), stored.data(), v.size());
  std::vector<float> back(v.size());
  to_f32(dtype, stored.data(), back.data(), v.size());
  return back;
}

TensorToWrite pattern_tensor(const std::string& name, std::vector<uint64_t> dims, DType dtype, float seed) {
  size_t n = 1;
  for (uint64_t d : dims) n *= size_t(d);
  return TensorToWrite::make(name, dims, dtype, [n, dtype, seed](std::span<uint8_t> out) {
    ASSERT_EQ(out.size(), n * dtype_size(dtype));
    if (n == 0) return;  // no pointers to hand to from_f32
    std::vector<float> v = pattern_values(n, seed);
    from_f32(dtype, v.data(), out.data(), n);
  });
}

// Every value type, edge values, arrays of every type, nested arrays of strings.
std::vector<KeyValue> all_value_kinds() {
  std::vector<KeyValue> kv;
  kv.push_back({"general.architecture", Value("llama")});
  kv.push_back({"t.u8", Value(uint8_t(255))});
  kv.push_back({"t.i8", Value(int8_t(-128))});
  kv.push_back({"t.u16", Value(uint16_t(65535))});
  kv.push_back({"t.i16", Value(int16_t(-32768))});
  kv.push_back({"t.u32", Value(uint32_t(4000000000u))});
  kv.push_back({"t.i32", Value(int32_t(-2000000000))});
  kv.push_back({"t.f32", Value(1e-6f)});
  kv.push_back({"t.f32_inf", Value(-std::numeric_limits<float>::infinity())});
  kv.push_back({"t.bool_true", Value(true)});
  kv.push_back({"t.bool_false", Value(false)});
  kv.push_back({"t.string", Value(std::string("caf\xc3\xa9 \x00 nul", 11))});
  kv.push_back({"t.empty_string", Value("")});
  kv.push_back({"t.u64", Value(std::numeric_limits<uint64_t>::max())});
  kv.push_back({"t.i64", Value(std::numeric_limits<int64_t>::min())});
  kv.push_back({"t.f64", Value(3.141592653589793)});
  kv.push_back({"a.u8", Value::array_of(std::vector<uint8_t>{0, 1, 255})});
  kv.push_back({"a.i8", Value::array_of(std::vector<int8_t>{-1, 0, 127})});
  kv.push_back({"a.u16", Value::array_of(std::vector<uint16_t>{1, 65535})});
  kv.push_back({"a.i16", Value::array_of(std::vector<int16_t>{-5, 5})});
  kv.push_back({"a.u32", Value::array_of(std::vector<uint32_t>{7, 8, 9})});
  kv.push_back({"a.i32", Value::array_of(std::vector<int32_t>{-7, 8, -9})});
  kv.push_back({"a.f32", Value::array_of(std::vector<float>{0.5f, -0.0f, 1e30f})});
  kv.push_back({"a.bool", Value::array_of(std::vector<bool>{true, false, true})});
  kv.push_back({"a.string", Value::array_of(std::vector<std::string>{"a", "", "<0x0A>", "\xe2\x96\x81the"})});
  kv.push_back({"a.u64", Value::array_of(std::vector<uint64_t>{0, uint64_t(1) << 63})});
  kv.push_back({"a.i64", Value::array_of(std::vector<int64_t>{-1, 1})});
  kv.push_back({"a.f64", Value::array_of(std::vector<double>{1e-300, -2.5})});
  kv.push_back({"a.empty", Value::array_of(std::vector<uint32_t>{})});
  kv.push_back({"a.nested_strings",
                Value::array(ValueType::Array, {Value::array_of(std::vector<std::string>{"x", "yy"}),
                                                Value::array_of(std::vector<std::string>{}),
                                                Value::array_of(std::vector<std::string>{"zzz"})})});
  kv.push_back({"a.nested_twice",
                Value::array(ValueType::Array,
                             {Value::array(ValueType::Array, {Value::array_of(std::vector<int8_t>{1, 2})})})});
  return kv;
}

struct WrittenTensor {
  std::string name;
  std::vector<uint64_t> dims;
  DType dtype;
  float seed;
};

const std::vector<WrittenTensor>& odd_tensors() {
  static const std::vector<WrittenTensor> t = {
      {"blk.0.attn_q.weight", {7, 3}, DType::F32, 0.1f},
      {"blk.0.ffn_down.weight", {5, 3, 2}, DType::F16, 0.2f},
      {"blk.0.attn_norm.weight", {13}, DType::BF16, 0.3f},
      {"empty.weight", {0, 4}, DType::F32, 0.4f},
      {"token_embd.weight", {3, 1, 1, 5}, DType::BF16, 0.5f},
      {"output.weight", {1}, DType::F16, 0.6f},
  };
  return t;
}

void write_sample(const std::string& path, uint32_t alignment = 0) {
  GGUFWriter w(path);
  for (const KeyValue& kv : all_value_kinds()) w.set(kv.key, kv.value);
  if (alignment) w.set("general.alignment", Value(alignment));
  for (const WrittenTensor& t : odd_tensors()) w.add_tensor(pattern_tensor(t.name, t.dims, t.dtype, t.seed));
  w.finish();
}

// Copies every key and tensor (raw bytes) of `src` into a new file.
void rewrite(const GGUFFile& src, const std::string& path) {
  GGUFWriter w(path);
  for (const KeyValue& kv : src.metadata()) w.set(kv.key, kv.value);
  for (const TensorInfo& t : src.tensors()) {
    w.add_tensor(TensorToWrite{t.name, t.dims, t.ggml_type, [&src, &t](std::span<uint8_t> out) {
                                 auto bytes = src.tensor_bytes(t);
                                 ASSERT_EQ(out.size(), bytes.size());
                                 if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
                               }});
  }
  w.finish();
}

// Expects parsing to fail with a UserError whose message names the file and contains `needle`.
void expect_parse_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    parse_gguf_buffer(bytes.data(), bytes.size(), "bad.gguf");
    ADD_FAILURE() << "parse succeeded, expected an error containing: " << needle;
  } catch (const UserError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected: " << needle;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Hand-assembles GGUF bytes so that each malformation can be placed exactly.
struct Bytes {
  std::vector<uint8_t> b;
  template <class T> Bytes& put(T v) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  Bytes& kv_u32(const std::string& key, uint32_t v) { return str(key).put<uint32_t>(4).put<uint32_t>(v); }
  Bytes& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(dims.size()));
    for (uint64_t d : dims) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Bytes& pad_to(size_t alignment) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

}  // namespace

TEST_F(GGUFTest, RoundTripEveryValueTypeAndTensorDtype) {
  const std::string p1 = path("a.gguf");
  write_sample(p1);
  EXPECT_FALSE(fs::exists(p1 + ".tmp"));

  GGUFFile f = GGUFFile::open(p1);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);

  // Metadata: same keys, same order, same values (bitwise for floats via Value ==).
  const std::vector<KeyValue> expected = all_value_kinds();
  ASSERT_EQ(f.metadata().size(), expected.size());
  for (size_t i = 0; i < expected.size(); i++) {
    EXPECT_EQ(f.metadata()[i].key, expected[i].key);
    EXPECT_TRUE(f.metadata()[i].value == expected[i].value) << expected[i].key;
    EXPECT_EQ(f.metadata()[i].value.type(), expected[i].value.type()) << expected[i].key;
  }
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("t.string"), std::string("caf\xc3\xa9 \x00 nul", 11));
  EXPECT_EQ(f.get_uint("t.u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(f.get_int("t.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f.get_uint("t.u8"), 255u);
  EXPECT_EQ(f.get_int("t.i8"), -128);
  EXPECT_FLOAT_EQ(float(f.get_float("t.f32")), 1e-6f);
  EXPECT_DOUBLE_EQ(f.get_float("t.f64"), 3.141592653589793);
  EXPECT_TRUE(f.get_bool("t.bool_true"));
  EXPECT_FALSE(f.get_bool("t.bool_false"));
  EXPECT_EQ(f.get_string_array("a.string"),
            (std::vector<std::string>{"a", "", "<0x0A>", "\xe2\x96\x81the"}));
  EXPECT_EQ(f.get_f32_array("a.f32")[2], 1e30f);
  EXPECT_THROW(f.get_int_array("a.u64"), UserError);  // 2^63 does not fit int64
  EXPECT_EQ(f.get_int_array("a.u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(f.get_int_array("a.i32"), (std::vector<int64_t>{-7, 8, -9}));
  const Array* nested = f.at("a.nested_strings").get_if<Array>();
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->items.size(), 3u);
  EXPECT_EQ(*nested->items[2].get_if<Array>()->items[0].get_if<std::string>(), "zzz");

  // Typed getters name the file and key on mismatch.
  try {
    f.get_string("t.u32");
    ADD_FAILURE();
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), p1 + ": key 't.u32' is u32, expected string");
  }
  EXPECT_THROW(f.get_uint("t.i64"), UserError);       // negative
  EXPECT_THROW(f.get_int("t.u64"), UserError);        // does not fit
  EXPECT_THROW(f.get_string("no.such.key"), UserError);
  EXPECT_THROW(f.get_f32_array("a.string"), UserError);

  // Tensors: shape, type, values, in file order.
  ASSERT_EQ(f.tensors().size(), odd_tensors().size());
  for (size_t i = 0; i < odd_tensors().size(); i++) {
    const WrittenTensor& w = odd_tensors()[i];
    const TensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, w.name);
    EXPECT_EQ(t.dims, w.dims);
    EXPECT_EQ(t.shape(), std::vector<uint64_t>(w.dims.rbegin(), w.dims.rend()));
    EXPECT_EQ(t.ggml_type, uint32_t(ggml_type_of(w.dtype)));
    EXPECT_EQ(f.tensor_dtype(t), w.dtype);
    EXPECT_EQ(t.offset % 32, 0u);
    size_t n = 1;
    for (uint64_t d : w.dims) n *= size_t(d);
    EXPECT_EQ(t.n_elements, n);
    EXPECT_EQ(t.n_bytes, n * dtype_size(w.dtype));
    std::vector<float> got = f.read_f32(w.name);
    std::vector<float> want = rounded_through(w.dtype, pattern_values(n, w.seed));
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < n; k++) EXPECT_EQ(got[k], want[k]) << w.name << "[" << k << "]";
  }
  EXPECT_EQ(f.tensor("blk.0.ffn_down.weight").shape(), (std::vector<uint64_t>{2, 3, 5}));
  EXPECT_EQ(f.find_tensor("missing"), nullptr);
  EXPECT_THROW(f.tensor("missing"), UserError);

  // Writing what we read gives the same bytes, and so does doing it once more.
  const std::string p2 = path("b.gguf");
  rewrite(f, p2);
  EXPECT_EQ(read_bytes(p1), read_bytes(p2));
  GGUFFile f2 = GGUFFile::open(p2);
  const std::string p3 = path("c.gguf");
  rewrite(f2, p3);
  EXPECT_EQ(read_bytes(p2), read_bytes(p3));

  // The in-memory parse entry point takes the same bytes.
  std::vector<uint8_t> bytes = read_bytes(p1);
  EXPECT_NO_THROW(parse_gguf_buffer(bytes.data(), bytes.size(), "mem"));
}

TEST_F(GGUFTest, CustomAlignmentIsHonoured) {
  for (uint32_t alignment : {1u, 8u, 64u, 4096u}) {
    const std::string p = path("align" + std::to_string(alignment) + ".gguf");
    write_sample(p, alignment);
    GGUFFile f = GGUFFile::open(p);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    for (const TensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    for (const WrittenTensor& w : odd_tensors()) {
      size_t n = 1;
      for (uint64_t d : w.dims) n *= size_t(d);
      EXPECT_EQ(f.read_f32(w.name), rounded_through(w.dtype, pattern_values(n, w.seed)));
    }
    const std::string again = p + ".again";
    rewrite(f, again);
    EXPECT_EQ(read_bytes(p), read_bytes(again));
  }
}

TEST_F(GGUFTest, WriterIsAtomicAndRejectsBadInput) {
  const std::string p = path("atomic.gguf");
  write_bytes(p, {'o', 'l', 'd'});
  {
    GGUFWriter w(p);
    w.set("general.architecture", Value("llama"));
    w.add_tensor(TensorToWrite::make("x", {4}, DType::F32, [](std::span<uint8_t>) {
      throw RuntimeError("producer failed");
    }));
    EXPECT_THROW(w.finish(), RuntimeError);
  }
  EXPECT_EQ(read_bytes(p), (std::vector<uint8_t>{'o', 'l', 'd'}));  // untouched
  EXPECT_FALSE(fs::exists(p + ".tmp-" + std::to_string(::getpid())));

  GGUFWriter w(p);
  w.add_tensor(pattern_tensor("x", {4}, DType::F32, 0));
  EXPECT_THROW(w.add_tensor(pattern_tensor("x", {4}, DType::F32, 0)), UserError);  // duplicate name
  EXPECT_THROW(w.add_tensor(pattern_tensor("y", {1, 1, 1, 1, 1}, DType::F32, 0)), UserError);  // 5 dims
  w.set("k", Value(uint32_t(1)));
  w.set("k", Value("replaced"));  // replaces in place
  ASSERT_EQ(w.metadata().size(), 1u);
  EXPECT_EQ(*w.metadata()[0].value.get_if<std::string>(), "replaced");
  w.set("general.alignment", Value(uint32_t(48)));
  EXPECT_THROW(w.finish(), UserError);  // not a power of two
  w.set("general.alignment", Value(uint32_t(16)));
  w.set("mixed", Value::array(ValueType::U8, {Value(uint8_t(1)), Value(int8_t(2))}));
  EXPECT_THROW(w.finish(), UserError);  // array items must match the element type
  EXPECT_FALSE(fs::exists(p + ".tmp-" + std::to_string(::getpid())));
}

TEST_F(GGUFTest, ReadsLlamaCppVocabFile) {
  if (!fs::exists(kVocabPath)) GTEST_SKIP() << "fixture missing: " << kVocabPath;
  GGUFFile f = GGUFFile::open(kVocabPath);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 22u);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.metadata()[0].key, "general.architecture");
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 32u);
  EXPECT_EQ(f.get_uint("llama.embedding_length"), 4096u);
  EXPECT_NEAR(f.get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);

  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  std::vector<float> scores = f.get_f32_array("tokenizer.ggml.scores");
  std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 32000u);
  ASSERT_EQ(scores.size(), 32000u);
  ASSERT_EQ(types.size(), 32000u);
  EXPECT_EQ(tokens[0], "<unk>");
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[2], "</s>");
  EXPECT_EQ(tokens[3], "<0x00>");
  EXPECT_EQ(types[3], 6);  // byte token
  EXPECT_EQ(types[1], 3);  // control token
  EXPECT_EQ(f.get_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get_uint("tokenizer.ggml.eos_token_id"), 2u);

  // Re-writing it through our writer reproduces llama.cpp's bytes exactly.
  const std::string copy = path("vocab_copy.gguf");
  rewrite(f, copy);
  EXPECT_EQ(read_bytes(copy), read_bytes(kVocabPath));
}

TEST_F(GGUFTest, MalformedInputsGiveOneLineErrors) {
  // A valid base: one KV, one F32 tensor of 4 values.
  auto valid = [] {
    Bytes g;
    g.header(1, 1).kv_u32("k", 7).tensor("w", {4}, 0, 0).pad_to(32).zeros(16);
    return g;
  };
  EXPECT_NO_THROW(parse_gguf_buffer(valid().b.data(), valid().b.size(), "ok"));

  {
    Bytes g = valid();
    g.b[0] = 'X';
    expect_parse_error(g.b, "not a GGUF file (magic bytes 58 47 55 46");
  }
  expect_parse_error(std::vector<uint8_t>{'G', 'G'}, "not a GGUF file");
  expect_parse_error(std::vector<uint8_t>{}, "not a GGUF file");
  {
    Bytes g;
    g.header(0, 0, 1);
    expect_parse_error(g.b, "GGUF version 1 is not supported");
  }
  {
    Bytes g;
    g.header(0, 0, 0x03000000);
    expect_parse_error(g.b, "big-endian");
  }
  {
    Bytes g;
    g.header(0, 0, 4);
    expect_parse_error(g.b, "unsupported GGUF version 4");
  }
  // Truncated at several points: inside the header, the key, the value, the tensor info, the data.
  {
    const std::vector<uint8_t> full = valid().b;
    for (size_t cut : {5ul, 12ul, 20ul, 24ul, 30ul, 33ul, 37ul, 40ul, 50ul, 62ul, 70ul, 80ul}) {
      std::vector<uint8_t> b(full.begin(), full.begin() + long(cut));
      try {
        parse_gguf_buffer(b.data(), b.size(), "cut.gguf");
        ADD_FAILURE() << "cut at " << cut << " parsed";
      } catch (const UserError& e) {
        std::string msg = e.what();
        EXPECT_TRUE(msg.find("truncated") != std::string::npos || msg.find("runs past the end") != std::string::npos ||
                    msg.find("cannot fit") != std::string::npos)
            << "cut " << cut << ": " << msg;
      }
    }
    std::vector<uint8_t> no_data(full.begin(), full.end() - 1);
    expect_parse_error(no_data, "tensor 'w' data (16 bytes at data offset 0) runs past the end of the file");
  }
  {
    Bytes g;
    g.header(0, 1).put<uint64_t>(1000).zeros(20);
    expect_parse_error(g.b, "string length 1000 of metadata entry 0 runs past the end of the file");
  }
  {
    Bytes g;
    g.header(0, 1).str("name").put<uint32_t>(8).put<uint64_t>(uint64_t(1) << 60);
    expect_parse_error(g.b, "string length 1152921504606846976 of key 'name' runs past the end");
  }
  {
    Bytes g;
    g.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(0).put<uint64_t>(uint64_t(1) << 62).zeros(64);
    expect_parse_error(g.b, "array of u8 count 4611686018427387904 of key 'arr' cannot fit");
  }
  {
    Bytes g;
    g.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(100).zeros(64);
    expect_parse_error(g.b, "array of string count 100 of key 'arr' cannot fit");
  }
  {
    Bytes g;
    g.header(0, uint64_t(1) << 40);
    expect_parse_error(g.b, "metadata count 1099511627776 of header cannot fit");
  }
  {
    Bytes g;
    g.header(uint64_t(1) << 40, 0).zeros(100);
    expect_parse_error(g.b, "tensor count 1099511627776 of header cannot fit");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("w", {4}, 0, 4096).pad_to(32).zeros(16);
    expect_parse_error(g.b, "tensor 'w' data (16 bytes at data offset 4096) runs past the end of the file");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("w", {4}, 0, 8).pad_to(32).zeros(64);
    expect_parse_error(g.b, "tensor 'w' offset 8 is not a multiple of the alignment 32");
  }
  {
    Bytes g;
    g.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
    expect_parse_error(g.b, "key 'k' has unknown value type 13");
  }
  {
    Bytes g;
    g.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(0);
    expect_parse_error(g.b, "key 'k' has an array of unknown value type 77");
  }
  {
    Bytes g;
    g.header(0, 2).kv_u32("dup", 1).kv_u32("dup", 2);
    expect_parse_error(g.b, "duplicate key 'dup'");
  }
  {
    Bytes g;  // names in messages are escaped so that the error stays on one line
    g.header(0, 2).kv_u32("a\nb", 1).kv_u32("a\nb", 2);
    expect_parse_error(g.b, "duplicate key 'a\\x0ab'");
  }
  {
    Bytes g;
    g.header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad_to(32).zeros(64);
    expect_parse_error(g.b, "duplicate tensor name 'w'");
  }
  {
    Bytes g;
    g.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad_to(32).zeros(128);
    expect_parse_error(g.b, "tensors 'a' and 'b' overlap");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("big", {uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0).pad_to(32);
    expect_parse_error(g.b, "tensor 'big' has too many elements");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("neg", {uint64_t(-1)}, 0, 0).pad_to(32);
    expect_parse_error(g.b, "tensor 'neg' has dim 0 = 18446744073709551615, which is too large");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("w5", {1, 1, 1, 1, 1}, 0, 0).pad_to(32).zeros(32);
    expect_parse_error(g.b, "tensor 'w5' has 5 dims");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("q", {100}, 12, 0).pad_to(32).zeros(512);
    expect_parse_error(g.b, "tensor 'q' has ne[0] = 100, not a multiple of the Q4_K block size 256");
  }
  {
    Bytes g;
    g.header(1, 0).tensor("u", {4}, 4, 0).pad_to(32).zeros(64);
    expect_parse_error(g.b, "tensor 'u' has unknown ggml type 4");
  }
  {
    Bytes g;
    g.header(0, 1).str("b").put<uint32_t>(7).put<uint8_t>(2);
    expect_parse_error(g.b, "bool value 2 of key 'b' is not 0 or 1");
  }
  {
    Bytes g;
    g.header(0, 1).str("deep").put<uint32_t>(9);  // value type: array
    for (int i = 0; i < 20; i++) g.put<uint32_t>(9).put<uint64_t>(1);  // of one array, of ...
    g.zeros(64);
    expect_parse_error(g.b, "arrays nested deeper than 8 in key 'deep'");
  }
  {
    Bytes g;
    g.header(0, 1).kv_u32("general.alignment", 24);
    expect_parse_error(g.b, "general.alignment = 24 is not a power of two");
  }
  {
    Bytes g;
    g.header(0, 1).str("general.alignment").put<uint32_t>(10).put<uint64_t>(32);
    expect_parse_error(g.b, "general.alignment must be u32, not u64");
  }
}

TEST_F(GGUFTest, QuantizedTensorsAreListedButNotRead) {
  Bytes g;
  g.header(2, 0).tensor("blk.0.ffn_up.weight", {512, 2}, 12, 0).tensor("norm", {3}, 0, 576).pad_to(32);
  g.zeros(576 + 32);
  const std::string p = path("q.gguf");
  write_bytes(p, g.b);
  GGUFFile f = GGUFFile::open(p);
  const TensorInfo& q = f.tensor("blk.0.ffn_up.weight");
  EXPECT_EQ(ggml_type_name(q.ggml_type), "Q4_K");
  EXPECT_EQ(q.n_bytes, 4u * 144u);  // 4 blocks of 256 values
  EXPECT_EQ(f.tensor_bytes(q).size(), 576u);
  try {
    f.read_f32("blk.0.ffn_up.weight");
    ADD_FAILURE();
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()),
              p + ": tensor 'blk.0.ffn_up.weight' has type Q4_K, only F32/F16/BF16 are supported");
  }
  EXPECT_THROW(f.tensor_data(q), UserError);
  EXPECT_EQ(f.read_f32("norm"), (std::vector<float>{0, 0, 0}));
  // A rewrite copies quantized bytes through unchanged.
  const std::string again = path("q2.gguf");
  rewrite(f, again);
  EXPECT_EQ(read_bytes(again), g.b);
}

TEST_F(GGUFTest, OpenReportsMissingAndEmptyFiles) {
  try {
    GGUFFile::open(path("nope.gguf"));
    ADD_FAILURE();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.gguf: cannot open"), std::string::npos) << e.what();
  }
  write_bytes(path("empty.gguf"), {});
  EXPECT_THROW(GGUFFile::open(path("empty.gguf")), UserError);
  EXPECT_THROW(GGUFFile::open(dir_.string()), UserError);  // a directory
}

namespace {

// Applies `n` random single mutations to `base` (restoring each afterwards) and parses each
// result: parsing must succeed or throw UserError. Returns how many parsed successfully.
size_t fuzz(std::vector<uint8_t> base, size_t n, size_t hot_prefix, uint32_t seed) {
  std::mt19937_64 rng(seed);
  size_t ok = 0;
  const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x07, 0x08, 0x09, 0x0c, 0x0d, 0x1f, 0x20, 0x7f, 0x80, 0xff};
  for (size_t i = 0; i < n; i++) {
    // Half the mutations hit the structure-dense prefix, half anywhere.
    size_t limit = (i % 2 == 0) ? std::min(hot_prefix, base.size()) : base.size();
    size_t pos = size_t(rng() % limit);
    size_t width = (rng() % 4 == 0) ? std::min<size_t>(8, base.size() - pos) : 1;
    std::vector<uint8_t> saved(base.begin() + long(pos), base.begin() + long(pos + width));
    for (size_t k = 0; k < width; k++)
      base[pos + k] = (rng() % 2) ? uint8_t(rng()) : interesting[rng() % sizeof(interesting)];
    size_t size = base.size();
    if (rng() % 8 == 0) size = size_t(rng() % (base.size() + 1));  // sometimes also truncate
    try {
      parse_gguf_buffer(base.data(), size, "fuzz");
      ok++;
    } catch (const UserError& e) {
      const std::string msg = e.what();
      if (msg.rfind("fuzz: ", 0) != 0 || msg.find('\n') != std::string::npos) {
        ADD_FAILURE() << "not a one-line error naming the file: " << msg;
        break;
      }
    }
    std::copy(saved.begin(), saved.end(), base.begin() + long(pos));
  }
  return ok;
}

}  // namespace

TEST_F(GGUFTest, MutatedFilesNeverCrash) {
  const std::string p = path("fuzz.gguf");
  write_sample(p);
  std::vector<uint8_t> written = read_bytes(p);
  size_t ok = fuzz(written, 3000, written.size(), 1234);
  EXPECT_GT(ok, 0u);
  EXPECT_LT(ok, 3000u);

  if (fs::exists(kVocabPath)) {
    std::vector<uint8_t> vocab = read_bytes(kVocabPath);
    size_t vocab_ok = fuzz(vocab, 500, 2048, 99);
    EXPECT_LT(vocab_ok, 500u);
  }
}
