#pragma once
// The dependency graph of a model (METHOD.md §1), built from the architecture table alone.
//
// Nodes are axes of tensors: (tensor, axis) pairs, each living in one index `Space` (arch/arch.h).
// Axes in the same space instance share their indices (identity coupling, as Torch-Pruning
// makes a norm's in- and out-channels the same thing): removing index i of one removes index i
// of every other. Hidden has one instance for the whole model (the residual stream); QHeads,
// KVHeads and Mlp have one per layer. A space is cut into indivisible blocks (whole heads for
// the head spaces: RoPE rotates pairs inside a head).
//
// Ops that couple blocks of two spaces without an identity of indices are described as data
// (`block_couplings()`): attention makes query head h read KV head h / rep. The §1 in/out-degree
// rules are applied to those edges to close a starting unit into a group.
#include <compare>
#include <cstdint>
#include <vector>

#include "arch/arch.h"
#include "graph/groups.h"
#include "model/model.h"

namespace llmprune {

// How a space is cut into indivisible units.
enum class BlockSize { One, HeadDim };

// Graph-level description of an index space.
struct SpaceDesc {
  Space space;
  const char* name;    // "hidden", "vocab", "q_heads", "kv_heads", "mlp"
  const char* unit;    // one unit in messages: "hidden channel", "query head", ...
  bool per_layer;      // one instance per decoder layer (else one for the whole model)
  BlockSize block;     // unit size
  bool prunable;       // Vocab is never cut
};
const SpaceDesc& space_desc(Space s);

// An op-level coupling between blocks of two spaces of the same layer: consumer block j reads
// producer block j / rep, rep = n_consumer_blocks / n_producer_blocks (grouped repeat, as GQA's
// repeat_kv). With rep = 1 it is one-to-one (MHA).
struct BlockCoupling {
  const char* op;   // "attention"
  Space producer;   // KVHeads
  Space consumer;   // QHeads
};
const std::vector<BlockCoupling>& block_couplings();

// One axis of one present tensor.
struct AxisNode {
  int layer = -1;       // -1 for whole-model tensors
  int role = 0;         // Role (layer >= 0) or GlobalRole (layer == -1)
  int axis = 0;         // 0 rows / vector elements, 1 columns
  Space space = Space::None;
  int64_t size = 0;     // length of this axis
  int space_inst = -1;  // index into DependencyGraph::spaces()
  bool is_norm = false, is_bias = false, is_matrix = false;
};

// The set of axes sharing one index space (in one layer, or model-wide).
struct SpaceInstance {
  Space space = Space::None;
  int layer = -1;         // -1 for model-wide spaces
  int64_t size = 0;       // indices
  int64_t block = 1;      // indices per unit
  std::vector<int> axes;  // AxisNode ids, execution order
  int64_t n_blocks() const { return size / block; }
};

// A unit of the graph: one block of one space instance (a head, a KV head, an MLP channel, a
// hidden channel).
struct Unit {
  int space_inst = -1;
  int64_t block = 0;
  auto operator<=>(const Unit&) const = default;
};

class DependencyGraph {
 public:
  // Builds the graph for the model's current (possibly ragged) shapes. Throws UserError when a
  // coupling cannot hold (e.g. query heads not a multiple of KV heads).
  explicit DependencyGraph(const Model& m);

  const std::vector<AxisNode>& axes() const { return axes_; }
  const std::vector<SpaceInstance>& spaces() const { return spaces_; }
  // Space instance of `s` in `layer` (layer ignored for model-wide spaces); -1 when absent.
  int space_instance(Space s, int layer) const;
  // AxisNode id of (layer, role, axis); -1 when that tensor is absent.
  int axis_node(int layer, int role, int axis) const;

  // Out(u) and In(u) over the op couplings.
  std::vector<Unit> consumers(const Unit& u) const;
  std::vector<Unit> producers(const Unit& u) const;
  // Closure of the §1 rules from `start`: (1) a consumer whose only producer is removed goes,
  // (2) a producer whose only consumer is removed goes; repeated to a fixpoint. Sorted, with start.
  std::vector<Unit> closure(const Unit& start) const;

  // Members removing `units` slices: every axis of each unit's space instance, restricted to the
  // units' index blocks, in execution order. Norm weights score only when `norms_score`.
  std::vector<Member> members_of(const std::vector<Unit>& units, bool norms_score) const;
  // Every tensor of decoder layer l as a member (axis 0, all rows); matrices score.
  std::vector<Member> layer_members(int l) const;

  // Execution-order key of a tensor: embed, layer 0 roles in order, ..., final_norm, lm_head.
  static int64_t exec_order(int layer, int role);

 private:
  struct Edge {
    int producer_inst, consumer_inst;
    int64_t rep;  // consumer blocks per producer block
  };
  int n_layers_ = 0;
  std::vector<int> axis_lookup_;  // (layer + 1, role, axis) -> AxisNode id or -1
  std::vector<AxisNode> axes_;
  std::vector<SpaceInstance> spaces_;
  std::vector<Edge> edges_;
};

}  // namespace llmprune
