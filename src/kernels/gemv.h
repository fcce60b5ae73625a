#pragma once
// Small-M linear layers (decode steps, short forwards) on weights in their storage dtype.
//
// A decode step is a GEMV per projection: every weight is used once per token, so the time is
// the time to stream the weights from memory. Converting a bf16 layer to an fp32 buffer first
// and then running sgemm moves 2 + 4 + 4 bytes per weight instead of 2; these kernels read
// W as stored (f32 / bf16 / f16), widen each element in registers (bf16 -> f32 is a 16-bit
// shift, f16 via vcvtph2ps) and accumulate in fp32. The weight values are exact in fp32, so the
// result equals the convert-then-sgemm path up to fp32 summation order.
//
// OpenMP threads split the output rows. The AVX-512 kernel is compiled when the build targets a
// CPU with AVX-512F (-march=native); otherwise linear_small_m runs the portable scalar kernel,
// which is always compiled (and tested) as linear_small_m_scalar.
// Glossary as in ops.h: M = rows of the input, C = channels in, O = channels out.
#include "core/dtype.h"

namespace llmprune::kernels {

// Up to this many input rows the forward uses linear_small_m; above it, the whole layer is
// converted to fp32 once and OpenBLAS sgemm runs (bench/gemv.cpp measures the crossover).
constexpr int kSmallMMax = 8;

// out[M, O] (row stride ldo >= O) = inp[M, C] . W[O, C]^T (+ bias[O]); W stored as `wt`,
// row-major with row stride C.
void linear_small_m(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M, int C,
                    int O);
// The portable kernel (same contract; one thread).
void linear_small_m_scalar(float* out, int ldo, const float* inp, const void* W, DType wt, const float* bias, int M,
                           int C, int O);
// Whether linear_small_m runs the AVX-512 kernel in this build.
bool small_m_simd_compiled();

}  // namespace llmprune::kernels
