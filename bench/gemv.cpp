// Small-M linear layers: kernels::linear_small_m (weights read as stored) against the path the
// forward takes above kSmallMMax rows (whole matrix converted to fp32, then OpenBLAS sgemm; for
// f32 weights sgemm directly), on the 1B-class shapes, M = 1..16 input rows. Prints ms per call
// and the weight bytes streamed per second, next to this machine's read bandwidth.
// The weight set cycled through is 3x larger than the largest L3, so every call streams W from
// memory, as a decode step does. Usage: bench_gemv [MiB of weights, default 768]
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/gemv.h"
#include "kernels/ops.h"

using namespace llmprune;

namespace {

struct Shape {
  const char* name;
  int O, C;
};

// Best-of time of one call over `copies` distinct matrices (cycled, so none is cache-resident).
template <class F>
double best_seconds(int copies, int reps, F&& call) {
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = bench::now_s();
    for (int i = 0; i < copies; i++) call(i);
    best = std::min(best, (bench::now_s() - t0) / copies);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? size_t(std::atol(argv[1])) : 768;
  const double bw1 = bench::read_bandwidth_gbs(1), bwn = bench::read_bandwidth_gbs(omp_get_max_threads());
  std::printf("threads %d; read bandwidth: 1 thread %.1f GB/s, %d threads %.1f GB/s\n", omp_get_max_threads(), bw1,
              omp_get_max_threads(), bwn);
  std::printf("kSmallMMax = %d; AVX-512 kernel compiled: %s\n", kernels::kSmallMMax,
              kernels::small_m_simd_compiled() ? "yes" : "no");
  const Shape shapes[] = {{"q/o 2048x2048", 2048, 2048}, {"gate/up 5632x2048", 5632, 2048},
                          {"down 2048x5632", 2048, 5632}, {"lm_head 32000x2048", 32000, 2048}};
  for (DType wt : {DType::BF16, DType::F16, DType::F32}) {
    const size_t es = dtype_size(wt);
    for (const Shape& s : shapes) {
      const size_t per = size_t(s.O) * s.C;
      const int copies = std::max(1, int((mib << 20) / (per * es)));
      std::vector<uint8_t> W(per * es * size_t(copies));
      {
        std::vector<float> tmp(per);
        for (size_t i = 0; i < per; i++) tmp[i] = float(int(i * 2654435761u % 2001) - 1000) * 1e-4f;
        for (int c = 0; c < copies; c++) from_f32(wt, tmp.data(), W.data() + size_t(c) * per * es, per);
      }
      std::vector<float> wf32(wt == DType::F32 ? 0 : per);
      std::printf("%-4s %-20s (%d copies, %.0f MiB)\n", dtype_name(wt).c_str(), s.name, copies,
                  double(W.size()) / (1 << 20));
      for (int M : {1, 2, 4, 8, 12, 16}) {
        std::vector<float> x(size_t(M) * s.C, 0.01f), y(size_t(M) * s.O);
        const int reps = 3;
        double t_small = best_seconds(copies, reps, [&](int i) {
          kernels::linear_small_m(y.data(), s.O, x.data(), W.data() + size_t(i) * per * es, wt, nullptr, M, s.C, s.O);
        });
        double t_conv = best_seconds(copies, reps, [&](int i) {
          const uint8_t* wi = W.data() + size_t(i) * per * es;
          const float* wf = reinterpret_cast<const float*>(wi);
          if (wt != DType::F32) {
            to_f32(wt, wi, wf32.data(), per);
            wf = wf32.data();
          }
          kernels::linear_forward(y.data(), x.data(), wf, nullptr, M, s.C, s.O);
        });
        const double bytes = double(per * es);
        std::printf("  M=%-2d  small-M %7.3f ms %6.1f GB/s   %s %7.3f ms   ratio %.2fx\n", M, t_small * 1e3,
                    bytes / t_small / 1e9, wt == DType::F32 ? "sgemm        " : "convert+sgemm", t_conv * 1e3,
                    t_conv / t_small);
      }
    }
  }
  return 0;
}
