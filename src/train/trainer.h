#pragma once
// LoRA training loop: AdamW (torch.optim.AdamW semantics), gradient-norm clipping, warm-up +
// linear / cosine / constant schedule (transformers' get_*_schedule_with_warmup), micro-batches
// with gradient accumulation, validation loss, checkpoints that resume exactly.
//
// One optimizer step takes `batch` examples (the last step of an epoch may take fewer), split
// into micro-batches of `micro_batch` examples, each padded to its longest sequence. The step's
// loss is the mean NLL over every learned token of the step (each micro-batch's gradient is
// weighted by its share of those tokens), so the result does not depend on how the step is
// split into micro-batches.
//
// Determinism: example order, dropout masks and initialisation are pure functions of the seed
// and the step / micro-batch index (counter-based RNG), so a checkpoint needs only the step
// number, the adapters and the AdamW moments to continue exactly where it stopped.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/gemm_bf16.h"
#include "train/data.h"
#include "train/lora.h"

namespace llmprune {

struct TrainOptions {
  int epochs = 2;
  int64_t max_steps = 0;        // > 0 overrides epochs
  int batch = 64;               // examples per optimizer step
  int micro_batch = 4;          // examples per forward/backward
  double lr = 1e-4, weight_decay = 0.0, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double max_grad_norm = 1.0;   // 0 = no clipping
  std::string schedule = "linear";  // linear | cosine | constant
  int64_t warmup_steps = 100;
  double warmup_ratio = -1;     // >= 0: warm-up = ceil(ratio * total steps), overrides warmup_steps
  int64_t eval_every = 200;     // validation every N steps (0 = only at the end)
  int64_t save_every = 200;     // checkpoint every N steps (0 = none)
  int64_t log_every = 10;       // progress line every N steps
  int eval_batch = 8;
  uint64_t seed = 42;
  std::filesystem::path checkpoint_dir;  // required when save_every > 0 or resuming
  int keep_checkpoints = 2;
  bool resume = false;                   // continue from the newest checkpoint in checkpoint_dir
  std::filesystem::path resume_from;     // or from this checkpoint directory
  bool replace_checkpoints = false;      // a fresh run may delete an earlier run's checkpoints
  nlohmann::json fingerprint = nlohmann::json::object();  // settings a resumed run must share
  bool quiet = false;
  // Precision of the frozen base model's GEMMs (forward and input gradients); the LoRA
  // adapters, the optimizer and the loss stay fp32.
  kernels::Compute compute = kernels::Compute::F32;
};

struct StepResult {
  double loss = 0;       // mean NLL over the step's learned tokens
  double grad_norm = 0;  // before clipping
  double lr = 0;
  int64_t tokens = 0;    // real (unpadded) tokens processed
  int64_t scored = 0;    // learned tokens
};

struct TrainResult {
  int64_t steps = 0, total_steps = 0, resumed_from = 0, warmup_steps = 0, steps_per_epoch = 0;
  double final_loss = 0;            // mean of the last logged window of steps
  double final_val_loss = -1;       // -1 without validation data
  double initial_val_loss = -1;
  int64_t tokens = 0;               // tokens processed by this process
  double seconds = 0, tokens_per_s = 0;
  nlohmann::json log = nlohmann::json::array();  // one record per step (and validation records)
};

// Pads examples into tokens [B, T] (pad id 0) and targets [B*T] (position t -> label t+1, -1
// where nothing is learned); T = longest example. Returns T.
int make_batch(const std::vector<const Example*>& ex, std::vector<int32_t>& tokens, std::vector<int32_t>& targets);

// Splits `all` into train / validation: n_val examples chosen by a seeded shuffle (the rest keep
// their order). val_split in (0, 1) is a fraction, >= 1 a count.
void split_validation(std::vector<Example>& all, double val_split, uint64_t seed, std::vector<Example>& val);

class Trainer {
 public:
  using LogFn = std::function<void(const std::string&)>;
  Trainer(const Model& m, LoraAdapters& lora, TrainOptions opt, LogFn log = nullptr);

  // Learning rate of optimizer step `step` (0-based), given the total and warm-up steps.
  static double lr_at(const TrainOptions& o, int64_t step, int64_t total, int64_t warmup);

  // One optimizer step over the given micro-batches (step index selects the dropout masks and
  // the learning rate). Throws RuntimeError on a non-finite loss or gradient.
  StepResult step(const std::vector<std::vector<const Example*>>& micro_batches, int64_t step_index, double lr);
  // Mean NLL over the learned tokens of `val` (no dropout).
  double evaluate(const std::vector<Example>& val);

  TrainResult run(const std::vector<Example>& train, const std::vector<Example>& val);

  // Checkpoint I/O (public for tests): adapters + AdamW moments + trainer_state.json.
  void save_checkpoint(const std::filesystem::path& dir, int64_t step, const nlohmann::json& state) const;
  nlohmann::json load_checkpoint(const std::filesystem::path& dir);  // returns trainer_state.json
  static std::filesystem::path latest_checkpoint(const std::filesystem::path& ckpt_dir);
  int64_t adam_steps() const { return adam_step_; }

 private:
  struct Moments {
    std::vector<float> mA, vA, mB, vB;
  };
  void emit(const std::string& s) const;
  const Model& m_;
  LoraAdapters& lora_;
  TrainOptions opt_;
  LogFn log_;
  std::vector<Moments> mom_;
  int64_t adam_step_ = 0;
};

// Example order of one epoch: a seeded Fisher-Yates permutation of 0..n-1.
std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch);

}  // namespace llmprune
