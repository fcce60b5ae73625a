// Writes a randomly initialised LLaMA-shape checkpoint (config.json + model.safetensors) tensor
// by tensor, so a 7B-class bf16 file (13.5 GB) is produced with only its largest tensor in memory.
// Usage: bench_make_random_checkpoint DIR [7b|1b|HIDDEN,LAYERS,HEADS,KV_HEADS,MLP,VOCAB] [bf16|f16|f32] [SEED]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "bench_util.h"
#include "core/fs.h"
#include "model/random_model.h"

using namespace llmprune;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [7b|1b|H,L,HEADS,KV,MLP,VOCAB] [bf16|f16|f32] [SEED]\n", argv[0]);
    return 2;
  }
  std::string shape = argc > 2 ? argv[2] : "7b";
  int h = 4096, l = 32, nh = 32, kv = 32, ff = 11008, v = 32000;
  if (shape == "1b") {
    h = 2048, l = 22, nh = 32, kv = 4, ff = 5632, v = 32000;  // TinyLlama-like
  } else if (shape != "7b" && std::sscanf(shape.c_str(), "%d,%d,%d,%d,%d,%d", &h, &l, &nh, &kv, &ff, &v) != 6) {
    std::fprintf(stderr, "bad shape '%s'\n", shape.c_str());
    return 2;
  }
  DType dt = DType::BF16;
  if (argc > 3 && !dtype_from_name(argv[3], &dt)) {
    std::string s = argv[3];
    if (s == "bf16") dt = DType::BF16;
    else if (s == "f16") dt = DType::F16;
    else if (s == "f32") dt = DType::F32;
    else {
      std::fprintf(stderr, "bad dtype '%s'\n", argv[3]);
      return 2;
    }
  }
  uint64_t seed = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 1;
  std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  double t0 = bench::now_s();
  ModelConfig cfg = llama_config(h, l, nh, kv, ff, v);
  write_random_checkpoint(cfg, dt, seed, dir);
  std::printf("wrote %s: hidden %d, %d layers, %d/%d heads, MLP %d, vocab %d, %s, %s in %.1fs (peak RSS %s)\n",
              dir.c_str(), h, l, nh, kv, ff, v, dtype_name(dt).c_str(),
              human_bytes(double(std::filesystem::file_size(dir / "model.safetensors"))).c_str(), bench::now_s() - t0,
              human_bytes(double(peak_rss_bytes())).c_str());
  return 0;
}
