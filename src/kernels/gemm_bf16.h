#pragma once
// bf16 compute for the heavy GEMMs (`--compute bf16`): inputs rounded to bf16 (to nearest even),
// products summed in fp32. Weights stored as bf16 are used as stored (no fp32 round trip);
// fp32 activations are rounded while they are packed for the kernel.
//
// Debian 12's OpenBLAS 0.3.21 is built without BUILD_BFLOAT16 (no cblas_sbgemm symbol) and
// takes a Zen4 CPU for Haswell, so the kernels are our own: AVX512-BF16 (vdpbf16ps) micro-kernels
// over packed panels, cache-blocked, OpenMP over column blocks. On a CPU without AVX512-BF16 a
// portable path computes the same products (bf16 x bf16 is exact in fp32) with OpenBLAS sgemm.
// Glossary as in ops.h: N = rows, C = channels in, O = channels out.
#include <cstddef>
#include <cstdint>
#include <string>

namespace llmprune::kernels {

// Precision of the heavy passes' GEMMs. Reductions, softmax, norms and the loss stay fp32.
enum class Compute : uint8_t { F32, BF16 };
// The --compute flag's value: "fp32" | "bf16"; a UserError naming the flag for anything else.
Compute parse_compute(const std::string& s);
const char* compute_name(Compute c);

// A GEMM operand in row-major storage: fp32 or bf16 (raw bits), leading dimension ld. With
// trans the stored matrix is the transpose of the operand (op(X) = X^T).
struct Operand {
  const void* data = nullptr;
  bool bf16 = false;
  int ld = 0;
  bool trans = false;
};
inline Operand f32_operand(const float* p, int ld, bool trans = false) { return {p, false, ld, trans}; }
inline Operand bf16_operand(const uint16_t* p, int ld, bool trans = false) { return {p, true, ld, trans}; }

// C[M,N] (row stride ldc) = beta*C + op(A)[M,K] . op(B)[K,N], beta 0 or 1 (0: C is not read).
// Runs on all OpenMP threads (one thread inside a parallel region).
void gemm_bf16(int M, int N, int K, const Operand& A, const Operand& B, float beta, float* C, int ldc);

// Which implementation gemm_bf16 runs. Auto = AVX512-BF16 when the CPU has it, else Portable.
enum class Bf16Kernel : uint8_t { Auto, Portable };
void set_bf16_kernel(Bf16Kernel k);  // tests run both paths
bool cpu_has_avx512_bf16();

// dst[i] = bf16(src[i]), round to nearest even (NaN stays NaN).
void round_to_bf16(const float* src, uint16_t* dst, size_t n);

// A weight W[O,C], row-major and dense, stored as bf16 or fp32.
struct Weight {
  const void* data = nullptr;
  bool bf16 = false;
};

// The linear-layer kernels of ops.h in bf16 compute.
// out[N,O] = inp[N,C] . W^T (+ bias[O]).
void linear_forward_bf16(float* out, const float* inp, Weight W, const float* bias, int N, int C, int O);
// dinp[N,C] += dout . W ; dW[O,C] += dout^T . inp (fp32 gradient). Null pointers skip.
void linear_backward_bf16(float* dinp, float* dW, const float* dout, const float* inp, Weight W, int N, int C, int O);
// linear_weight_grad_stats (ops.h) with bf16 compute of each sample's dW_j.
void linear_weight_grad_stats_bf16(float* g, float* a, const float* dout, const float* inp, int B, int T, int C, int O,
                                   const float* sample_scale);

}  // namespace llmprune::kernels
