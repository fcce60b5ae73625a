// Importance cost on the 1B-class random model (10 x 64 calibration tokens): forward only,
// element1 (one gradient pass) and element2 (gradient + per-sample Fisher from the same pass).
// Each mode runs in its own child process so its peak RSS is its own.
// Usage: bench_importance [hidden layers heads kv_heads mlp vocab]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_util.h"
#include "core/fs.h"
#include "graph/groups.h"
#include "importance/importance.h"
#include "model/forward.h"
#include "model/random_model.h"

using namespace llmprune;

struct Result {
  double seconds = 0, rss = 0, base_rss = 0;
};

static Result run_mode(const ModelConfig& cfg, const std::string& mode) {
  Model m = make_random_model(cfg, DType::BF16, 1);
  Result r;
  r.base_rss = double(current_rss_bytes());
  const int B = 10, T = 64;
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7919 + 13) % size_t(cfg.vocab));
  double t0 = bench::now_s();
  if (mode == "forward") {
    Runner run(m, T);
    std::vector<float> logits(size_t(B) * T * size_t(cfg.vocab));
    run.forward(tokens.data(), B, T, logits.data());
  } else {
    GroupOptions go;  // heads + MLP channels, the block strategy's groups
    auto groups = discover_groups(m, go);
    ImportanceOptions io;
    io.criterion = mode == "element1" ? Criterion::Element1 : Criterion::Element2;
    estimate_importance(m, groups, io, tokens, B, T);
  }
  r.seconds = bench::now_s() - t0;
  r.rss = double(peak_rss_bytes());
  return r;
}

int main(int argc, char** argv) {
  int h = 2048, L = 22, H = 32, KV = 4, F = 5632, V = 32000;
  if (argc == 7) {
    h = std::atoi(argv[1]); L = std::atoi(argv[2]); H = std::atoi(argv[3]);
    KV = std::atoi(argv[4]); F = std::atoi(argv[5]); V = std::atoi(argv[6]);
  }
  ModelConfig cfg = llama_config(h, L, H, KV, F, V);
  // Computed by hand, not by building a model: the parent must not start OpenMP threads before
  // fork() (libgomp's thread pool does not survive into the child, which then hangs).
  const double D = double(h) / H;
  const double per_layer = 2.0 * h + 2.0 * h * H * D + 2.0 * h * KV * D + 3.0 * h * F;
  const double fp32_bytes = 4.0 * (per_layer * L + 2.0 * V * h + h);
  std::printf("model: hidden %d, %d layers, heads %d/%d, MLP %d, vocab %d (bf16 in memory); fp32 size %s\n", h, L, H, KV,
              F, V, human_bytes(fp32_bytes).c_str());
  std::printf("calibration: 10 x 64 tokens; block-strategy groups (heads + MLP channels)\n");
  std::printf("%-10s %10s %14s %14s\n", "mode", "seconds", "peak RSS", "vs fp32 size");
  double e1 = 0, e2 = 0;
  for (std::string mode : {"forward", "element1", "element2"}) {
    int fd[2];
    if (pipe(fd) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(fd[0]);
      Result r = run_mode(cfg, mode);
      if (write(fd[1], &r, sizeof r) != sizeof r) _exit(1);
      _exit(0);
    }
    close(fd[1]);
    Result r;
    if (read(fd[0], &r, sizeof r) != sizeof r) {
      std::fprintf(stderr, "%s: child failed\n", mode.c_str());
      return 1;
    }
    waitpid(pid, nullptr, 0);
    std::printf("%-10s %10.2f %14s %13.0f%%\n", mode.c_str(), r.seconds, human_bytes(r.rss).c_str(), 100 * r.rss / fp32_bytes);
    if (mode == "element1") e1 = r.seconds;
    if (mode == "element2") e2 = r.seconds;
  }
  std::printf("element2 / element1 time: %.2fx (target <= 1.3x)\n", e2 / e1);
  return 0;
}
