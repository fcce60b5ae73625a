#pragma once
// The every-subcommand CLI run shared by the families' tests (phi3, chatglm v1): info, eval,
// generate, groups, a block prune of heads and MLP channels, sparsify, tune of the pruned model
// with its PEFT adapter, and export --hf of the tuned model, which must reload with the tuned
// model's logits. Each family's test adds what is its own (GGUF, context limits) around it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/forward.h"
#include "model/model.h"
#include "test_util.h"

namespace llmprune::test {

struct EverySubcommand {
  std::string family;                    // in info's output
  std::string groups_member;             // a tensor `groups --show 1:0` lists ("qkv_proj.weight[k]")
  std::vector<std::string> lora_modules;  // the adapter's target_modules
  std::string fused_qkv;                 // a fused tensor the HF export holds
  std::vector<int32_t> ids;              // tokens whose logits are compared after the export
};

struct EverySubcommandPaths {
  std::filesystem::path pruned, tuned, adapter, hf;
};

inline CmdResult cli_ok(const std::string& args) {
  CmdResult r = run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out << r.err;
  return r;
}

// Logits of `ids` as `batch` sequences of equal length.
inline std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids, int batch = 1) {
  Runner r(m);
  std::vector<float> out(ids.size() * size_t(m.cfg.vocab));
  r.forward(ids.data(), batch, int(ids.size()) / batch, out.data());
  return out;
}

// `export --gguf` of a model pruned unevenly is refused (one line, exit 2) by families whose
// llama.cpp loader takes one head count and MLP width, and writes nothing at `out`.
inline void expect_ragged_gguf_refused(const std::string& pruned, const std::filesystem::path& out) {
  CmdResult r = run_cli("export " + pruned + " --gguf " + out.string());
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("takes one head count and MLP width"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Runs every subcommand on `model`, writing under `dir` (not named "cli": run_cli uses that).
inline EverySubcommandPaths run_every_subcommand(const std::string& model, const std::filesystem::path& dir,
                                                 const EverySubcommand& want) {
  const std::string txt = fixture_text("kjv.valid.txt").string();
  EXPECT_NE(cli_ok("info " + model).out.find(want.family), std::string::npos);
  cli_ok("eval " + model + " --ppl t=" + txt + " --seq-len 32 --max-windows 3");
  cli_ok("generate " + model + " --prompt \"And God said\" --max-tokens 8");
  EXPECT_NE(cli_ok("groups " + model + " --show 1:0").out.find(want.groups_member), std::string::npos);
  EverySubcommandPaths p{dir / "pruned", dir / "tuned", dir / "adapter", dir / "hf"};
  cli_ok("prune " + model + " --out " + p.pruned.string() + " --strategy block --ratio 0.5 --attn-layers 1:2 --mlp-layers 0:2 "
         "--importance taylor --taylor element1 --calib " + txt + " --calib-samples 2 --calib-seq-len 16");
  cli_ok("sparsify " + model + " --out " + (dir / "sparse").string() + " --method l1 --amount 0.5");
  cli_ok("tune " + p.pruned.string() + " --data " + txt + " --out " + p.tuned.string() +
         " --max-steps 1 --batch 2 --micro-batch 2 --cutoff-len 16 --save-adapter " + p.adapter.string());
  std::ifstream ac(p.adapter / "adapter_config.json");
  EXPECT_EQ(nlohmann::json::parse(ac)["target_modules"], nlohmann::json(want.lora_modules));
  cli_ok("export " + p.tuned.string() + " --hf " + p.hf.string());
  SafetensorsFile f = SafetensorsFile::open(p.hf / "model.safetensors");
  EXPECT_TRUE(f.tensors.count(want.fused_qkv)) << want.fused_qkv;
  EXPECT_EQ(logits_of(Model::load(p.hf), want.ids), logits_of(Model::load(p.tuned), want.ids));
  return p;
}

}  // namespace llmprune::test
