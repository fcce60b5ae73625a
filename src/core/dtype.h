#pragma once
// Storage dtypes and conversions. Compute is always fp32; weights stay in their storage dtype.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace llmprune {

enum class DType : uint8_t { F32, F16, BF16 };

inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
std::string dtype_name(DType t);                 // "F32", "F16", "BF16" (safetensors spelling)
bool dtype_from_name(const std::string& s, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even, as PyTorch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Convert n elements of `src` (stored as `t`) to fp32.
void to_f32(DType t, const void* src, float* dst, size_t n);
// Convert n fp32 values to dtype `t`.
void from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace llmprune
