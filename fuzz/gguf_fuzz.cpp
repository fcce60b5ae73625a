// GGUF image -> parse_gguf (header, typed metadata incl. nested arrays, tensor directory,
// alignment, data bounds), then the typed getters and tensor reads on what it accepted.
#include <vector>

#include "fuzz_util.h"
#include "io/gguf.h"

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
  }
  return 0;
}
