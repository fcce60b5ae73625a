// The layer rule of docs/DESIGN.md, enforced by the build: a folder under src/ includes only
// itself and the folders below it. A new folder must be given a rank here, so that its place in
// the architecture is stated once, and checked.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

namespace fs = std::filesystem;

namespace {

// Rank of each library folder, lowest first (docs/DESIGN.md, "Layers"). A folder may include
// folders of a strictly lower rank and itself.
const std::map<std::string, int>& layer_ranks() {
  static const std::map<std::string, int> ranks = {
      {"core", 0},
      {"kernels", 1},
      {"io", 2},         {"tokenizer", 2},
      {"arch", 3},
      {"model", 4},
      {"graph", 5},
      {"importance", 6}, {"train", 6}, {"eval", 6},
      {"prune", 7},  // prune consumes importance scores
      {"report", 8},  // report reads prune's summary type (pruning.json) and eval results
      {"cli", 9},
  };
  return ranks;
}

TEST(Layering, EverySourceFolderHasARank) {
  const fs::path src = fs::path(LLMPRUNE_SOURCE_DIR) / "src";
  for (const auto& entry : fs::directory_iterator(src)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(layer_ranks().count(name)) << "src/" << name << " has no rank in tests/layering_test.cpp";
  }
}

TEST(Layering, NoFolderIncludesAHigherOrSameRankFolder) {
  const fs::path src = fs::path(LLMPRUNE_SOURCE_DIR) / "src";
  const std::regex include_re(R"re(^\s*#\s*include\s*"([a-z_]+)/[^"]+")re");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(src)) {
    if (!entry.is_regular_file()) continue;
    const std::string ext = entry.path().extension().string();
    if (ext != ".h" && ext != ".cpp") continue;
    const std::string folder = fs::relative(entry.path(), src).begin()->string();
    auto rank = layer_ranks().find(folder);
    if (rank == layer_ranks().end()) continue;  // reported by EverySourceFolderHasARank
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      std::smatch m;
      if (!std::regex_search(line, m, include_re)) continue;
      const std::string target = m[1];
      if (target == folder) continue;
      auto target_rank = layer_ranks().find(target);
      if (target_rank == layer_ranks().end()) continue;  // not a source folder (e.g. a generated header dir)
      EXPECT_LT(target_rank->second, rank->second)
          << fs::relative(entry.path(), src).string() << ":" << line_no << " includes " << target
          << "/ (rank " << target_rank->second << "), but " << folder << "/ has rank " << rank->second
          << ": a layer includes only the layers below it";
    }
  }
  EXPECT_GT(files, 50) << "no sources found under " << src;
}

}  // namespace
