#pragma once
// Shared CLI plumbing: subcommand registration, model loading, output helpers.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <memory>

#include "kernels/gemm_bf16.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include <string>
#include <vector>

namespace llmprune::cli {

// Each subcommand registers itself on the app and sets its callback.
using Register = void (*)(CLI::App& app);
std::vector<Register>& registry();
struct AutoRegister {
  explicit AutoRegister(Register r) { registry().push_back(r); }
};

// Lower-case, trimmed comma list: "a, b" -> {"a","b"}.
std::vector<std::string> split_list(const std::string& s);
std::string format_count(double n);  // 6.81M, 1.23B

// --compute fp32|bf16: the precision of the heavy passes' GEMMs (default fp32).
void add_compute_option(CLI::App* cmd, std::string& value);

}  // namespace llmprune::cli
