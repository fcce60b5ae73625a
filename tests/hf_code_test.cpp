// transformers remote code beside ragged models (model/hf_code.h): what is written, that the
// Python parses, that config.json's auto_map names classes the written files define, and that
// the per-layer sizes in config.json are the tensors'. Loading in transformers itself is
// tools/check_hf_load.py's job (docs/export.md); python3 without torch is enough here.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "model/hf_code.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model_factory.h"
#include "test_util.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json read_json(const fs::path& p) { return json::parse(read_text(p)); }

// Debian's interpreter when present (a pyenv shim on PATH takes seconds to start); any python3
// without torch can parse.
std::string python3() { return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3"; }

bool have_python3() { return std::system((python3() + " -c pass > /dev/null 2>&1").c_str()) == 0; }

// Top-level class names of each Python file, by Python's own parser, in one interpreter run;
// throws naming the file on a syntax error.
std::map<fs::path, std::set<std::string>> python_classes(const std::vector<fs::path>& files) {
  std::string cmd = python3() +
                    " -c 'import ast,sys\nfor f in sys.argv[1:]: t=ast.parse(open(f).read(), f); "
                    "print(f, *[n.name for n in t.body if isinstance(n, ast.ClassDef)])'";
  for (const fs::path& f : files) cmd += " '" + f.string() + "'";
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  if (pclose(p) != 0) throw std::runtime_error("python3 could not parse the files: " + out);
  std::map<fs::path, std::set<std::string>> classes;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string file, name;
    words >> file;
    auto& set = classes[file];
    while (words >> name) set.insert(name);
  }
  return classes;
}

Model ragged_model(const std::string& model_type) {
  auto spec = test::RandomModelSpec::uniform(3, 4, 2, 24);
  spec.model_type = model_type;
  spec.qkv_bias = model_type == "chatglm";  // ChatGLM2/3's add_qkv_bias
  spec.layers[1] = LayerConfig{2, 1, 0, 24};  // fewer heads and KV heads
  spec.layers[2] = LayerConfig{4, 2, 0, 10};  // narrower MLP
  return test::make_random_model(spec);
}

// Every auto_map entry "module.Class" names a class defined in DIR/module.py.
void expect_auto_map_resolves(const fs::path& dir, const json& auto_map) {
  std::vector<fs::path> files;
  for (const HfCodeFile& f : hf_code_files()) files.push_back(dir / f.name);
  auto classes = python_classes(files);
  for (auto& [key, value] : auto_map.items()) {
    SCOPED_TRACE(key);
    const std::string ref = value.get<std::string>();
    const size_t dot = ref.find('.');
    ASSERT_NE(dot, std::string::npos) << ref;
    const fs::path file = dir / (ref.substr(0, dot) + ".py");
    ASSERT_TRUE(classes.count(file)) << file << " is not one of the written files";
    EXPECT_TRUE(classes[file].count(ref.substr(dot + 1))) << ref << " is not a class of " << file;
  }
}

TEST(HfCode, RaggedSaveWritesParsableCodeNamedByAutoMap) {
  if (!have_python3()) GTEST_SKIP() << "no python3 to parse the written code";
  for (const char* type : {"llama", "mistral", "qwen2", "chatglm"}) {
    SCOPED_TRACE(type);
    Model m = ragged_model(type);
    ASSERT_FALSE(m.cfg.uniform());
    auto dir = test::temp_dir(type);
    save_model_files(m, dir, DType::F32, {});
    for (const HfCodeFile& f : hf_code_files()) {
      ASSERT_TRUE(fs::exists(dir / f.name)) << f.name;
      // The repo's file, byte for byte (the build embedded it, the save wrote it).
      EXPECT_EQ(read_text(dir / f.name), read_text(test::source_dir() / "src/model/hf_code" / f.name));
    }
    json cfg = read_json(dir / "config.json");
    ASSERT_TRUE(cfg.contains("auto_map"));
    const std::string stem = "Llmprune" + m.arch->hf_remote_classes;
    EXPECT_EQ(cfg["auto_map"]["AutoConfig"], "configuration_llmprune." + stem + "Config");
    EXPECT_EQ(cfg["auto_map"]["AutoModelForCausalLM"], "modeling_llmprune." + stem + "ForCausalLM");
    EXPECT_EQ(cfg["model_type"], type);  // unchanged: llmprune, llama.cpp and lm-eval read it
    expect_auto_map_resolves(dir, cfg["auto_map"]);
  }
}

TEST(HfCode, PerLayerSizesInConfigAreTheTensors) {
  Model m = ragged_model("llama");
  auto dir = test::temp_dir("sizes");
  save_model_files(m, dir, DType::F32, {});
  json cfg = read_json(dir / "config.json");
  Model r = Model::load(dir);  // sizes derived from the tensor shapes alone
  const json& layers = cfg.at("llmprune_layers");
  ASSERT_EQ(layers.size(), r.layers.size());
  const int hd = cfg.at("head_dim").get<int>();
  for (size_t l = 0; l < r.layers.size(); l++) {
    SCOPED_TRACE(l);
    EXPECT_EQ(layers[l].at("num_attention_heads").get<int64_t>() * hd, r.layers[l][Role::Q].dim(0));
    EXPECT_EQ(layers[l].at("num_key_value_heads").get<int64_t>() * hd, r.layers[l][Role::K].dim(0));
    EXPECT_EQ(layers[l].at("intermediate_size").get<int64_t>(), r.layers[l][Role::Gate].dim(0));
    EXPECT_EQ(r.cfg.layers[l], m.cfg.layers[l]);
  }
  // The global sizes are the largest layer's, head_dim explicit: transformers' config classes
  // must not derive head_dim from hidden_size / num_attention_heads.
  EXPECT_EQ(cfg["num_attention_heads"], 4);
  EXPECT_EQ(cfg["intermediate_size"], 24);
  EXPECT_EQ(hd, 8);
}

// ChatGLM: THUDM's names, the fused tensors' rows are the per-layer sizes the code builds
// (query_key_value = (heads + 2 groups) x kv_channels, dense_h_to_4h = 2 x ffn_hidden_size).
TEST(HfCode, ChatglmPerLayerSizesInConfigAreTheFusedTensors) {
  Model m = ragged_model("chatglm");
  auto dir = test::temp_dir("glm-sizes");
  save_model_files(m, dir, DType::F32, {});
  json cfg = read_json(dir / "config.json");
  EXPECT_EQ(cfg["auto_map"]["AutoModel"], "modeling_llmprune.LlmpruneChatGLMModel");
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  const json& layers = cfg.at("llmprune_layers");
  const int64_t hd = cfg.at("kv_channels").get<int64_t>();
  ASSERT_EQ(layers.size(), m.layers.size());
  for (size_t l = 0; l < layers.size(); l++) {
    SCOPED_TRACE(l);
    const std::string p = "transformer.encoder.layers." + std::to_string(l) + ".";
    const int64_t heads = layers[l].at("num_attention_heads").get<int64_t>();
    const int64_t groups = layers[l].at("multi_query_group_num").get<int64_t>();
    const int64_t ffn = layers[l].at("ffn_hidden_size").get<int64_t>();
    EXPECT_EQ(f.tensors.at(p + "self_attention.query_key_value.weight").shape[0], (heads + 2 * groups) * hd);
    EXPECT_EQ(f.tensors.at(p + "self_attention.query_key_value.bias").shape[0], (heads + 2 * groups) * hd);
    EXPECT_EQ(f.tensors.at(p + "self_attention.dense.weight").shape[1], heads * hd);
    EXPECT_EQ(f.tensors.at(p + "mlp.dense_h_to_4h.weight").shape[0], 2 * ffn);
    EXPECT_EQ(f.tensors.at(p + "mlp.dense_4h_to_h.weight").shape[1], ffn);
    EXPECT_EQ(heads, m.cfg.layers[l].n_head);
    EXPECT_EQ(groups, m.cfg.layers[l].n_kv_head);
    EXPECT_EQ(ffn, m.cfg.layers[l].d_ff);
  }
  EXPECT_EQ(cfg["num_attention_heads"], 4);  // the largest layer's
  EXPECT_EQ(cfg["multi_query_group_num"], 2);
  EXPECT_EQ(cfg["ffn_hidden_size"], 24);
}

// transformers has no chatglm class and THUDM's modeling_chatglm.py is not copied: a uniform
// ChatGLM save carries llmprune's code too, in place of the checkpoint's own model entries; the
// tokenizer's Python named by tokenizer_config.json is copied from the input.
TEST(HfCode, UniformChatglmCarriesTheCodeInPlaceOfThudms) {
  if (!have_python3()) GTEST_SKIP() << "no python3 to parse the written code";
  Model m = test::make_random_model([] {
    auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
    spec.model_type = "chatglm";
    return spec;
  }());
  ASSERT_TRUE(m.cfg.uniform());
  m.cfg.raw["auto_map"] = {{"AutoConfig", "configuration_chatglm.ChatGLMConfig"},
                           {"AutoModel", "modeling_chatglm.ChatGLMForConditionalGeneration"},
                           {"AutoModelForCausalLM", "modeling_chatglm.ChatGLMForConditionalGeneration"},
                           {"AutoModelForSeq2SeqLM", "modeling_chatglm.ChatGLMForConditionalGeneration"},
                           {"AutoModelForSequenceClassification", "modeling_chatglm.ChatGLMForSequenceClassification"}};
  auto src = test::temp_dir("glm-src");
  {
    std::ofstream(src / "tokenizer_config.json")
        << R"({"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", null]}, "padding_side": "left"})";
    std::ofstream(src / "tokenization_chatglm.py") << "class ChatGLMTokenizer:\n    pass\n";
    std::ofstream(src / "modeling_chatglm.py") << "raise ImportError('THUDM code: not copied')\n";
  }
  auto dir = test::temp_dir("glm-uniform");
  save_model_files(m, dir, DType::F32, src);
  json cfg = read_json(dir / "config.json");
  EXPECT_FALSE(cfg.contains("llmprune_layers"));
  EXPECT_EQ(cfg["auto_map"], (json{{"AutoConfig", "configuration_llmprune.LlmpruneChatGLMConfig"},
                                   {"AutoModel", "modeling_llmprune.LlmpruneChatGLMModel"},
                                   {"AutoModelForCausalLM", "modeling_llmprune.LlmpruneChatGLMForCausalLM"}}));
  expect_auto_map_resolves(dir, cfg["auto_map"]);
  EXPECT_EQ(read_text(dir / "tokenization_chatglm.py"), read_text(src / "tokenization_chatglm.py"));
  EXPECT_FALSE(fs::exists(dir / "modeling_chatglm.py"));
  Model r = Model::load(dir);
  EXPECT_EQ(r.cfg.layers, m.cfg.layers);
}

TEST(HfCode, UniformModelKeepsThePlainConfig) {
  Model m = test::make_random_model(test::RandomModelSpec::uniform(2, 4, 2, 24));
  // As if loaded from a ragged save: llmprune's auto_map entries go, another tool's stays.
  m.cfg.raw["auto_map"] = {{"AutoConfig", "configuration_llmprune.LlmpruneLlamaConfig"},
                           {"AutoModelForCausalLM", "modeling_llmprune.LlmpruneLlamaForCausalLM"},
                           {"AutoTokenizer", "tokenization_other.OtherTokenizer"}};
  auto dir = test::temp_dir("uniform");
  save_model_files(m, dir, DType::F32, {});
  json cfg = read_json(dir / "config.json");
  ASSERT_TRUE(cfg.contains("auto_map"));
  EXPECT_EQ(cfg["auto_map"], (json{{"AutoTokenizer", "tokenization_other.OtherTokenizer"}}));
  EXPECT_FALSE(cfg.contains("llmprune_layers"));
  for (const HfCodeFile& f : hf_code_files()) EXPECT_FALSE(fs::exists(dir / f.name)) << f.name;

  m.cfg.raw.erase("auto_map");
  auto dir2 = test::temp_dir("uniform-plain");
  save_model_files(m, dir2, DType::F32, {});
  EXPECT_FALSE(read_json(dir2 / "config.json").contains("auto_map"));
}

TEST(HfCode, RemovedSubBlocksAreZeroSizedEntries) {
  // Depth pruning's contract with the remote code: a layer without attention lists 0 heads, one
  // without MLP intermediate_size 0 (prune/depth.h writes such layers; depth_test reloads them).
  ModelConfig c = test::make_random_model(test::RandomModelSpec::uniform(3, 4, 2, 24)).cfg;
  c.layers[1].n_head = c.layers[1].n_kv_head = 0;
  c.layers[2].d_ff = 0;
  json j = c.to_json();
  ASSERT_TRUE(j.contains("llmprune_layers"));
  EXPECT_EQ(j["llmprune_layers"][1]["num_attention_heads"], 0);
  EXPECT_EQ(j["llmprune_layers"][1]["num_key_value_heads"], 0);
  EXPECT_EQ(j["llmprune_layers"][2]["intermediate_size"], 0);
  EXPECT_EQ(j["num_attention_heads"], 4);  // the largest layer's, never 0
  EXPECT_TRUE(set_hf_auto_map(j, c, arch_for_model_type("llama", "test")));
  EXPECT_EQ(j["auto_map"]["AutoModelForCausalLM"], "modeling_llmprune.LlmpruneLlamaForCausalLM");
}

TEST(HfCode, FamilyWithoutRemoteCodeGetsNoAutoMap) {
  Model m = ragged_model("llama");
  ArchDesc no_code = *m.arch;
  no_code.hf_remote_classes.clear();
  json j = m.cfg.to_json();
  EXPECT_FALSE(set_hf_auto_map(j, m.cfg, no_code));
  EXPECT_FALSE(j.contains("auto_map"));
  EXPECT_TRUE(j.contains("llmprune_layers"));
}

TEST(HfCode, PruneCommandWritesTheCode) {
  // The CLI's streaming save (prune/surgery save_pruned) goes through the same writer.
  auto out = test::temp_dir("prune") / "out";
  auto r = test::run_cli("prune " + test::fixture_model("kjv-llama-gqa-tied").string() + " --out " + out.string() +
                         " --strategy block --ratio 0.35 --attn-layers 1:5 --mlp-layers 1:5 --importance l2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json cfg = read_json(out / "config.json");
  ASSERT_TRUE(cfg.contains("llmprune_layers"));
  EXPECT_EQ(cfg["auto_map"]["AutoModelForCausalLM"], "modeling_llmprune.LlmpruneLlamaForCausalLM");
  for (const HfCodeFile& f : hf_code_files()) EXPECT_EQ(read_text(out / f.name), std::string(f.text)) << f.name;
  Model::load(out);  // the extra files do not disturb llmprune's own loader
}

}  // namespace
}  // namespace llmprune
