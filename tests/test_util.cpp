#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace llmprune::test {

static std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {
// ctest runs every test in its own process, so each would otherwise leave its own
// llmprune-test-PID directory behind (a full `make test` left ~1 GB per run in /tmp).
struct TempRootCleanup : ::testing::Environment {
  void TearDown() override {
    if (!::testing::UnitTest::GetInstance()->Passed()) return;  // keep a failure's files
    std::error_code ec;
    std::filesystem::remove_all(temp_root(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const temp_root_cleanup = ::testing::AddGlobalTestEnvironment(new TempRootCleanup);
}  // namespace

CmdResult run_cli(const std::string& args) {
  auto dir = temp_dir("cli");
  std::string cmd = std::string("'") + LLMPRUNE_BIN + "' " + args + " > '" + (dir / "out").string() + "' 2> '" +
                    (dir / "err").string() + "' < /dev/null";
  int rc = std::system(cmd.c_str());
  CmdResult r;
  r.exit_code = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.out = slurp(dir / "out");
  r.err = slurp(dir / "err");
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace llmprune::test
