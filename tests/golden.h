// Header-only reader for llmprune golden files (.lpgd), written by tools/golden.py from
// the PyTorch oracle tools/reference.py. Format and entries: docs/goldens.md.
//
// Layout (little-endian): magic "LLMPGLD\0", u32 version (= 1), u32 n_entries; per entry
// u32 name_len, name bytes, u8 dtype (0 f32, 1 i32, 2 f64), u32 ndim, i64 dims[ndim],
// row-major data. Every value is widened to double on load so tests compare in one type.
#pragma once

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace llmprune::golden {

static_assert(std::endian::native == std::endian::little, "golden files are little-endian");

enum : int { kF32 = 0, kI32 = 1, kF64 = 2 };

struct GoldenTensor {
  std::string name;
  int dtype = kF64;            // as stored in the file
  std::vector<int64_t> shape;  // empty for a scalar
  std::vector<double> values;  // row-major, widened to double

  int64_t numel() const { return static_cast<int64_t>(values.size()); }
  // The single value of a scalar / one-element tensor.
  double scalar() const {
    if (values.size() != 1)
      throw std::runtime_error("golden entry " + name + " is not a scalar (" +
                               std::to_string(values.size()) + " elements)");
    return values[0];
  }
};

class GoldenFile {
 public:
  static GoldenFile load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("golden: cannot open " + path);
    std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    GoldenFile f;
    f.path_ = path;
    size_t off = 0;
    auto fail = [&](const std::string& why) -> void {
      throw std::runtime_error("golden: " + path + ": " + why + " (at byte " + std::to_string(off) +
                               " of " + std::to_string(buf.size()) + ")");
    };
    auto take = [&](void* dst, size_t n, const char* what) {
      if (n > buf.size() - off) fail(std::string("truncated reading ") + what);
      std::memcpy(dst, buf.data() + off, n);
      off += n;
    };
    char magic[8];
    take(magic, 8, "magic");
    if (std::memcmp(magic, "LLMPGLD\0", 8) != 0) fail("bad magic");
    uint32_t version = 0, n_entries = 0;
    take(&version, 4, "version");
    if (version != 1) fail("unsupported version " + std::to_string(version));
    take(&n_entries, 4, "entry count");
    for (uint32_t e = 0; e < n_entries; ++e) {
      GoldenTensor t;
      uint32_t name_len = 0;
      take(&name_len, 4, "name length");
      if (name_len > buf.size() - off) fail("truncated reading name");
      t.name.assign(buf.data() + off, name_len);
      off += name_len;
      uint8_t dtype = 0;
      take(&dtype, 1, "dtype");
      if (dtype > kF64) fail("entry " + t.name + ": unknown dtype " + std::to_string(dtype));
      t.dtype = dtype;
      uint32_t ndim = 0;
      take(&ndim, 4, "ndim");
      if (ndim > 16) fail("entry " + t.name + ": ndim " + std::to_string(ndim));
      t.shape.resize(ndim);
      uint64_t count = 1;
      const size_t esize = dtype == kF64 ? 8 : 4;
      for (auto& d : t.shape) {
        take(&d, 8, "dims");
        if (d < 0) fail("entry " + t.name + ": negative dim");
        // Bound the element count by the bytes left so a corrupt dim cannot overflow.
        if (d != 0 && count > (buf.size() - off) / esize / static_cast<uint64_t>(d) + 1)
          fail("entry " + t.name + ": truncated data");
        count *= static_cast<uint64_t>(d);
      }
      if (count > (buf.size() - off) / esize) fail("entry " + t.name + ": truncated data");
      t.values.resize(count);
      const char* p = buf.data() + off;
      for (uint64_t i = 0; i < count; ++i) {
        if (dtype == kF32) {
          float v;
          std::memcpy(&v, p + 4 * i, 4);
          t.values[i] = v;
        } else if (dtype == kI32) {
          int32_t v;
          std::memcpy(&v, p + 4 * i, 4);
          t.values[i] = v;
        } else {
          std::memcpy(&t.values[i], p + 8 * i, 8);
        }
      }
      off += count * esize;
      if (f.index_.count(t.name)) fail("duplicate entry " + t.name);
      f.index_[t.name] = f.tensors_.size();
      f.tensors_.push_back(std::move(t));
    }
    if (off != buf.size()) fail(std::to_string(buf.size() - off) + " trailing bytes");
    return f;
  }

  bool has(const std::string& name) const { return index_.count(name) != 0; }

  const GoldenTensor& get(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw std::runtime_error("golden: " + path_ + ": no entry " + name);
    return tensors_[it->second];
  }

  // Entry names in file order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& t : tensors_) out.push_back(t.name);
    return out;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<GoldenTensor> tensors_;
  std::map<std::string, size_t> index_;
};

// got[i] vs ref.values[i] for every element: passes iff |got-ref| <= atol + rtol*|ref|
// everywhere (NaN/inf anywhere fails unless both sides are the same inf). On failure names
// the worst element (largest |got-ref| / (atol + rtol*|ref|)) with its index.
inline ::testing::AssertionResult allclose(const double* got, const GoldenTensor& ref, double atol,
                                           double rtol) {
  const size_t n = ref.values.size();
  size_t bad = 0, worst = 0;
  double worst_ratio = -1.0;
  for (size_t i = 0; i < n; ++i) {
    const double a = got[i], b = ref.values[i];
    if (a == b) continue;  // also equal infinities
    double ratio = std::numeric_limits<double>::infinity();
    if (std::isfinite(a) && std::isfinite(b)) {
      const double diff = std::fabs(a - b), tol = atol + rtol * std::fabs(b);
      if (diff <= tol) continue;
      if (tol > 0) ratio = diff / tol;
    }
    ++bad;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  // Multi-index of the worst element, e.g. [1,7,4095].
  std::ostringstream idx;
  idx << "[";
  size_t rem = worst;
  std::vector<int64_t> mi(ref.shape.size());
  for (size_t d = ref.shape.size(); d-- > 0;) {
    const auto dim = static_cast<size_t>(ref.shape[d]);
    mi[d] = dim ? static_cast<int64_t>(rem % dim) : 0;
    rem = dim ? rem / dim : 0;
  }
  for (size_t d = 0; d < mi.size(); ++d) idx << (d ? "," : "") << mi[d];
  idx << "]";
  std::ostringstream msg;
  msg.precision(10);
  msg << ref.name << ": " << bad << " of " << n << " elements outside atol=" << atol
      << " rtol=" << rtol << "; worst at flat " << worst << " " << idx.str() << ": got "
      << got[worst] << " ref " << ref.values[worst] << " |diff| " << std::fabs(got[worst] - ref.values[worst]);
  return ::testing::AssertionFailure() << msg.str();
}

// Same for float buffers (the engine's native type).
inline ::testing::AssertionResult allclose(const float* got, const GoldenTensor& ref, double atol,
                                           double rtol) {
  std::vector<double> wide(got, got + ref.values.size());
  return allclose(wide.data(), ref, atol, rtol);
}

// Vector form: also checks the element count.
template <class T>
::testing::AssertionResult allclose(const std::vector<T>& got, const GoldenTensor& ref, double atol,
                                    double rtol) {
  if (got.size() != ref.values.size())
    return ::testing::AssertionFailure() << ref.name << ": got " << got.size() << " elements, ref has "
                                         << ref.values.size();
  return allclose(got.data(), ref, atol, rtol);
}

}  // namespace llmprune::golden
