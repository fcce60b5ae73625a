#pragma once
// A tensor is a typed view of row-major memory plus whatever keeps that memory alive
// (an mmap'd file or an owned buffer). Weights stay in their storage dtype; kernels take fp32.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llmprune {

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  void* data = nullptr;                // read-only when it points into a file mapping
  std::shared_ptr<void> owner;         // keeps `data` alive

  bool empty() const { return data == nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(size_t(i)); }
  int ndim() const { return int(shape.size()); }
  const float* f32() const { return static_cast<const float*>(data); }
  float* f32_mut() { return static_cast<float*>(data); }

  // A new zero-filled owned tensor.
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // An owned fp32 copy of any tensor.
  Tensor to_f32_copy() const;
  // An owned copy in dtype `t`.
  Tensor converted(DType t) const;
  // A view of rows [r0, r0 + n) (entries for a vector), sharing this tensor's memory and owner.
  Tensor row_view(int64_t r0, int64_t n) const;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace llmprune
