#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

namespace llmprune {

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  size_t bytes = t.nbytes();
  // 64-byte alignment for SIMD loads; at least one byte so data is never null.
  size_t alloc = ((bytes + 63) / 64) * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  t.data = p;
  t.owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::to_f32_copy() const { return converted(DType::F32); }

Tensor Tensor::converted(DType t) const {
  Tensor out = zeros(t, shape);
  size_t n = size_t(numel());
  if (dtype == t) {
    std::memcpy(out.data, data, nbytes());
  } else if (t == DType::F32) {
    to_f32(dtype, data, out.f32_mut(), n);
  } else {
    std::vector<float> tmp(n);
    to_f32(dtype, data, tmp.data(), n);
    from_f32(t, tmp.data(), out.data, n);
  }
  return out;
}

Tensor Tensor::row_view(int64_t r0, int64_t n) const {
  Tensor v = *this;
  v.shape.at(0) = n;
  const size_t row_bytes = shape.empty() ? 0 : nbytes() / size_t(shape[0] ? shape[0] : 1);
  v.data = static_cast<uint8_t*>(data) + size_t(r0) * row_bytes;
  return v;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace llmprune
