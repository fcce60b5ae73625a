// LoRA training throughput (`llmprune tune`'s inner step): tokens/s of forward + backward +
// AdamW for the fixture model and for a random 1B-class LLaMA shape (hidden 2048, 22 layers,
// GQA 32/4, MLP 5632, vocab 32000, bf16 weights — TinyLlama-1.1B's shape) built in memory.
//
//   bench_tune [--fixture DIR] [--steps N] [--seq T] [--micro M] [--skip-1b] [--only-1b]
//
// Prints, per model: training tokens/s (LoRA r 8 on q,k,v,o,gate,up,down, dropout 0.05), the
// forward-only tokens/s of the same batch for comparison, seconds per step and peak RSS.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/fs.h"
#include "model/forward.h"
#include "model/model.h"
#include "train/lora.h"
#include "train/trainer.h"

using namespace llmprune;
namespace fs = std::filesystem;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Tensor random_bf16(std::vector<int64_t> shape, float std_dev, float offset, uint64_t seed) {
  Tensor t = Tensor::zeros(DType::BF16, std::move(shape));
  uint16_t* p = static_cast<uint16_t*>(t.data);
  const int64_t n = t.numel();
  const float a = std_dev * std::sqrt(3.0f);  // uniform with this std
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) p[i] = f32_to_bf16(offset + a * (2.0f * uniform01(splitmix64(seed + uint64_t(i))) - 1.0f));
  return t;
}

Model make_1b() {
  const int C = 2048, L = 22, H = 32, KVH = 4, F = 5632, V = 32000, D = C / H;
  nlohmann::json j = {{"model_type", "llama"}, {"hidden_size", C}, {"num_hidden_layers", L}, {"vocab_size", V},
                      {"num_attention_heads", H}, {"num_key_value_heads", KVH}, {"intermediate_size", F},
                      {"max_position_embeddings", 2048}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
                      {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  ModelConfig cfg = ModelConfig::from_json(j, "bench-1b/config.json");
  std::map<std::string, Tensor> t;
  uint64_t seed = 1;
  auto put = [&](const std::string& name, std::vector<int64_t> shape, float sd, float off = 0.0f) {
    t[name] = random_bf16(std::move(shape), sd, off, splitmix64(seed++));
  };
  put("model.embed_tokens.weight", {V, C}, 0.02f);
  for (int l = 0; l < L; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    put(p + "input_layernorm.weight", {C}, 0.0f, 1.0f);
    put(p + "self_attn.q_proj.weight", {H * D, C}, 0.02f);
    put(p + "self_attn.k_proj.weight", {KVH * D, C}, 0.02f);
    put(p + "self_attn.v_proj.weight", {KVH * D, C}, 0.02f);
    put(p + "self_attn.o_proj.weight", {C, H * D}, 0.02f);
    put(p + "post_attention_layernorm.weight", {C}, 0.0f, 1.0f);
    put(p + "mlp.gate_proj.weight", {F, C}, 0.02f);
    put(p + "mlp.up_proj.weight", {F, C}, 0.02f);
    put(p + "mlp.down_proj.weight", {C, F}, 0.02f);
  }
  put("model.norm.weight", {C}, 0.0f, 1.0f);
  put("lm_head.weight", {V, C}, 0.02f);
  return Model::from_tensors(std::move(cfg), std::move(t), "bench-1b");
}

void bench(const char* label, const Model& m, int steps, int seq, int micro, int accum) {
  LoraConfig lc;  // paper defaults
  LoraAdapters lora(m, lc);
  TrainOptions o;
  o.quiet = true;
  Trainer tr(m, lora, o);
  // Examples of exactly `seq` tokens from a fixed pseudo-random stream (every prediction learned).
  const int per_step = micro * accum;
  std::vector<Example> ex(size_t(per_step) * size_t(steps + 1));
  for (size_t e = 0; e < ex.size(); e++) {
    ex[e].ids.resize(size_t(seq));
    for (int t = 0; t < seq; t++) ex[e].ids[size_t(t)] = int32_t(splitmix64(e * 100003 + uint64_t(t)) % uint64_t(m.cfg.vocab));
    ex[e].labels = ex[e].ids;
  }
  auto batch_of = [&](int s) {
    std::vector<std::vector<const Example*>> mbs;
    for (int j = 0; j < accum; j++) {
      std::vector<const Example*> mb;
      for (int k = 0; k < micro; k++) mb.push_back(&ex[size_t(s * per_step + j * micro + k)]);
      mbs.push_back(mb);
    }
    return mbs;
  };
  double t0 = now_s();
  tr.step(batch_of(0), 0, 1e-4);  // warm-up step (allocations, first-touch)
  const double warm = now_s() - t0;
  t0 = now_s();
  int64_t tokens = 0;
  double loss = 0;
  for (int s = 1; s <= steps; s++) {
    StepResult r = tr.step(batch_of(s), s, 1e-4);
    tokens += r.tokens;
    loss = r.loss;
  }
  const double train_s = now_s() - t0;
  // Forward only, same micro-batch shape.
  Runner runner(m, seq);
  runner.set_hook(&lora);
  lora.set_training(false);
  std::vector<int32_t> tok(size_t(micro) * seq);
  for (size_t i = 0; i < tok.size(); i++) tok[i] = ex[i / size_t(seq)].ids[i % size_t(seq)];
  std::vector<float> logits(size_t(micro) * seq * m.cfg.vocab);
  t0 = now_s();
  const int fwd_reps = std::max(1, steps);
  for (int i = 0; i < fwd_reps; i++) runner.forward(tok.data(), micro, seq, logits.data());
  const double fwd_s = now_s() - t0;
  std::printf("%-28s params %7.1fM  LoRA %6.2fM  seq %d  micro-batch %d x accum %d\n", label, double(m.n_params()) / 1e6,
              double(lora.n_params()) / 1e6, seq, micro, accum);
  std::printf("  training : %9.1f tok/s  (%.2f s/step over %d steps, first step %.2f s, last loss %.3f)\n",
              double(tokens) / train_s, train_s / steps, steps, warm, loss);
  std::printf("  forward  : %9.1f tok/s  (ratio training/forward time per token %.2fx)\n",
              double(fwd_reps) * micro * seq / fwd_s, (train_s / double(tokens)) / (fwd_s / (double(fwd_reps) * micro * seq)));
  std::printf("  peak RSS : %s\n", human_bytes(double(peak_rss_bytes())).c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  fs::path fixture = fs::path(__FILE__).parent_path().parent_path().parent_path() / "shared/fixtures/models/kjv-llama-mha";
  int steps = 3, seq = 256, micro = 4, micro_1b = 1;
  bool skip_1b = false, only_1b = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--fixture") fixture = next();
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--seq") seq = std::stoi(next());
    else if (a == "--micro") micro = std::stoi(next());
    else if (a == "--micro-1b") micro_1b = std::stoi(next());
    else if (a == "--skip-1b") skip_1b = true;
    else if (a == "--only-1b") only_1b = true;
    else {
      std::fprintf(stderr, "usage: bench_tune [--fixture DIR] [--steps N] [--seq T] [--micro M] [--micro-1b M] [--skip-1b] [--only-1b]\n");
      return 2;
    }
  }
  std::printf("bench_tune: %d OpenMP threads, LoRA r 8 alpha 16 dropout 0.05 on q,k,v,o,gate,up,down\n", omp_get_max_threads());
  if (!only_1b) {
    Model m = Model::load(fixture);
    bench("kjv-llama-mha (fixture)", m, std::max(steps, 3), seq, micro, 2);
  }
  if (!skip_1b) {
    double t0 = now_s();
    Model m = make_1b();
    std::printf("(1B-class model built in %.1f s)\n", now_s() - t0);
    bench("1B-class random (bf16)", m, steps, seq, micro_1b, 1);
  }
  return 0;
}
