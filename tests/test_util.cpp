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
