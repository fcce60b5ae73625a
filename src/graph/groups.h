#pragma once
// Coupled structures ("groups"): the weights that must be removed together. Discovered from the
// architecture description (arch/arch.h index spaces) by graph/dependency.cpp, never hard-coded.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace llmprune {

enum class UnitKind { Head, KvGroup, Mlp, Hidden, Layer };
const char* unit_kind_name(UnitKind k);  // "head", "kv_group", "mlp", "hidden", "layer"
bool unit_kind_from_name(const std::string& s, UnitKind* out);  // inverse; false if unknown

// How GQA attention is cut (METHOD.md §8): whole KV groups, or query heads evenly per KV group.
enum class GqaUnit { KvGroup, Query };

// One tensor slice of a group: indices along one axis of one tensor.
struct Member {
  int layer = -1;                // -1 for whole-model tensors (embed, final_norm, lm_head)
  int role = 0;                  // Role when layer >= 0, GlobalRole when layer == -1
  int axis = 0;                  // 0 = rows (out features / vector elements), 1 = columns (in features)
  std::vector<int64_t> index;    // ascending indices along `axis`
  bool scores = true;            // counts for importance (weight matrices; norms only in Hidden groups)
};

struct Group {
  UnitKind kind = UnitKind::Mlp;
  int layer = -1;                // -1 for Hidden groups
  int index = 0;                 // unit index inside its layer (or hidden channel)
  std::vector<Member> members;   // execution order: q, k, v, o / gate, up, down / embed ... lm_head
};

struct GroupOptions {
  GqaUnit gqa_unit = GqaUnit::KvGroup;
  bool heads = true, mlp = true, hidden = false, layers = false;
};

// All groups of the requested kinds for the model's current (possibly ragged) shapes.
// Order: attention units (layer by layer, index order), then MLP channels, hidden channels,
// layers. A layer whose KV heads are as many as its query heads yields kind Head under either
// GqaUnit (the closure of a KV head is its one query head, and vice versa).
std::vector<Group> discover_groups(const Model& m, const GroupOptions& opt);

// Name of the tensor a member slices (HF name).
std::string member_tensor_name(const Model& m, const Member& mem);
const Tensor& member_tensor(const Model& m, const Member& mem);
// Weight elements a member covers: |index| times the length of the tensor's other axis.
int64_t member_numel(const Model& m, const Member& mem);

}  // namespace llmprune
