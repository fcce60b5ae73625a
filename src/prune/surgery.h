#pragma once
// Physical removal of groups: every member tensor is sliced (owned copies in the storage dtype,
// one tensor at a time), the config is updated and per-layer sizes re-derived from the shapes.
#include <filesystem>
#include <functional>
#include <vector>

#include "graph/groups.h"
#include "model/model.h"

namespace llmprune {

// A new model without the `removed` groups (all discovered on `m`; their layer numbers refer to
// `m`). Removed layers vanish and the rest are renumbered; hidden removal shrinks cfg.hidden.
// The result owns all its memory (never aliases `m`) and keeps m's storage dtype.
// Throws UserError, naming the layer, for plans that would remove every head, KV head or MLP
// channel of a layer, every hidden channel or every layer; that leave query heads unevenly spread
// over KV groups (or a query head without its KV head); or whose members are inconsistent with
// the dependency graph (coupled axes cut differently, partial heads, indices out of range).
Model remove_groups(const Model& m, const std::vector<Group>& removed);

// Streaming remove_groups + save_model_files: writes the pruned model as HF files into `dir`
// (same checks, same bytes) without holding it: each tensor is sliced out of m, in `dtype`,
// straight into the writer's buffer when the file reaches it (with m.release_pages, m's mapped
// pages of that tensor are dropped after). Memory: the largest tensor, once. Load the result
// with Model::load(dir) (mmap) to use it.
// `edit`, when given, changes the skeleton before it is written: tensors it puts in (owning their
// data, any dtype) are written converted to `dtype` (prune::run: the compensation's refitted
// o_proj / down_proj and biases, CompensatedModel::apply).
void save_pruned(const Model& m, const std::vector<Group>& removed, const std::filesystem::path& dir, DType dtype,
                 const std::filesystem::path& source_dir, const std::function<void(Model&)>& edit = {});

// A copy of `m` in which each group's contribution to the residual stream is zeroed: the slices
// of the group in tensors that write the residual (o columns for heads / KV groups, down columns
// for MLP channels, all of o and down for layers; embed column and o/down rows for hidden
// channels). For heads, KV groups, MLP channels and layers its logits equal those of
// remove_groups(m, g) (the proof of the surgery). Tensors it does not touch share m's storage.
Model zero_groups(const Model& m, const std::vector<Group>& groups);

}  // namespace llmprune
