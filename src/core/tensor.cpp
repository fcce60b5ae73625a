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

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace llmprune
