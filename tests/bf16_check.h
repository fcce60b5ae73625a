#pragma once
// A check shared by compute_bf16_test.cpp and chatglm_test.cpp: a bf16 model under
// `--compute bf16` against its fp32 copy (see compute_bf16_test.cpp for what it asserts).
#include "model/model.h"

namespace llmprune::test {

// h: a model stored in bf16 (any family, any biases).
void expect_bf16_compute_consistent(const Model& h);

}  // namespace llmprune::test
