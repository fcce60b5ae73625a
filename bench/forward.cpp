// Forward throughput: prompt processing tokens/s and achieved GFLOP/s for a fixture model and a
// randomly initialised 1B-class model, next to this machine's measured sgemm rate; decode
// tokens/s through the KV cache and the weight bytes it streams per second, next to the
// machine's measured read bandwidth (bench_util.h: read_bandwidth_gbs), all in one run.
// Usage: bench_forward [--prompt T] [--decode N] [--convert-too] [--no-random] [--json] [--compute-only] [--compute fp32|bf16] [MODEL ...]
//   (default: the bundled demo model, prompt 4x128, and the random 1B-class model, prompt 1x512;
//   --prompt T: one sequence of T tokens for every model; --decode N: tokens timed (default 32);
//   --convert-too: also time decode on the converting path (Runner::set_small_m_max(0));
//   --json: one JSON line per model instead of the table;
//   --compute-only: only the random 1B prompt pass (1xT, default 512) in fp32 vs --compute bf16;
//   --compute bf16: the models' prompt passes with bf16 GEMM inputs, as `--compute bf16` does)
#include <omp.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "bench_util.h"
#include "core/fs.h"
#include "kernels/gemm_bf16.h"
#include "model/forward.h"
#include "model/random_model.h"

using namespace llmprune;

namespace {

struct Options {
  int prompt = 0;  // 0: the defaults per model
  int decode = 32;
  bool convert_too = false, random = true, json = false, compute_only = false;
  kernels::Compute compute = kernels::Compute::F32;  // --compute: the prompt pass's GEMMs (decode reads weights as stored)
};

// Best of 3 prompt passes of B x T tokens after a warm-up, in seconds.
double prompt_seconds(Runner& r, int B, int T) {
  const Model& m = r.model();
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7919 + 13) % size_t(m.cfg.vocab));
  std::vector<float> logits(size_t(B) * T * size_t(m.cfg.vocab));
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
void compare_compute(const char* label, const Model& m, int B, int T) {
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

// Seconds per token of `n` greedy-style decode steps (fixed token) after a T-token prompt.
double decode_seconds(Runner& r, const std::vector<int32_t>& prompt, int n) {
  const Model& m = r.model();
  KVCache cache(m, 1, int(prompt.size()) + n + 1);
  std::vector<float> last(size_t(m.cfg.vocab));
  r.forward(prompt.data(), 1, int(prompt.size()), last.data(), &cache, true);
  int32_t tok = 5;
  r.forward(&tok, 1, 1, last.data(), &cache, true);  // warm-up step (page-in of the stored weights)
  double t0 = bench::now_s();
  for (int i = 0; i < n; i++) r.forward(&tok, 1, 1, last.data(), &cache, true);
  return (bench::now_s() - t0) / n;
}

void run(const char* label, const Model& m, int B, int T, double sgemm, double bandwidth, const Options& o) {
  Runner r(m, T + o.decode + 64);
  r.set_compute(o.compute);
  const double best = prompt_seconds(r, B, T);
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7919 + 13) % size_t(m.cfg.vocab));
  const double gflops = bench::forward_flops(m, B, T) / best / 1e9;
  const double decode = 1.0 / decode_seconds(r, tokens, o.decode);
  double decode_convert = 0;
  if (o.convert_too) {
    r.set_small_m_max(0);
    decode_convert = 1.0 / decode_seconds(r, tokens, o.decode);
    r.set_small_m_max(kernels::kSmallMMax);
  }
  const double streamed = bench::decode_weight_bytes(m) * decode / 1e9;
  if (o.json) {
    nlohmann::json j = {{"tool", "llmprune"}, {"model", label}, {"dtype", dtype_name(m.storage_dtype())},
                        {"compute", o.compute == kernels::Compute::BF16 ? "bf16" : "fp32"},
                        {"params", m.n_params()}, {"threads", omp_get_max_threads()}, {"prompt_tokens", B * T},
                        {"prompt_tok_s", B * T / best}, {"prompt_gflops", gflops}, {"decode_tokens", o.decode},
                        {"decode_tok_s", decode}, {"decode_weights_gb_s", streamed}, {"read_bandwidth_gb_s", bandwidth}};
    if (o.convert_too) j["decode_convert_tok_s"] = decode_convert;
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("%-28s %8.2fM params  %s  prompt %dx%d (%s compute): %9.0f tok/s  %7.1f GFLOP/s (%5.1f%% of sgemm)\n",
              label, double(m.n_params()) / 1e6, dtype_name(m.storage_dtype()).c_str(), B, T,
              o.compute == kernels::Compute::BF16 ? "bf16" : "fp32", B * T / best, gflops, 100 * gflops / sgemm);
  std::printf("%-28s decode %7.2f tok/s  weights %6.2f GB/s (%4.1f%% of read bandwidth)", "", decode, streamed,
              100 * streamed / bandwidth);
  if (o.convert_too) std::printf("   converting path %6.2f tok/s (%.2fx)", decode_convert, decode / decode_convert);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--prompt" && i + 1 < argc) o.prompt = std::atoi(argv[++i]);
    else if (a == "--decode" && i + 1 < argc) o.decode = std::atoi(argv[++i]);
    else if (a == "--convert-too") o.convert_too = true;
    else if (a == "--no-random") o.random = false;
    else if (a == "--json") o.json = true;
    else if (a == "--compute-only") o.compute_only = true;
    else if (a == "--compute" && i + 1 < argc) o.compute = kernels::parse_compute(argv[++i]);
    else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "usage: %s [--prompt T] [--decode N] [--convert-too] [--no-random] [--json] [--compute-only] [--compute fp32|bf16] [MODEL ...]\n",
                   argv[0]);
      return 2;
    } else dirs.push_back(a);
  }
  if (o.compute_only) {
    // Only the fp32-vs-bf16 prompt comparison on the 1B shape (quick on a busy machine).
    std::printf("threads: %d (OpenMP), OpenBLAS OpenMP build\n", omp_get_max_threads());
    Model big = make_random_model(llama_config(2048, 22, 32, 4, 5632, 32000), DType::BF16, 1);
    compare_compute("random-1B (bf16) compute", big, 1, o.prompt ? o.prompt : 512);
    std::printf("peak RSS %s\n", human_bytes(double(peak_rss_bytes())).c_str());
    return 0;
  }
  const double bandwidth = bench::read_bandwidth_gbs(omp_get_max_threads());
  double sg_small = 0, sg = 0;
  if (!o.json) {
    std::printf("threads: %d (OpenMP), OpenBLAS OpenMP build; read bandwidth %.1f GB/s\n", omp_get_max_threads(),
                bandwidth);
    sg_small = bench::sgemm_gflops(512, 256, 256);
    sg = bench::sgemm_gflops(512, 5632, 2048);
    std::printf("sgemm  512x5632x2048: %.1f GFLOP/s   512x256x256: %.1f GFLOP/s\n", sg, sg_small);
  }
  if (dirs.empty() && o.random) dirs.push_back("models/kjv-demo");
  for (auto& d : dirs) {
    Model m = Model::load(d);
    run(d.c_str(), m, o.prompt ? 1 : 4, o.prompt ? o.prompt : 128, sg_small, bandwidth, o);
  }
  if (o.random) {
    // 1B-class shape (TinyLlama-like): hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000.
    double t0 = bench::now_s();
    Model big = make_random_model(llama_config(2048, 22, 32, 4, 5632, 32000), DType::BF16, 1);
    if (!o.json) std::printf("(random 1B-class model built in %.1fs)\n", bench::now_s() - t0);
    run("random-1B (bf16)", big, 1, o.prompt ? o.prompt : 512, sg, bandwidth, o);
    if (!o.json) compare_compute("random-1B (bf16) compute", big, 1, o.prompt ? o.prompt : 512);
  }
  if (!o.json) std::printf("peak RSS %s\n", human_bytes(double(peak_rss_bytes())).c_str());
  return 0;
}
