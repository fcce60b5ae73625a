#include "model/hf_code.h"

#include <string>

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
  for (auto it = map.begin(); it != map.end();) it = is_llmprune_entry(it.value()) ? map.erase(it) : std::next(it);
  const bool write_code = !c.uniform() && !a.hf_remote_classes.empty();
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

}  // namespace llmprune
