// PyTorch .bin checkpoints (io/pytorch_bin.h): the files under tests/data/torch_bin were written
// by Debian's python3-torch 1.13 (tools/torch_bin_fixtures.py) in the zip format, the legacy
// format and as two zip shards with an index; reference.safetensors holds the same tensors.
// Crafted pickles naming other globals must be refused without running anything.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/pytorch_bin.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "model/model.h"
#include "test_util.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;

fs::path data(const std::string& rel) { return test::source_dir() / "tests/data/torch_bin" / rel; }

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), std::streamsize(s.size()));
}

// The error message of fn's UserError ("" and a test failure when it throws nothing or another type).
template <class Fn>
std::string user_error(Fn&& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a UserError: " << e.what();
    return "";
  }
  ADD_FAILURE() << "accepted";
  return "";
}

std::string parse_error(const std::string& bytes, const std::string& name = "x.bin") {
  return user_error([&] { parse_pytorch_bin(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name); });
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

class PytorchBin : public ::testing::TestWithParam<const char*> {};

TEST_P(PytorchBin, TensorsMatchTheSafetensorsCopyByteForByte) {
  const SafetensorsFile ref = SafetensorsFile::open(data("reference.safetensors"));
  std::vector<fs::path> files;
  const auto got = load_checkpoint_tensors(data(GetParam()), &files);
  ASSERT_EQ(got.size(), ref.tensors.size());
  for (auto& [name, t] : ref.tensors) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    EXPECT_TRUE(same_bytes(it->second, t)) << GetParam() << ": " << name;
  }
  EXPECT_EQ(files.size(), std::string(GetParam()) == "sharded" ? 2u : 1u);
  for (auto& f : files) EXPECT_EQ(f.extension(), ".bin");
  // The mix the fixture holds, so the comparison above covers each dtype.
  EXPECT_EQ(got.at("model.embed_tokens.weight").dtype, DType::F16);
  EXPECT_EQ(got.at("model.layers.1.input_layernorm.weight").dtype, DType::BF16);
  EXPECT_EQ(got.at("model.norm.weight").dtype, DType::F32);
}

TEST_P(PytorchBin, LoadsAsAModel) {
  Model m = Model::load(data(GetParam()));
  EXPECT_EQ(m.cfg.n_layer, 2);
  EXPECT_EQ(m.layers.size(), 2u);
  EXPECT_TRUE(m.cfg.tied);
}

INSTANTIATE_TEST_SUITE_P(Formats, PytorchBin, ::testing::Values("zip", "legacy", "sharded"));

TEST(PytorchBinViews, SharedStoragesStayViewsOfOneMapping) {
  const auto t = read_pytorch_bin(data("zip/pytorch_model.bin"));
  // Tied: lm_head.weight is model.embed_tokens.weight, one storage, no copy.
  EXPECT_EQ(t.at("lm_head.weight").data, t.at("model.embed_tokens.weight").data);
  // q/k/v: [8, 8], [4, 8], [4, 8] F16 views at element offsets 0, 64, 96 of one storage.
  const auto* q = static_cast<const uint8_t*>(t.at("model.layers.0.self_attn.q_proj.weight").data);
  EXPECT_EQ(static_cast<const uint8_t*>(t.at("model.layers.0.self_attn.k_proj.weight").data), q + 64 * 2);
  EXPECT_EQ(static_cast<const uint8_t*>(t.at("model.layers.0.self_attn.v_proj.weight").data), q + 96 * 2);
  EXPECT_NE(release_mapped_pages(t.at("model.embed_tokens.weight")), 0u) << "not a view into the file mapping";
  // The transposed down_proj (strides (1, 8)) is materialised: an owned buffer, not the mapping.
  EXPECT_EQ(release_mapped_pages(t.at("model.layers.0.mlp.down_proj.weight")), 0u);
}

// ---- refused pickles ------------------------------------------------------------------------

TEST(PytorchBinSafety, ForeignGlobalsAreRefusedWithoutRunningThem) {
  const fs::path marker = "/tmp/llmprune-torch-bin-pwned";  // what the crafted payloads would create
  fs::remove(marker);
  const std::pair<const char*, const char*> cases[] = {
      {"os_system.bin", "pickle global 'os.system' is not allowed"},
      {"builtins_eval.bin", "pickle global 'builtins.eval' is not allowed"},
      {"builtin_exec.bin", "pickle global '__builtin__.exec' is not allowed"},
      {"stack_global_posix_system.bin", "pickle global 'posix.system' is not allowed"},
      {"legacy_os_system.bin", "pickle global 'os.system' is not allowed"},
      {"reduce_storage_type.bin", "pickle global 'torch.FloatStorage' called through REDUCE is not allowed"},
  };
  for (auto& [file, needle] : cases) {
    const fs::path p = data(std::string("bad/") + file);
    const std::string msg = user_error([&] { read_pytorch_bin(p); });
    EXPECT_EQ(msg.rfind(p.string() + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(marker));
}

// Pickles built here, each one opcode sequence away from a valid state dict.
TEST(PytorchBinSafety, UnexpectedOpcodesAndCallsAreRefused) {
  auto pkl = [](const std::string& body) {
    return parse_torch_pickle(reinterpret_cast<const uint8_t*>(body.data()), body.size(), "data.pkl");
  };
  auto err = [&](const std::string& body) { return user_error([&] { pkl(body); }); };
  auto str = [](const std::string& v) {  // BINUNICODE
    const uint32_t n = uint32_t(v.size());
    return "X" + std::string(reinterpret_cast<const char*>(&n), 4) + v;
  };
  const std::string proto = "\x80\x02", nul(1, '\0');
  EXPECT_NE(err(proto + "ccollections\nOrderedDict\n]\x85R.").find("OrderedDict called with arguments"), std::string::npos);
  EXPECT_NE(err(proto + "}" + str("a") + "ccollections\nOrderedDict\ns.").find("entry 'a' is not a tensor"), std::string::npos);
  EXPECT_NE(err(proto + "(" + str("a") + str("b") + "i\n.").find("opcode 0x69 is not allowed"), std::string::npos);  // INST
  EXPECT_NE(err(proto + "cposix\nsystem\n").find("pickle global 'posix.system' is not allowed"), std::string::npos);
  EXPECT_NE(err(proto + "}" + str("a") + str("b") + "\x85R.").find("REDUCE of a non-global"), std::string::npos);
  EXPECT_NE(err(proto + "}").find("no STOP"), std::string::npos);
  EXPECT_NE(err(proto + "h\x05.").find("memo key 5 was never stored"), std::string::npos);
  EXPECT_NE(err(proto + "}.}").find("1 bytes follow the STOP opcode"), std::string::npos);
  // A self-referencing dict is just data (no recursion, no leak): refused as not a state dict entry.
  EXPECT_NE(err(proto + "}q" + nul + str("a") + "h" + nul + "s.").find("entry 'a' is not a tensor"), std::string::npos);
  // The empty state dict is a valid pickle.
  EXPECT_TRUE(pkl(proto + "}.").tensors.empty());
}

// ---- damaged checkpoints ----------------------------------------------------------------------

TEST(PytorchBinErrors, UnsupportedDtypeNamesTheTensor) {
  const fs::path p = data("bad/long_tensor.bin");
  EXPECT_EQ(user_error([&] { read_pytorch_bin(p); }),
            p.string() + ": tensor 'model.norm.weight': dtype torch.LongStorage is not supported (F32, F16, BF16 are)");
}

TEST(PytorchBinErrors, StorageSmallerThanDeclared) {
  const fs::path p = data("bad/short_storage.bin");
  EXPECT_NE(user_error([&] { read_pytorch_bin(p); }).find("holds 60 bytes but its pickle declares 16 x torch.FloatStorage = 64 bytes"),
            std::string::npos);
}

TEST(PytorchBinErrors, CompressedMemberIsRefused) {
  const fs::path p = data("bad/deflated.bin");
  EXPECT_NE(user_error([&] { read_pytorch_bin(p); }).find("is compressed (method 8)"), std::string::npos);
}

TEST(PytorchBinErrors, EveryTruncationIsRefusedNamingTheFile) {
  for (const char* rel : {"zip/pytorch_model.bin", "legacy/pytorch_model.bin"}) {
    const std::string full = slurp(data(rel));
    ASSERT_GT(full.size(), 8000u);
    for (size_t n = 0; n < full.size(); n += (n < 3000 || n + 3000 > full.size()) ? 1 : 61) {
      const std::string msg = parse_error(full.substr(0, n), "cut.bin");
      ASSERT_EQ(msg.rfind("cut.bin: ", 0), 0u) << rel << " cut at " << n << ": " << msg;
    }
  }
}

TEST(PytorchBinErrors, DamagedZipDirectory) {
  const std::string full = slurp(data("zip/pytorch_model.bin"));
  // The first central directory entry's signature, found from the end record's offset field.
  const size_t end = full.rfind(std::string("PK\x05\x06", 4));
  ASSERT_NE(end, std::string::npos);
  uint32_t cd = 0;
  std::memcpy(&cd, full.data() + end + 16, 4);
  std::string bad = full;
  bad[cd + 2] = 'X';
  EXPECT_NE(parse_error(bad).find("zip archive: central directory entry 0 is damaged"), std::string::npos);
  bad = full;
  bad[cd + 10] = 8;  // method: deflate
  EXPECT_NE(parse_error(bad).find("is compressed (method 8)"), std::string::npos);
  // torch writes zip64 end records: the directory offset that counts is the zip64 record's.
  const size_t end64 = full.rfind(std::string("PK\x06\x06", 4));
  ASSERT_NE(end64, std::string::npos);
  bad = full;
  const uint64_t far = 0x7fffff00;
  std::memcpy(&bad[end64 + 48], &far, 8);
  EXPECT_NE(parse_error(bad).find("central directory lies outside the file"), std::string::npos);
}

TEST(PytorchBinErrors, LegacyStorageCountMismatch) {
  std::string full = slurp(data("legacy/pytorch_model.bin"));
  // The first storage record: its int64 element count, one more than declared.
  const TorchLegacyLayout layout = parse_torch_legacy(reinterpret_cast<const uint8_t*>(full.data()), full.size(), "x.bin");
  int64_t n = 0;
  std::memcpy(&n, full.data() + layout.data_offset, 8);
  ASSERT_GT(n, 0);
  const int64_t wrong = n + 1;
  std::memcpy(&full[layout.data_offset], &wrong, 8);
  EXPECT_NE(parse_error(full).find("holds " + std::to_string(n + 1) + " elements but its pickle declares " + std::to_string(n)),
            std::string::npos);
}

TEST(PytorchBinErrors, IndexNamingAMissingShard) {
  const fs::path dir = test::temp_dir("bin-index");
  for (auto& e : fs::directory_iterator(data("sharded"))) fs::copy_file(e.path(), dir / e.path().filename());
  fs::remove(dir / "pytorch_model-00002-of-00002.bin");
  const std::string msg = user_error([&] { Model::load(dir); });
  EXPECT_EQ(msg, (dir / "pytorch_model-00002-of-00002.bin").string() + ": shard named by the index is missing");
  // An index entry for a tensor no shard holds.
  fs::copy_file(data("sharded/pytorch_model-00002-of-00002.bin"), dir / "pytorch_model-00002-of-00002.bin");
  auto idx = nlohmann::json::parse(slurp(dir / "pytorch_model.bin.index.json"));
  idx["weight_map"]["model.extra.weight"] = "pytorch_model-00002-of-00002.bin";
  write_bytes(dir / "pytorch_model.bin.index.json", idx.dump());
  EXPECT_NE(user_error([&] { Model::load(dir); }).find("tensor 'model.extra.weight' listed in the index is missing"), std::string::npos);
}

// ---- the CLI on a .bin model directory --------------------------------------------------------

TEST(PytorchBinCli, InfoEvalPruneOnABinDirectory) {
  const fs::path dir = test::temp_dir("bin-model");
  fs::copy_file(data("zip/config.json"), dir / "config.json");
  fs::copy_file(data("zip/pytorch_model.bin"), dir / "pytorch_model.bin");
  for (const char* f : {"tokenizer.model", "tokenizer_config.json"})  // the KJV tokenizer: vocab 4096
    fs::copy_file(test::fixture_model("kjv-llama-gqa-tied") / f, dir / f);
  const std::string text = test::fixture_text("kjv.test.txt").string();

  auto info = test::run_cli("info --json " + dir.string());
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["layers"].size(), 2u);
  EXPECT_EQ(j["tied_embeddings"], true);

  auto eval = test::run_cli("eval --json " + dir.string() + " --ppl kjv=" + text + " --seq-len 32 --max-windows 2");
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  const double ppl = nlohmann::json::parse(eval.out)["ppl"]["kjv"]["ppl"].get<double>();
  EXPECT_GT(ppl, 1.0);
  EXPECT_TRUE(std::isfinite(ppl));

  const fs::path out = dir.parent_path() / "bin-model-pruned";
  fs::remove_all(out);
  auto prune = test::run_cli("prune " + dir.string() + " --out " + out.string() +
                             " --strategy block --ratio 0.5 --attn-layers 0:2 --mlp-layers 0:2 --importance l2");
  ASSERT_EQ(prune.exit_code, 0) << prune.err;
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "pytorch_model.bin"));
  Model pruned = Model::load(out);
  EXPECT_LT(count_params(pruned).total, count_params(Model::load(dir)).total);
}

}  // namespace
}  // namespace llmprune
