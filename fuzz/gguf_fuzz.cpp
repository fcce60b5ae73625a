// GGUF image -> parse_gguf (header, typed metadata incl. nested arrays, tensor directory,
// alignment, data bounds), then the typed getters and tensor reads on what it accepted; when it
// parses and names an architecture or a tokenizer, also the model import (load_gguf_model) and
// the SentencePiece model rebuilt from tokenizer.ggml.* (load_gguf_tokenizer), through a file.
#include <vector>

#include "fuzz_util.h"
#include "io/gguf.h"
#include "model/gguf_model.h"

using namespace llmprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = gguf::GGUFFile::from_memory(data, size, "fuzz.gguf");
    for (auto& kv : f.metadata()) {
      try {
        switch (kv.value.type()) {
          case gguf::ValueType::String: f.get_string(kv.key); break;
          case gguf::ValueType::F32: case gguf::ValueType::F64: f.get_float(kv.key); break;
          case gguf::ValueType::Bool: f.get_bool(kv.key); break;
          case gguf::ValueType::Array:
            try { f.get_string_array(kv.key); } catch (const UserError&) {}
            try { f.get_f32_array(kv.key); } catch (const UserError&) {}
            f.get_int_array(kv.key);
            break;
          default:
            try { f.get_uint(kv.key); } catch (const UserError&) {}
            f.get_int(kv.key);
        }
      } catch (const UserError&) {  // a getter of the wrong integer kind: expected
      }
    }
    std::vector<float> buf;
    for (auto& t : f.tensors()) {
      auto bytes = f.tensor_bytes(t);
      fuzz::touch(bytes.data(), bytes.size());
      DType dt;
      if (gguf::dtype_of(t.ggml_type, &dt) && t.n_elements <= (1u << 20)) {
        buf.resize(t.n_elements);
        f.read_f32(t, buf.data());
      }
    }
  } catch (const UserError& e) {
    fuzz::rejected(e);
    return 0;
  }
  // Only inputs that parse get here; the file round trip is paid for those alone.
  bool has_arch = false, has_tok = false;
  {
    auto f = gguf::GGUFFile::from_memory(data, size, "fuzz.gguf");
    has_arch = f.find("general.architecture") != nullptr;
    has_tok = f.find("tokenizer.ggml.model") != nullptr;
  }
  if (!has_arch && !has_tok) return 0;
  auto path = fuzz::scratch_dir() / "model.gguf";
  fuzz::write_file(path, data, size);
  if (has_arch) {
    try {
      Model m = load_gguf_model(path);
      count_params(m);
    } catch (const UserError& e) {
      fuzz::rejected(e);
    }
  }
  if (has_tok) {
    try {
      auto tok = load_gguf_tokenizer(path);
      auto ids = tok->encode("In the beginning God created the heaven and the earth. 1234 \xc3\xa9t\xc3\xa9");
      tok->decode(ids);
      for (int i = 0; i < tok->vocab_size() && i < 256; i++) tok->id_to_piece(i);
    } catch (const UserError& e) {
      fuzz::rejected(e);
    }
  }
  return 0;
}
