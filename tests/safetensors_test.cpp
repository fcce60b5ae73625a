// safetensors: write -> read round-trips for every dtype, sharded checkpoints load like single
// files, bf16/f16 conversions, and a bf16 model runs like its fp32 original (within bf16 error).
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/forward.h"
#include "test_util.h"

namespace llmprune {
namespace {

TEST(Safetensors, RoundTripEveryDtype) {
  auto dir = test::temp_dir("st");
  SafetensorsWriter w;
  std::vector<Tensor> originals;
  int k = 0;
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    Tensor t = Tensor::zeros(dt, {3, 5});
    auto vals = test::random_vec(15, uint32_t(10 + k));
    from_f32(dt, vals.data(), t.data, 15);
    originals.push_back(t);
    w.add_tensor("t" + std::to_string(k++), t);
  }
  w.add_tensor("empty", Tensor::zeros(DType::F32, {0, 4}));
  w.set_metadata("format", "pt");
  w.write(dir / "a.safetensors");
  auto f = SafetensorsFile::open(dir / "a.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), 4u);
  for (int i = 0; i < 3; i++) {
    const Tensor& t = f.tensors.at("t" + std::to_string(i));
    EXPECT_EQ(t.dtype, originals[size_t(i)].dtype);
    EXPECT_EQ(t.shape, originals[size_t(i)].shape);
    EXPECT_EQ(std::memcmp(t.data, originals[size_t(i)].data, t.nbytes()), 0);
  }
  EXPECT_EQ(f.tensors.at("empty").numel(), 0);
  // Writing what was read gives the same bytes.
  SafetensorsWriter w2;
  for (int i = 0; i < 3; i++) w2.add_tensor("t" + std::to_string(i), f.tensors.at("t" + std::to_string(i)));
  w2.add_tensor("empty", f.tensors.at("empty"));
  w2.set_metadata("format", "pt");
  w2.write(dir / "b.safetensors");
  std::ifstream a(dir / "a.safetensors", std::ios::binary), b(dir / "b.safetensors", std::ios::binary);
  std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_EQ(sa, sb);
}

TEST(Safetensors, HalfPrecisionConversions) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 1e-5f, 3.14159f, -0.000123f}) {
    EXPECT_NEAR(f16_to_f32(f32_to_f16(v)), v, std::abs(v) * 1e-3 + 1e-7) << v;
    EXPECT_NEAR(bf16_to_f32(f32_to_bf16(v)), v, std::abs(v) * 8e-3 + 1e-38) << v;
  }
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // ties round to even
}

TEST(Safetensors, ShardedCheckpointLoadsLikeSingleFile) {
  auto src = test::fixture_model("kjv-llama-gqa-tied");
  auto dir = test::temp_dir("sharded");
  for (const char* f : {"config.json", "tokenizer.model", "generation_config.json"})
    std::filesystem::copy_file(src / f, dir / f);
  auto tensors = load_checkpoint_tensors(src);
  SafetensorsWriter w1, w2;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (auto& [name, t] : tensors) {
    bool first = (i++ % 2) == 0;
    (first ? w1 : w2).add_tensor(name, t);
    index["weight_map"][name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  w1.write(dir / "model-00001-of-00002.safetensors");
  w2.write(dir / "model-00002-of-00002.safetensors");
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);
  Model a = Model::load(src), b = Model::load(dir);
  EXPECT_EQ(b.files.size(), 2u);
  std::vector<int32_t> ids = {1, 100, 200, 300, 400, 500, 600, 700};
  Runner ra(a), rb(b);
  std::vector<float> la(ids.size() * 4096), lb(ids.size() * 4096);
  ra.forward(ids.data(), 1, int(ids.size()), la.data());
  rb.forward(ids.data(), 1, int(ids.size()), lb.data());
  EXPECT_EQ(la, lb);
}

TEST(Safetensors, Bf16ModelMatchesFp32WithinBf16Error) {
  // The bundled demo model is the GQA fixture stored in bf16: compute in fp32 either way.
  Model f32 = Model::load(test::fixture_model("kjv-llama-gqa-tied"));
  Model bf16 = Model::load(test::source_dir() / "models/kjv-demo");
  EXPECT_EQ(bf16.storage_dtype(), DType::BF16);
  std::vector<int32_t> ids = {1, 450, 1200, 37, 999, 2048, 7, 3000};
  Runner ra(f32), rb(bf16);
  std::vector<float> la(ids.size() * 4096), lb(ids.size() * 4096);
  ra.forward(ids.data(), 1, int(ids.size()), la.data());
  rb.forward(ids.data(), 1, int(ids.size()), lb.data());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < la.size(); i++) {
    max_diff = std::max(max_diff, double(std::abs(la[i] - lb[i])));
    max_abs = std::max(max_abs, double(std::abs(la[i])));
  }
  EXPECT_GT(max_diff, 0.0);            // really a different (bf16) model
  EXPECT_LT(max_diff, 0.05 * max_abs);  // but close: bf16 keeps ~3 significant digits
}

}  // namespace
}  // namespace llmprune
