// llmprune export MODEL --gguf OUT.gguf | --hf OUTDIR [--dtype f32|f16|bf16]: write a model (HF
// directory or .gguf, pruned or not) as a GGUF file llama.cpp runs, or as an HF directory.
// docs/export.md.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmprune::cli {
namespace {
namespace fs = std::filesystem;

struct ExportArgs {
  std::string model, gguf, hf, dtype;
  bool force = false;
};

DType parse_dtype(const std::string& s, DType fallback) {
  if (s.empty()) return fallback;
  if (s == "f32" || s == "float32") return DType::F32;
  if (s == "f16" || s == "float16") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  throw UserError("--dtype must be f32, f16 or bf16 (got '" + s + "')");
}

const char* dtype_flag(DType t) { return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16"; }

bool is_gguf(const std::string& p) { return fs::path(p).extension() == ".gguf" && fs::is_regular_file(p); }

void run_export(const ExportArgs& a) {
  if (a.gguf.empty() && a.hf.empty()) throw UserError("nothing to do: give --gguf OUT.gguf and/or --hf OUTDIR");
  if (!a.gguf.empty()) {
    fs::path out(a.gguf);
    if (out.extension() != ".gguf") throw UserError("--gguf " + a.gguf + ": the output file name must end in .gguf");
    if (fs::exists(out) && !a.force) throw UserError(a.gguf + ": output already exists (use --force to replace it)");
    if (fs::is_directory(out)) throw UserError(a.gguf + ": is a directory");
    fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
    if (!fs::is_directory(parent)) throw UserError(a.gguf + ": directory " + parent.string() + " does not exist");
  }
  // Checked before anything is written: the GGUF would otherwise be made before --hf is refused.
  if (!a.hf.empty() && fs::exists(a.hf) && !a.force) throw UserError(a.hf + ": output already exists (use --force to replace it)");
  Model m = Model::load(a.model);
  const DType dtype = parse_dtype(a.dtype, m.storage_dtype());
  const fs::path src_dir = model_dir_of(a.model);

  // The tokenizer of the source: files next to it, or (for a .gguf source) its own metadata.
  std::unique_ptr<Tokenizer> tok;
  std::string tok_note;
  try {
    tok = load_tokenizer_for_model(src_dir);
  } catch (const UserError& e) {
    if (!is_gguf(a.model)) tok_note = e.what();
  }

  if (!a.gguf.empty()) {
    if (!tok && !is_gguf(a.model))
      std::fprintf(stderr, "llmprune: warning: no tokenizer (%s); the GGUF gets no vocabulary and llama.cpp will not run it\n",
                   tok_note.c_str());
    export_gguf(m, tok.get(), a.gguf, dtype);
    std::printf("wrote %s (%s, %s, %d layers%s, %s)\n", a.gguf.c_str(), m.cfg.uniform() ? "llama" : "deci",
                dtype_flag(dtype), m.cfg.n_layer, m.cfg.uniform() ? "" : ", ragged: per-layer head/MLP arrays",
                human_bytes(double(fs::file_size(a.gguf))).c_str());
  }
  if (!a.hf.empty()) {
    AtomicDir out(a.hf, a.force);
    save_model_files(m, out.path(), dtype, src_dir);
    if (is_gguf(a.model) && find_tokenizer_file(out.path(), tokenizer_extras(*m.arch)).empty()) {
      try {
        write_gguf_tokenizer_model(a.model, out.path() / "tokenizer.model");
      } catch (const UserError& e) {
        std::fprintf(stderr, "llmprune: warning: no tokenizer written (%s)\n", e.what());
      }
    }
    out.commit();
    std::printf("wrote %s (HF directory, %s, %d layers%s)\n", a.hf.c_str(), dtype_flag(dtype), m.cfg.n_layer,
                m.cfg.uniform() ? "" : ", ragged");
  }
}

void register_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a model as a GGUF file for llama.cpp (--gguf) or as an HF directory (--hf)");
  auto a = std::make_shared<ExportArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file")->required();
  cmd->add_option("--gguf", a->gguf, "write a GGUF v3 file (llama.cpp's llama layout; ragged models as 'deci')");
  cmd->add_option("--hf", a->hf, "write an HF directory (config.json, model.safetensors, tokenizer files)");
  cmd->add_option("--dtype", a->dtype, "weight dtype: f32, f16 or bf16 (default: the model's storage dtype)");
  cmd->add_flag("--force", a->force, "replace existing outputs");
  cmd->callback([a] { run_export(*a); });
}

AutoRegister reg(register_export);

}  // namespace
}  // namespace llmprune::cli
