// PyTorch .bin image -> parse_pytorch_bin (zip directory or legacy pickle sequence, the pickle
// interpreter, storage sizes, strides and offsets), reading every byte of every tensor it
// returns; an input that starts like a pickle also goes to parse_torch_pickle as a zip
// checkpoint's data.pkl. Seeds: fuzz/corpus/pytorch_bin (tools/torch_bin_fixtures.py).
#include <cstdint>

#include "fuzz_util.h"
#include "io/pytorch_bin.h"
#include "io/torch_pickle.h"

using namespace llmprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    for (auto& [name, t] : parse_pytorch_bin(data, size, "fuzz.bin")) fuzz::touch(t.data, t.nbytes());
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  if (size > 0 && data[0] == 0x80) {  // PROTO: a bare pickle
    try {
      parse_torch_pickle(data, size, "fuzz/data.pkl");
    } catch (const UserError& e) {
      fuzz::rejected(e);
    }
  }
  return 0;
}
