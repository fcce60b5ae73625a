#pragma once
// Group importance (METHOD.md §2 and §8): per-weight salience from calibration gradients (or
// magnitudes, or random), summed over each member's slice, reduced over the group's members.
#include <cstdint>
#include <string>
#include <vector>

#include "graph/groups.h"
#include "kernels/gemm_bf16.h"
#include "model/model.h"

namespace llmprune {

enum class Criterion { Random, L1, L2, Vector, Element1, Element2, Fisher };
enum class Reduction { Sum, Mean, Max, Prod, First, Last };

// Parse CLI spellings: random|l1|l2 and taylor + vector|element1|element2|fisher; sum|mean|max|prod|first|last.
Criterion parse_criterion(const std::string& importance, const std::string& taylor);
Reduction parse_reduction(const std::string& s);
std::string criterion_name(Criterion c);
std::string reduction_name(Reduction r);
bool needs_gradients(Criterion c);
bool needs_fisher(Criterion c);

struct CalibOptions {
  std::string file;
  int samples = 10, seq_len = 64;
  bool random = true;  // --calib-sampling random (default) | sequential
  uint64_t seed = 0;
  std::string flag = "--calib";  // errors name FLAG-samples / FLAG-seq-len (--stat for the statistics set)
};

// The calibration windows [samples, seq_len] from a token stream (BOS once + whole text).
// Throws UserError naming opt.file when the text is shorter than samples*seq_len tokens.
std::vector<int32_t> calibration_windows(const std::vector<int32_t>& stream, const CalibOptions& opt);

struct ImportanceOptions {
  Criterion criterion = Criterion::Element1;
  Reduction reduction = Reduction::Sum;
  uint64_t seed = 0;   // random criterion
  bool keep_activations = false;  // GradOptions::keep_activations (faster, more memory)
  kernels::Compute compute = kernels::Compute::F32;  // GradOptions::compute
};

struct ImportanceResult {
  std::vector<double> scores;                       // one per group, in the groups' order
  std::vector<std::vector<double>> member_scores;   // [group][member] (0 for non-scoring members)
  double calib_loss = 0;
  double seconds = 0;
};

// tokens: [B, T] calibration windows (ignored for random / l1 / l2).
ImportanceResult estimate_importance(const Model& m, const std::vector<Group>& groups, const ImportanceOptions& opt,
                                     const std::vector<int32_t>& tokens, int B, int T);

// Salience summed over one member's slice; exposed for tests.
// W, G, A are [rows, cols] row-major (cols = 1 for vectors); A may be null unless needed.
double member_slice_score(const float* W, const float* G, const float* A, int64_t rows, int64_t cols, const Member& mem,
                          Criterion c);
double reduce_members(const std::vector<double>& scores, const std::vector<bool>& counts, Reduction r);

}  // namespace llmprune
