// scripts/experiment_table1.sh end to end on the MHA fixture, kept small enough for CI: two
// criteria, two LoRA steps on a short text, a few items per task. Checks the table's rows and
// numeric columns, the JSON, the rerun (every step reused), and the refusals.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

namespace llmprune {
namespace {
namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first `bytes` of a fixture text, cut at a line end.
fs::path head_of(const fs::path& src, size_t bytes, const fs::path& dst) {
  std::string s = slurp(src).substr(0, bytes);
  s.erase(s.rfind('\n') + 1);
  std::ofstream(dst) << s;
  return dst;
}

std::string q(const fs::path& p) {  // single-quoted for the shell
  std::string s = "'";
  s += p.string();
  s += '\'';
  return s;
}

struct Run {
  int rc;
  std::string log;
};

Run run_script(const fs::path& dir, const std::string& args) {
  fs::path log = dir / "script.log";
  std::string cmd = "cd " + q(test::source_dir()) + " && BIN=" + q(LLMPRUNE_BIN) +
                    " bash scripts/experiment_table1.sh " + args + " > " + q(log) + " 2>&1 < /dev/null";
  int rc = std::system(cmd.c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), slurp(log)};
}

std::vector<std::string> cells(const std::string& line) {  // "| a | b |" -> {a, b}
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string c;
  std::getline(ss, c, '|');
  while (std::getline(ss, c, '|')) {
    auto b = c.find_first_not_of(' '), e = c.find_last_not_of(' ');
    out.push_back(b == std::string::npos ? "" : c.substr(b, e - b + 1));
  }
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

bool numeric(const std::string& s) {
  if (s.empty()) return false;
  size_t n = 0;
  try {
    std::stod(s, &n);
  } catch (...) {
    return false;
  }
  return n == s.size();
}

TEST(ExperimentScript, Table1GridEndToEnd) {
  auto dir = test::temp_dir("grid");
  auto train = head_of(test::fixture_text("kjv.train.txt"), 12000, dir / "train.txt");
  auto val = head_of(test::fixture_text("kjv.valid.txt"), 3000, dir / "val.txt");
  auto ptext = head_of(test::fixture_text("kjv.test.txt"), 6000, dir / "test.txt");
  fs::path out = dir / "out";
  const std::string args = "--model " + q(test::fixture_model("kjv-llama-mha")) + " --calib " +
                           q(test::fixture_text("kjv.valid.txt")) + " --tune-data " + q(train) + " --val-file " + q(val) +
                           " --ppl kjv=" + q(ptext) + " --task-dir " + q(test::shared_dir() / "fixtures/tasks") +
                           " --limit 3 --criteria element1,random --ratio 0.45 --layers 1:5 --steps 2 --lr 1e-3"
                           " --batch 4 --micro-batch 2 --cutoff 32 --warmup 1 --seq-len 64 --out " + q(out);
  auto r = run_script(dir, args);
  ASSERT_EQ(r.rc, 0) << r.log;
  // The exact commands are printed.
  EXPECT_NE(r.log.find("+ " + std::string(LLMPRUNE_BIN) + " prune "), std::string::npos) << r.log;
  EXPECT_NE(r.log.find(" tune "), std::string::npos) << r.log;
  EXPECT_NE(r.log.find(" eval original="), std::string::npos) << r.log;
  EXPECT_NE(slurp(out / "commands.sh").find(" --compare "), std::string::npos);

  // The Markdown table: header, separator, one row per model in the paper's order, numbers.
  std::string md = slurp(out / "table1.md");
  std::vector<std::vector<std::string>> rows;
  std::stringstream ss(md);
  for (std::string line; std::getline(ss, line);)
    if (line.rfind("|", 0) == 0) rows.push_back(cells(line));
  ASSERT_EQ(rows.size(), 2u + 5u) << md;
  const auto& head = rows[0];
  ASSERT_GE(head.size(), 5u) << md;
  EXPECT_EQ(head[0], "model");
  EXPECT_EQ(head[1], "params");
  EXPECT_EQ(head[2].rfind("kjv", 0), 0u) << head[2];
  EXPECT_EQ(head.back(), "Average");
  // auto: every fixture task (boolq, piqa, winogrande, arc_easy, openbookqa, kjv_cloze).
  EXPECT_EQ(head.size(), 3u + 6u + 1u) << md;
  EXPECT_NE(md.find("KJV-cloze"), std::string::npos) << md;
  const std::vector<std::string> labels = {"original", "element1", "random", "element1+LoRA", "random+LoRA"};
  for (size_t i = 0; i < labels.size(); i++) {
    const auto& row = rows[2 + i];
    ASSERT_EQ(row.size(), head.size()) << md;
    EXPECT_EQ(row[0], labels[i]);
    for (size_t k = 2; k < row.size(); k++) EXPECT_TRUE(numeric(row[k])) << "row " << row[0] << " col " << head[k] << ": " << row[k];
  }
  EXPECT_GT(std::stod(rows[3][2]), std::stod(rows[2][2]) * 0.9);  // pruning does not make PPL collapse to 0

  // The JSON of the same run.
  auto j = nlohmann::json::parse(slurp(out / "table1.json"));
  ASSERT_EQ(j["models"].size(), 5u);
  auto m = [&](size_t i) { return j["models"][i]; };
  EXPECT_EQ(m(0)["label"], "original");
  EXPECT_EQ(m(0)["params"], 6843648);
  EXPECT_EQ(m(1)["params"], 5367040);  // element1: the same shapes as docs/results.md's table
  EXPECT_EQ(m(3)["params"], m(1)["params"]);
  EXPECT_EQ(m(4)["params"], m(2)["params"]);
  EXPECT_NE(m(3)["weights"]["xxh64"], m(1)["weights"]["xxh64"]);  // tuning changed the weights
  EXPECT_EQ(m(0)["tasks"]["kjv_cloze"]["n"], 3);
  EXPECT_EQ(m(0)["meta"]["limit"], 3);
  std::string summary = slurp(out / "summary.md");
  EXPECT_NE(summary.find("| element1 | 5,367,040 | 21.6% |"), std::string::npos) << summary;

  // Rerun: every step is reused, the table is untouched.
  auto again = run_script(dir, args);
  ASSERT_EQ(again.rc, 0) << again.log;
  EXPECT_NE(again.log.find("= element1.tune: up to date"), std::string::npos) << again.log;
  EXPECT_NE(again.log.find("= eval: up to date"), std::string::npos) << again.log;
  EXPECT_EQ(again.log.find("\n+ "), std::string::npos) << again.log;  // no command ran
  EXPECT_EQ(slurp(out / "table1.md"), md);

  // Other settings on the same OUT: refused without --force, before anything is overwritten.
  auto other = run_script(dir, args + " --steps 3");
  EXPECT_NE(other.rc, 0);
  EXPECT_NE(other.log.find("--force"), std::string::npos) << other.log;
  EXPECT_EQ(slurp(out / "table1.md"), md);

  // Bad input fails loudly before any step.
  auto bad = run_script(dir, args + " --criteria element1,taylor3");
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.log.find("unknown criterion 'taylor3'"), std::string::npos) << bad.log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmprune
