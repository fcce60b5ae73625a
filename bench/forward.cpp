// Forward throughput: prompt processing tokens/s and achieved GFLOP/s for a fixture model and a
// randomly initialised 1B-class model, next to this machine's measured sgemm rate.
// Usage: bench_forward [MODEL_DIR ...]   (default: the bundled demo model)
//        bench_forward --compute-only     (only the 1B prompt pass in fp32 vs --compute bf16)
#include <omp.h>

#include <cstdio>
#include <string>

#include "bench_util.h"
#include "core/fs.h"
#include "model/forward.h"
#include "model/random_model.h"

using namespace llmprune;

// Best of 3 prompt passes of B x T tokens, in seconds.
static double prompt_seconds(Runner& r, int B, int T) {
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7919 + 13) % size_t(r.model().cfg.vocab));
  std::vector<float> logits(size_t(B) * T * size_t(r.model().cfg.vocab));
  r.forward(tokens.data(), B, T, logits.data());  // warm-up (page-in, conversion buffers)
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = bench::now_s();
    r.forward(tokens.data(), B, T, logits.data());
    best = std::min(best, bench::now_s() - t0);
  }
  return best;
}

// The prompt pass in fp32 and in bf16 compute (--compute), measured back to back.
static void compare_compute(const char* label, const Model& m, int B, int T) {
  double secs[2];
  for (int c = 0; c < 2; c++) {
    Runner r(m, T + 64);
    r.set_compute(c ? kernels::Compute::BF16 : kernels::Compute::F32);
    secs[c] = prompt_seconds(r, B, T);
  }
  const double fl = bench::forward_flops(m, B, T);
  std::printf("%-28s prompt %dx%d: fp32 %8.0f tok/s %6.1f GFLOP/s | bf16 %8.0f tok/s %6.1f GFLOP/s | bf16/fp32 %.2fx (load %s)\n",
              label, B, T, B * T / secs[0], fl / secs[0] / 1e9, B * T / secs[1], fl / secs[1] / 1e9, secs[0] / secs[1],
              bench::load_average().c_str());
}

static void run(const char* label, const Model& m, int B, int T, double sgemm) {
  Runner r(m, T + 64);
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7919 + 13) % size_t(m.cfg.vocab));
  const double best = prompt_seconds(r, B, T);
  double gflops = bench::forward_flops(m, B, T) / best / 1e9;
  // Decode: one token at a time through the KV cache.
  KVCache cache(m, 1, T + 33);
  std::vector<float> last(size_t(m.cfg.vocab));
  r.forward(tokens.data(), 1, T, last.data(), &cache, true);
  double t0 = bench::now_s();
  int32_t tok = 5;
  for (int i = 0; i < 32; i++) r.forward(&tok, 1, 1, last.data(), &cache, true);
  double decode = 32 / (bench::now_s() - t0);
  std::printf("%-28s %8.2fM params  %s  prompt %dx%d: %9.0f tok/s  %7.1f GFLOP/s (%5.1f%% of sgemm)  decode %7.1f tok/s\n",
              label, double(m.n_params()) / 1e6, dtype_name(m.storage_dtype()).c_str(), B, T, B * T / best, gflops,
              100 * gflops / sgemm, decode);
}

int main(int argc, char** argv) {
  std::printf("threads: %d (OpenMP), OpenBLAS OpenMP build\n", omp_get_max_threads());
  if (argc > 1 && std::string(argv[1]) == "--compute-only") {
    // Only the fp32-vs-bf16 prompt comparison on the 1B shape (quick on a busy machine).
    Model big = make_random_model(llama_config(2048, 22, 32, 4, 5632, 32000), DType::BF16, 1);
    compare_compute("random-1B (bf16) compute", big, 1, 512);
    return 0;
  }
  double sg_small = bench::sgemm_gflops(512, 256, 256);
  double sg = bench::sgemm_gflops(512, 5632, 2048);
  std::printf("sgemm  512x5632x2048: %.1f GFLOP/s   512x256x256: %.1f GFLOP/s\n", sg, sg_small);
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; i++) dirs.push_back(argv[i]);
  if (dirs.empty()) dirs.push_back("models/kjv-demo");
  for (auto& d : dirs) {
    Model m = Model::load(d);
    run(d.c_str(), m, 4, 128, sg_small);
  }
  // 1B-class shape (TinyLlama-like): hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000.
  double t0 = bench::now_s();
  Model big = make_random_model(llama_config(2048, 22, 32, 4, 5632, 32000), DType::BF16, 1);
  std::printf("(random 1B-class model built in %.1fs)\n", bench::now_s() - t0);
  run("random-1B (bf16)", big, 1, 512, sg);
  compare_compute("random-1B (bf16) compute", big, 1, 512);
  std::printf("peak RSS %s\n", human_bytes(double(peak_rss_bytes())).c_str());
  return 0;
}
