#include "model/hf_code.h"

#include <fstream>
#include <string>

#include "core/error.h"
#include "core/fs.h"
#include "model/hf_code_text.h"

namespace llmprune {
namespace {

constexpr const char* kConfigModule = "configuration_llmprune";
constexpr const char* kModelingModule = "modeling_llmprune";

bool is_llmprune_entry(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  return s.starts_with(std::string(kConfigModule) + ".") || s.starts_with(std::string(kModelingModule) + ".");
}

}  // namespace

const std::vector<HfCodeFile>& hf_code_files() {
  static const std::vector<HfCodeFile> files = {
      {"configuration_llmprune.py", hf_code_text::kConfigurationPy},
      {"modeling_llmprune.py", hf_code_text::kModelingPy},
  };
  return files;
}

bool set_hf_auto_map(nlohmann::json& j, const ModelConfig& c, const ArchDesc& a) {
  nlohmann::json map = j.contains("auto_map") && j["auto_map"].is_object() ? j["auto_map"] : nlohmann::json::object();
  const bool write_code = !a.hf_remote_classes.empty() && (!c.uniform() || a.hf_remote_always);
  // The input's own model classes (THUDM's configuration_chatglm / modeling_chatglm) are replaced
  // by llmprune's when it writes its code: their files are not copied. Other entries
  // (AutoTokenizer) stay.
  auto replaced = [&](const std::string& key, const nlohmann::json& v) {
    return is_llmprune_entry(v) || (write_code && (key.starts_with("AutoConfig") || key.starts_with("AutoModel")));
  };
  for (auto it = map.begin(); it != map.end();) it = replaced(it.key(), it.value()) ? map.erase(it) : std::next(it);
  if (write_code) {
    const std::string stem = "Llmprune" + a.hf_remote_classes;
    map["AutoConfig"] = std::string(kConfigModule) + "." + stem + "Config";
    map["AutoModel"] = std::string(kModelingModule) + "." + stem + "Model";
    map["AutoModelForCausalLM"] = std::string(kModelingModule) + "." + stem + "ForCausalLM";
  }
  if (map.empty())
    j.erase("auto_map");
  else
    j["auto_map"] = map;
  return write_code;
}

void write_hf_code_files(const std::filesystem::path& dir) {
  for (const HfCodeFile& f : hf_code_files()) atomic_write_file(dir / f.name, std::string(f.text));
}

void copy_tokenizer_code(const std::filesystem::path& source_dir, const std::filesystem::path& dir) {
  std::ifstream in(dir / "tokenizer_config.json");
  if (!in) return;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("auto_map") || !j["auto_map"].is_object()) return;
  std::vector<std::string> refs;
  for (const auto& v : j["auto_map"]) {  // "module.Class" or [slow, fast] with null for none
    if (v.is_string()) refs.push_back(v.get<std::string>());
    if (v.is_array())
      for (const auto& e : v)
        if (e.is_string()) refs.push_back(e.get<std::string>());
  }
  for (const std::string& ref : refs) {
    const std::string module = ref.substr(0, ref.find('.'));
    // A plain module name beside the config (a repo-qualified "org/repo--module.Class" is fetched by transformers itself).
    if (module.empty() || module.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != std::string::npos)
      continue;
    const std::filesystem::path from = source_dir / (module + ".py");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(from, ec)) continue;
    std::filesystem::copy_file(from, dir / from.filename(), std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) throw RuntimeError((dir / from.filename()).string() + ": cannot copy from " + from.string() + ": " + ec.message());
  }
}

}  // namespace llmprune
