#pragma once
// A loaded model: config, per-layer sizes, and every weight as a Tensor in its storage dtype
// (views into mmap'd files until something modifies them).
#include <array>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/tensor.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

struct LayerWeights {
  std::array<Tensor, kNumLayerRoles> w;  // indexed by Role; optional roles may be empty
  Tensor& operator[](Role r) { return w[size_t(r)]; }
  const Tensor& operator[](Role r) const { return w[size_t(r)]; }
};

struct Model {
  ModelConfig cfg;
  const ArchDesc* arch = nullptr;
  std::filesystem::path dir;                      // where it was loaded from
  std::vector<std::filesystem::path> files;       // weight files (for hashing / size on disk)
  std::array<Tensor, kNumGlobalRoles> global;     // embed, final_norm, lm_head (empty when tied)
  std::vector<LayerWeights> layers;
  // Streaming mode (prune of a model near the memory budget): a layer's mapped file pages are
  // dropped from RSS once LayerF32::load has converted them (F32 storage: once the next layer is
  // loaded), and save_model_files drops each source tensor's pages after writing it. The pages
  // stay in the page cache; a later pass re-faults them.
  bool release_pages = false;

  const Tensor& embed() const { return global[size_t(GlobalRole::Embed)]; }
  const Tensor& final_norm() const { return global[size_t(GlobalRole::FinalNorm)]; }
  const Tensor& final_norm_bias() const { return global[size_t(GlobalRole::FinalNormBias)]; }  // LayerNorm families
  // The output projection: lm_head, or the embedding when tied.
  const Tensor& lm_head() const {
    return cfg.tied ? global[size_t(GlobalRole::Embed)] : global[size_t(GlobalRole::LmHead)];
  }
  DType storage_dtype() const { return embed().dtype; }

  // Loads a checkpoint directory (config.json + safetensors, or a .gguf file), validating every
  // shape against its role and deriving per-layer sizes from the shapes.
  // A directory an AtomicDir is still building (holding kIncompleteMarker) is refused.
  static Model load(const std::filesystem::path& path);
  // The same for a directory this process is building with an AtomicDir and reads back before
  // commit() (prune's result and its scratch steps): the incomplete-output marker is expected.
  static Model load_unfinished(const std::filesystem::path& dir);
  // Builds the model from named tensors (HF names) and a config; used by load and by GGUF import.
  // Fused tensors (arch's FusedTensor) are split into views of their roles.
  static Model from_tensors(ModelConfig cfg, std::map<std::string, Tensor> tensors, const std::string& source);
  // The same from tensors already named by role (layer_tensor_name: a fused part is "<fused>[q]").
  static Model from_role_tensors(ModelConfig cfg, std::map<std::string, Tensor> tensors, const std::string& source);
  // Recomputes cfg.layers from the tensor shapes and checks all shapes are consistent.
  void validate_and_derive_sizes(const std::string& source);

  // Visits every tensor as stored on disk, in execution order: a stand-alone role with its one
  // tensor, a fused tensor (arch's FusedTensor) with its parts to concatenate along rows.
  void for_each_stored_tensor(
      const std::function<void(const std::string& name, const std::vector<const Tensor*>& parts)>& fn) const;
  // Visits every present role tensor with its name (execution order; fused parts "<fused>[q]").
  void for_each_tensor(const std::function<void(const std::string& name, const Tensor& t)>& fn) const;
  void for_each_tensor_mut(const std::function<void(const std::string& name, Tensor& t)>& fn);

  int64_t n_params() const;
};

// The tokenizer a checkpoint directory ships, with its family's conventions (arch's
// TokenizerConvention: appended specials, prompt prefix) when config.json names a family.
std::unique_ptr<Tokenizer> load_tokenizer_for_model(const std::filesystem::path& model_dir);
// Those conventions: of a family, and of the family a directory's config.json names (none when
// it names none).
TokenizerExtras tokenizer_extras(const ArchDesc& arch);
TokenizerExtras tokenizer_extras_for_dir(const std::filesystem::path& model_dir);
// The directory holding a model (itself, or the folder of a .gguf file): tokenizer files live there.
std::filesystem::path model_dir_of(const std::string& model);
// The tokenizer of a model path: tokenizer files in its directory (load_tokenizer_for_model), else,
// for a .gguf file, the vocabulary stored in the GGUF metadata (model/gguf_model.cpp).
std::unique_ptr<Tokenizer> load_model_tokenizer(const std::string& model);

// Parameter counts by role for `info` and reports.
struct ParamCounts {
  int64_t embed = 0, lm_head = 0, attention = 0, mlp = 0, norms = 0, total = 0;
};
ParamCounts count_params(const Model& m);

// Gives every layer every bias of each config-keyed switch (arch's BiasSwitch) of which the model
// holds at least one, zeros where missing, so that the saved key (true) describes the tensors:
// HF's attention_bias puts a bias on q, k and v as well as o, in every layer. F32 zeros sized by
// the biased matrix's rows. Returns the number of tensors added.
int complete_bias_switches(Model& m);

// Sets config.json's bias switches (attention_bias, mlp_bias) to the biases the model holds.
void set_bias_keys(const Model& m, nlohmann::json& cfg);

// Writes the model as an HF directory (config.json, model.safetensors, generation_config.json)
// into `dir` (which must exist), converting weights to `dtype`, streaming tensor by tensor.
// Tokenizer files of `source_dir` are copied when present.
void save_model_files(const Model& m, const std::filesystem::path& dir, DType dtype,
                      const std::filesystem::path& source_dir);
// The same files, with each tensor's bytes produced by `bytes(name, t, dst)` (t's shape in
// `dtype`) as the writer reaches it, instead of read from t: streaming surgery
// (prune/surgery.h save_pruned) materialises its sliced tensors only there.
using TensorBytes = std::function<void(const std::string& name, const Tensor& t, void* dst)>;
void save_model_files(const Model& m, const std::filesystem::path& dir, DType dtype,
                      const std::filesystem::path& source_dir, const TensorBytes& bytes);

}  // namespace llmprune
