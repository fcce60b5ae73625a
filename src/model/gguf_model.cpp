// GGUF model import. Until the GGUF exporter/importer lands (issue 7), a .gguf input is refused.
#include "core/error.h"
#include "model/model.h"

namespace llmprune {

Model load_gguf_model(const std::filesystem::path& file) {
  throw input_error(file.string(), "loading models from GGUF is not supported yet");
}

}  // namespace llmprune
