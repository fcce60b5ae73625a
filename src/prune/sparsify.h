#pragma once
// Magnitude-pruning baselines (docs/sparsify.md): unstructured sparsity that zeroes single
// weights of the decoder projections (l1 = torch.nn.utils.prune.l1_unstructured, random, Wanda =
// |w|·‖x‖ with calibration input norms, optional N:M patterns), and `ln`, torch's ln_structured
// mapped onto the dependency groups (whole heads / MLP channels / hidden channels chosen by the
// Ln norm of single matrices' rows or columns, then removed or zeroed consistently).
//
// Selection rule (every scope): a unit of selection (a tensor, a row, an M-group, or the pool of
// all targeted tensors) of n weights zeroes exactly k of them, the k smallest by score; equal
// scores are taken in traversal order (lower flat index first; under the global scope, tensors in
// model order: layer by layer, q k v o gate up down). k = round_half_even(amount·n) as Python's
// round() in torch's _compute_nparams_toprune. Scores are compared as non-negative floats; a NaN
// score ranks above +inf (never pruned before a number).
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "arch/arch.h"
#include "graph/groups.h"
#include "model/model.h"

namespace llmprune {

enum class SparsifyMethod { L1, Random, Wanda, Ln };
enum class SparsityScope { PerTensor, PerRow, Global };

SparsifyMethod parse_sparsify_method(const std::string& s);  // l1 | random | wanda | ln
SparsityScope parse_sparsity_scope(const std::string& s);    // per-tensor | per-row | global
std::string sparsify_method_name(SparsifyMethod m);
std::string sparsity_scope_name(SparsityScope s);
// "2:4" -> {2, 4}; UserError naming `flag` unless 0 < N < M.
std::pair<int, int> parse_nm(const std::string& s, const std::string& flag);

struct SparsifyOptions {
  SparsifyMethod method = SparsifyMethod::L1;
  double amount = 0.3;                     // fraction zeroed (unstructured) / units removed (ln)
  SparsityScope scope = SparsityScope::PerTensor;
  int nm_n = 0, nm_m = 0;                  // N:M: zero N of every M consecutive inputs of a row
  std::vector<Role> targets;               // matrix roles; empty = the method's default
  uint64_t seed = 0;                       // random scores
  // ln
  int ln_norm = 2;                         // 1 | 2
  int ln_dim = 0;                          // 0 = rows (output features), 1 = columns (inputs)
  bool ln_keep_shape = false;              // zero the chosen groups' slices instead of removing them
};

// The default targets: all seven projections; for ln, those whose chosen axis is a per-layer
// unit (rows: q k v gate up; cols: o down), so hidden channels are pruned only when asked for.
std::vector<Role> default_sparsify_targets(const SparsifyOptions& o);

// k = round_half_even(amount * n) (torch / Python round), computed in double.
int64_t amount_to_count(double amount, int64_t n);

// Order key of a non-negative float score: its bit pattern with the sign cleared (so -0 == +0 and
// NaN sorts above +inf). Keys order exactly as the scores do.
uint32_t score_key(float s);

// Score keys of a [rows, cols] matrix (fp32 weights): l1 |w|; wanda |w_ij|·col_norm[j] (product in
// fp32); random a hash of (seed, stream, index). col_norms is needed for wanda only.
std::vector<uint32_t> matrix_score_keys(const float* w, int64_t rows, int64_t cols, SparsifyMethod m, const float* col_norms,
                                        uint64_t seed, uint64_t stream);

// Selection over one key sequence visited in chunks: all keys < key, plus the first take_equal
// keys == key in visiting order, are the k smallest (exact, two histogram passes, O(2^16) memory).
struct KeyThreshold {
  uint32_t key = 0;
  int64_t take_equal = 0;
};
using KeyChunkFn = std::function<void(const uint32_t* keys, int64_t n)>;
KeyThreshold kth_smallest_threshold(const std::function<void(const KeyChunkFn&)>& visit, int64_t k);

// The mask (1 = zero this weight) of one [rows, cols] matrix for the per-tensor or per-row scope,
// or for an N:M pattern when nm_m > 0 (cols must be a multiple of M; UserError naming `name`).
std::vector<uint8_t> select_in_matrix(const uint32_t* keys, int64_t rows, int64_t cols, SparsityScope scope, double amount,
                                      int nm_n, int nm_m, const std::string& name);

struct TensorSparsity {
  std::string name;
  int layer = 0;
  Role role = Role::Q;
  int64_t numel = 0, zeroed = 0, zeros = 0;  // zeroed = selected by the method; zeros = exact zeros after
};

struct LnUnits {
  UnitKind kind = UnitKind::Mlp;
  int layer = -1;  // -1 for hidden channels
  int before = 0, removed = 0;
};

struct SparsifyReport {
  std::vector<TensorSparsity> tensors;   // targeted tensors (unstructured, and ln --keep-shape)
  int64_t target_params = 0, target_zeroed = 0, target_zeros = 0;
  int64_t params_before = 0, params_after = 0, model_zeros_after = 0;  // every tensor of the model
  std::vector<LnUnits> ln_units;         // ln: per (kind, layer)
  int calib_tokens = 0;
  double seconds = 0;
};

// Applies the options to `m` in place (modified tensors become owned copies in the storage dtype;
// ln without keep-shape replaces `m` by the smaller model). calib: [B, T] windows, wanda only.
// Wanda statistics are gathered layer by layer as in Sun et al.'s code: layer l's input norms are
// measured on the outputs of the already-sparsified layers 0..l-1 (global scope: all norms come
// from the dense model, since one ranking spans every layer).
SparsifyReport sparsify_model(Model& m, const SparsifyOptions& o, const std::vector<int32_t>& calib, int B, int T);

// ln: the unit kind a matrix's axis belongs to (rows of q/k/v -> heads, of gate/up -> MLP channels,
// of o/down -> hidden; columns of o -> heads, of down -> MLP channels, of q/k/v/gate/up -> hidden).
UnitKind ln_unit_kind(Role r, int dim);

// ln: score of each group = (sum over the group's members that are rows (dim 0) / columns (dim 1)
// of a targeted matrix of sum |w|^p)^(1/p). Exposed for tests.
std::vector<double> ln_group_scores(const Model& m, const std::vector<Group>& groups, const std::vector<Role>& targets,
                                    int dim, int p);

}  // namespace llmprune
