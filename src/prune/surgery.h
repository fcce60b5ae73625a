#pragma once
// Physical removal of groups: every member tensor is sliced (owned copies in the storage dtype,
// one tensor at a time), the config is updated and per-layer sizes re-derived from the shapes.
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

// A copy of `m` in which each group's contribution to the residual stream is zeroed: the slices
// of the group in tensors that write the residual (o columns for heads / KV groups, down columns
// for MLP channels, all of o and down for layers; embed column and o/down rows for hidden
// channels). For heads, KV groups, MLP channels and layers its logits equal those of
// remove_groups(m, g) (the proof of the surgery). Tensors it does not touch share m's storage.
Model zero_groups(const Model& m, const std::vector<Group>& groups);

}  // namespace llmprune
