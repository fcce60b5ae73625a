// Interrupted and failing writes (docs/robustness.md): `prune`, `tune` and `export` are killed
// with SIGKILL at random points, and run with writes that fail (RLIMIT_FSIZE -> EFBIG, as on a
// full disk). Afterwards the output either does not exist or is complete (same bytes as an
// uninterrupted run), every leftover temporary is refused by the loaders, and running the same
// command again succeeds and cleans the leftovers up.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "model/model.h"
#include "test_util.h"
#include "train/trainer.h"

extern char** environ;

namespace llmprune {
namespace {

// A temp dir killed before its marker was written: empty (killed between mkdir and the marker's
// open) or holding only the marker file, still empty (killed between its open and its write —
// fs.cpp's is_incomplete_output treats an empty marker as cut short; nothing else is there yet,
// so no loader accepts the directory either).
bool killed_before_marker(const std::filesystem::path& p) {
  if (!std::filesystem::is_directory(p)) return false;
  for (const auto& e : std::filesystem::directory_iterator(p))
    if (e.path().filename() != kIncompleteMarker || std::filesystem::file_size(e.path()) != 0) return false;
  return true;
}

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Exit {
  bool signaled = false;
  int code = -1;  // exit status, or the signal number when signaled
  double seconds = 0;
};

// llmprune started with fork + execve (no shell: the pid is llmprune's own, so SIGKILL reaches
// it). stdout and stderr go to files; OpenMP/BLAS use one thread. With fsize_limit > 0 the child
// gets RLIMIT_FSIZE = fsize_limit and ignores SIGXFSZ (an ignored disposition survives exec), so
// a write past the limit fails with EFBIG the way a write to a full disk fails with ENOSPC.
class Cli {
 public:
  Cli(const std::vector<std::string>& args, const fs::path& out, const fs::path& err, rlim_t fsize_limit = 0) {
    // Everything the child needs is built before fork: after it only async-signal-safe calls.
    std::vector<std::string> argv_s = {LLMPRUNE_BIN};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<std::string> env_s;
    for (char** e = environ; *e; e++) {
      std::string kv = *e;
      if (kv.rfind("OMP_NUM_THREADS=", 0) != 0 && kv.rfind("OPENBLAS_NUM_THREADS=", 0) != 0) env_s.push_back(kv);
    }
    env_s.push_back("OMP_NUM_THREADS=1");
    env_s.push_back("OPENBLAS_NUM_THREADS=1");
    std::vector<char*> argv, envp;
    for (auto& s : argv_s) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string out_s = out.string(), err_s = err.string();
    start_ = Clock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      int in = ::open("/dev/null", O_RDONLY);
      int o = ::open(out_s.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = ::open(err_s.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in < 0 || o < 0 || e < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(o, 1);
      ::dup2(e, 2);
      if (fsize_limit > 0) {
        struct rlimit rl = {fsize_limit, fsize_limit};
        if (::setrlimit(RLIMIT_FSIZE, &rl) != 0) ::_exit(126);
        ::signal(SIGXFSZ, SIG_IGN);
      }
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
  }
  ~Cli() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;
  bool started() const { return pid_ > 0; }
  void kill() { ::kill(pid_, SIGKILL); }
  Exit wait() {
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    return reaped(st);
  }
  // Waits at most `seconds`; the exit, timed to within 2 ms, when the process ended by then.
  std::optional<Exit> wait_for(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) return reaped(st);
      if (Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  Exit reaped(int st) {
    reaped_ = true;
    Exit r;
    r.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    r.signaled = WIFSIGNALED(st);
    r.code = r.signaled ? WTERMSIG(st) : WEXITSTATUS(st);
    return r;
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  Clock::time_point start_;
};

// What an uninterrupted command produces, and what must hold after an interrupted one.
struct Command {
  std::string name;
  std::vector<std::string> args;  // without --force / --resume
  fs::path out;                   // the model output: a directory, or a .gguf file
  fs::path adapter;               // tune --save-adapter (a second output), or empty
  fs::path ckpt;                  // tune --checkpoint-dir, or empty
};

bool is_gguf(const Command& c) { return c.out.extension() == ".gguf"; }

// The bytes that identify an output: model.safetensors of a directory, or the GGUF file.
std::string output_bytes(const Command& c) { return slurp(is_gguf(c) ? c.out : c.out / "model.safetensors"); }

// Siblings `<name>.tmp-<pid>` / `<name>.old-<pid>` of an output path.
std::vector<fs::path> temp_siblings(const fs::path& out) {
  std::vector<fs::path> r;
  if (out.empty() || !fs::exists(out.parent_path())) return r;
  const std::string base = out.filename().string();
  for (auto& e : fs::directory_iterator(out.parent_path())) {
    std::string n = e.path().filename().string();
    if (n.rfind(base + ".tmp-", 0) == 0 || n.rfind(base + ".old-", 0) == 0) r.push_back(e.path());
  }
  return r;
}

std::vector<fs::path> checkpoint_temps(const fs::path& ckpt) {
  std::vector<fs::path> r;
  if (ckpt.empty() || !fs::exists(ckpt)) return r;
  for (auto& e : fs::directory_iterator(ckpt))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) r.push_back(e.path());
  return r;
}

bool has_checkpoint(const Command& c) { return !c.ckpt.empty() && !Trainer::latest_checkpoint(c.ckpt).empty(); }

// The message Model::load gives, or "" when it loads.
std::string load_error(const fs::path& p) {
  try {
    Model::load(p);
  } catch (const UserError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << p << ": not a UserError: " << e.what();
    return e.what();
  }
  return "";
}

const std::string kRefused = "incomplete output of an interrupted llmprune run (delete it)";

Exit run_to_end(const Command& c, const std::vector<std::string>& extra, const fs::path& dir, rlim_t fsize_limit = 0) {
  auto args = c.args;
  args.insert(args.end(), extra.begin(), extra.end());
  Cli p(args, dir / (c.name + ".stdout"), dir / (c.name + ".stderr"), fsize_limit);
  EXPECT_TRUE(p.started());
  return p.wait();
}

struct Tally {
  int kills = 0, finished_first = 0, absent = 0, kept_previous = 0, new_complete = 0, temps_left = 0, temps_marked = 0, resumed = 0;
  std::vector<double> delays;
};

// The extra flags for a run over whatever the previous one left: --force when an output exists
// (for tune also to start over the checkpoints of an earlier run), --resume to go on from one.
std::vector<std::string> rerun_flags(const Command& c, bool resume) {
  std::vector<std::string> f;
  const bool resuming = resume && has_checkpoint(c);
  if (fs::exists(c.out) || (!c.adapter.empty() && fs::exists(c.adapter)) || (!resuming && has_checkpoint(c))) f.push_back("--force");
  if (resuming) f.push_back("--resume");
  return f;
}

// After a kill: the output is absent or complete; leftovers are refused; a rerun succeeds.
void check_after_kill(const Command& c, const std::string& ref, const std::string& ref_adapter, ino_t before_ino,
                      const fs::path& dir, Tally& t) {
  SCOPED_TRACE(c.name);
  if (!fs::exists(c.out)) {
    t.absent++;
  } else {
    EXPECT_EQ(load_error(c.out), "") << "the output exists but does not load";
    EXPECT_TRUE(output_bytes(c) == ref) << c.out << " differs from the uninterrupted run's output";
    struct stat st {};
    ::stat(c.out.c_str(), &st);
    if (before_ino != 0 && st.st_ino == before_ino) t.kept_previous++;
    else t.new_complete++;
  }
  if (!c.adapter.empty() && fs::exists(c.adapter)) {
    EXPECT_TRUE(slurp(c.adapter / "adapter_model.safetensors") == ref_adapter) << "the adapter differs from the reference";
  }
  // Leftover temporaries: models are refused by Model::load, adapters and checkpoints carry the
  // marker (or are still empty: killed between mkdir and the marker).
  for (auto& p : temp_siblings(c.out)) {
    t.temps_left++;
    std::string e = load_error(p);
    EXPECT_NE(e, "") << p << " loads";
    if (e.find(kRefused) != std::string::npos) t.temps_marked++;
    else EXPECT_TRUE(killed_before_marker(p)) << p << ": refused, but not by the marker: " << e;
  }
  std::vector<fs::path> others = temp_siblings(c.adapter), ck = checkpoint_temps(c.ckpt);
  others.insert(others.end(), ck.begin(), ck.end());
  for (auto& p : others) {
    t.temps_left++;
    if (is_incomplete_output(p)) t.temps_marked++;
    else EXPECT_TRUE(killed_before_marker(p)) << p << " is an unmarked leftover";
  }
  // The same command again (with --force / --resume as needed) succeeds, gives the reference
  // output and removes the dead run's leftovers.
  auto flags = rerun_flags(c, true);
  if (std::find(flags.begin(), flags.end(), "--resume") != flags.end()) t.resumed++;
  Exit r = run_to_end(c, flags, dir);
  ASSERT_FALSE(r.signaled);
  ASSERT_EQ(r.code, 0) << slurp(dir / (c.name + ".stderr"));
  EXPECT_EQ(load_error(c.out), "");
  EXPECT_TRUE(output_bytes(c) == ref) << c.out << ": the rerun's output differs from the reference";
  EXPECT_TRUE(temp_siblings(c.out).empty()) << "leftovers not cleaned up";
  EXPECT_TRUE(temp_siblings(c.adapter).empty());
  EXPECT_TRUE(checkpoint_temps(c.ckpt).empty());
}

// Measures an uninterrupted run, then kills `kills` runs at random times in [0, that duration):
// even-numbered ones start from nothing, odd-numbered ones replace the previous output (--force).
// Every second delay is drawn from the second half only, where the outputs are written.
void kill_at_random(const Command& c, int kills, uint32_t seed) {
  auto dir = c.out.parent_path();
  Exit ref_run = run_to_end(c, {}, dir);
  ASSERT_EQ(ref_run.code, 0) << slurp(dir / (c.name + ".stderr"));
  const std::string ref = output_bytes(c);
  const std::string ref_adapter = c.adapter.empty() ? "" : slurp(c.adapter / "adapter_model.safetensors");
  ASSERT_FALSE(ref.empty());
  ::testing::Test::RecordProperty(c.name + "_uninterrupted_s", std::to_string(ref_run.seconds));

  std::mt19937 rng(seed);
  // Delays are drawn from [0, span): the shortest run seen so far. The uninterrupted run alone
  // is not enough: it can take several times as long as the runs after it (cold page cache, a
  // loaded machine), and then most kills came after the run had finished (seen under ctest -j3:
  // 14 of 16 export runs done before their kill).
  double span = ref_run.seconds;
  Tally t;
  for (int attempt = 0; t.kills < kills && attempt < 4 * kills; attempt++) {
    if (t.kills % 2 == 0) {
      std::error_code ec;
      for (const fs::path& p : {c.out, c.adapter, c.ckpt})
        if (!p.empty()) fs::remove_all(p, ec);
    }
    struct stat st {};
    ino_t before = ::stat(c.out.c_str(), &st) == 0 ? st.st_ino : 0;
    auto args = c.args;
    for (auto& f : rerun_flags(c, false)) args.push_back(f);
    const double d = std::uniform_real_distribution<double>(t.kills % 4 >= 2 ? 0.5 * span : 0.0, span)(rng);
    Cli p(args, dir / (c.name + ".stdout"), dir / (c.name + ".stderr"));
    ASSERT_TRUE(p.started());
    std::optional<Exit> done = p.wait_for(d);
    if (!done) p.kill();
    Exit e = done ? *done : p.wait();
    if (!e.signaled) {
      // It finished before the kill: not counted; the next draw tries again.
      ASSERT_EQ(e.code, 0) << slurp(dir / (c.name + ".stderr"));
      t.finished_first++;
      span = std::min(span, e.seconds);
      continue;
    }
    t.kills++;
    t.delays.push_back(d);
    check_after_kill(c, ref, ref_adapter, before, dir, t);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_EQ(t.kills, kills) << "too many runs finished before their kill";
  std::ostringstream delays;
  for (double d : t.delays) delays << (delays.tellp() ? "," : "") << std::fixed << std::setprecision(3) << d;
  std::printf("[ interrupt ] %s: uninterrupted %.2fs; %d kills at [%s] s: %d no output, %d previous output kept, %d new output "
              "complete; %d temporaries left (%d marked, rest empty); %d reruns resumed; %d runs finished before the kill\n",
              c.name.c_str(), ref_run.seconds, t.kills, delays.str().c_str(), t.absent, t.kept_previous, t.new_complete,
              t.temps_left, t.temps_marked, t.resumed, t.finished_first);
  ::testing::Test::RecordProperty(c.name + "_kills", t.kills);
  ::testing::Test::RecordProperty(c.name + "_no_output", t.absent);
  ::testing::Test::RecordProperty(c.name + "_previous_kept", t.kept_previous);
  ::testing::Test::RecordProperty(c.name + "_new_complete", t.new_complete);
  ::testing::Test::RecordProperty(c.name + "_temporaries_left", t.temps_left);
  ::testing::Test::RecordProperty(c.name + "_reruns_resumed", t.resumed);
}

std::string mha() { return test::fixture_model("kjv-llama-mha").string(); }

TEST(Interrupt, PruneKilledAtRandomPoints) {
  auto dir = test::temp_dir("prune");
  Command c{"prune",
            {"prune", mha(), "--out", (dir / "pruned").string(), "--ratio", "0.25", "--calib",
             test::fixture_text("kjv.valid.txt").string(), "--calib-samples", "8", "--seed", "1"},
            dir / "pruned", {}, {}};
  kill_at_random(c, 8, 1234);
}

// A short LoRA run on the first ~6000 bytes of the KJV training text (written into dir once),
// saving a checkpoint every step; `adapter` empty for no --save-adapter.
Command tune_command(const std::string& name, const fs::path& dir, const fs::path& out, const fs::path& ckpt,
                     const fs::path& adapter, int max_steps) {
  if (!fs::exists(dir / "train.txt")) {
    std::string text = slurp(test::fixture_text("kjv.train.txt")).substr(0, 6000);
    std::ofstream(dir / "train.txt", std::ios::binary) << text.substr(0, text.rfind('\n') + 1);
  }
  Command c{name,
            {"tune", mha(), "--data", (dir / "train.txt").string(), "--out", out.string(), "--checkpoint-dir", ckpt.string(),
             "--max-steps", std::to_string(max_steps), "--batch", "2", "--micro-batch", "2", "--cutoff-len", "32",
             "--save-every", "1", "--lora-r", "4", "--seed", "3", "--quiet"},
            out, adapter, ckpt};
  if (!adapter.empty()) c.args.insert(c.args.end(), {"--save-adapter", adapter.string()});
  return c;
}

TEST(Interrupt, TuneKilledAtRandomPointsResumes) {
  auto dir = test::temp_dir("tune");
  kill_at_random(tune_command("tune", dir, dir / "tuned", dir / "ckpt", dir / "adapter", 4), 6, 99);
}

TEST(Interrupt, ExportHfKilledAtRandomPoints) {
  auto dir = test::temp_dir("hf");
  Command c{"export_hf", {"export", mha(), "--hf", (dir / "hf").string(), "--dtype", "f16"}, dir / "hf", {}, {}};
  kill_at_random(c, 4, 7);
}

TEST(Interrupt, ExportGgufKilledAtRandomPoints) {
  auto dir = test::temp_dir("gguf");
  Command c{"export_gguf", {"export", mha(), "--gguf", (dir / "m.gguf").string()}, dir / "m.gguf", {}, {}};
  kill_at_random(c, 4, 8);
}

// A temp dir is refused however its path is spelled, and only under its temporary name.
TEST(Interrupt, MarkerRefusesTheTempNameOnly) {
  auto dir = test::temp_dir("marker");
  auto out = dir / "m";
  {
    AtomicDir a(out, false);
    ASSERT_TRUE(fs::exists(a.path() / kIncompleteMarker));
    for (auto f : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model"})
      fs::copy_file(fs::path(mha()) / f, a.path() / f);
    for (const fs::path& p : {a.path(), fs::path(a.path().string() + "/"), a.path() / "."}) {
      std::string e = load_error(p);
      EXPECT_NE(e.find(kRefused), std::string::npos) << p << ": " << e;
      EXPECT_EQ(e.rfind(p.string() + ": ", 0), 0u) << e;  // names the directory
    }
    EXPECT_NO_THROW(Model::load_unfinished(a.path()));
    a.commit();
  }
  EXPECT_EQ(load_error(out), "");
  EXPECT_FALSE(fs::exists(out / kIncompleteMarker));
  // Replacing: the old output is swapped out and deleted, the path never missing in between.
  {
    AtomicDir b(out, true);
    fs::copy_file(fs::path(mha()) / "config.json", b.path() / "config.json");
    std::ofstream(b.path() / "new") << "x";
    b.commit();
  }
  EXPECT_TRUE(fs::exists(out / "new"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(temp_siblings(out).empty());
  // A temp dir of a dead process is removed by the next AtomicDir for the same output; one of a
  // live process (this one's parent) is left alone.
  fs::create_directories(dir / "m.tmp-999999999");  // above pid_max: no such process
  const fs::path live = dir / ("m.tmp-" + std::to_string(::getppid()));
  fs::create_directories(live);
  fs::create_directories(dir / "m.old-999999998");
  { AtomicDir c(out, true); }
  EXPECT_FALSE(fs::exists(dir / "m.tmp-999999999"));
  EXPECT_FALSE(fs::exists(dir / "m.old-999999998"));
  EXPECT_TRUE(fs::exists(live));
  // A GGUF temp file is refused by name.
  std::ofstream(dir / "x.gguf.tmp-123") << "GGUF";
  EXPECT_NE(load_error(dir / "x.gguf.tmp-123").find(kRefused), std::string::npos);
}

// ---- writes that fail --------------------------------------------------------------------------

// Exit 1, exactly one stderr line "llmprune: error: ..." naming `file`, nothing left behind, and
// an existing output (when `previous` holds its files' bytes) untouched.
void expect_write_failure(const Command& c, const fs::path& dir, const std::string& file,
                          const std::map<std::string, std::string>& previous) {
  SCOPED_TRACE(c.name);
  const std::string err = slurp(dir / (c.name + ".stderr"));
  ::testing::Test::RecordProperty(c.name + "_stderr", err.substr(0, err.find('\n')));
  ASSERT_FALSE(err.empty());
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "want exactly one line, got: " << err;
  EXPECT_EQ(err.back(), '\n');
  EXPECT_EQ(err.rfind("llmprune: error: ", 0), 0u) << err;
  EXPECT_NE(err.find(file), std::string::npos) << "the line does not name " << file << ": " << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  // The user's output path, not the temporary directory that no longer exists.
  EXPECT_EQ(err.find(".tmp-"), std::string::npos) << err;
  if (!is_gguf(c)) EXPECT_NE(err.find("(" + c.out.string() + " left as it was)"), std::string::npos) << err;
  EXPECT_TRUE(temp_siblings(c.out).empty()) << "temporaries left behind";
  if (previous.empty()) {
    EXPECT_FALSE(fs::exists(c.out)) << "an output was left behind";
    return;
  }
  for (auto& [name, bytes] : previous) EXPECT_TRUE(slurp(name) == bytes) << name << " changed";
  EXPECT_EQ(load_error(c.out), "");
}

std::map<std::string, std::string> snapshot(const fs::path& out) {
  std::map<std::string, std::string> m;
  if (fs::is_directory(out)) {
    for (auto& e : fs::directory_iterator(out)) m[e.path().string()] = slurp(e.path());
  } else {
    m[out.string()] = slurp(out);
  }
  return m;
}

TEST(Interrupt, DiskFullLeavesNothingAndKeepsThePreviousOutput) {
  auto dir = test::temp_dir("efbig");
  const rlim_t limit = 1 << 20;  // 1 MiB: every model file is larger
  std::vector<std::pair<Command, std::string>> cases = {
      {{"prune",
        {"prune", mha(), "--out", (dir / "pruned").string(), "--ratio", "0.25", "--importance", "l1"},
        dir / "pruned", {}, {}},
       (dir / "pruned" / "model.safetensors").string()},
      {{"export_hf", {"export", mha(), "--hf", (dir / "hf").string()}, dir / "hf", {}, {}},
       (dir / "hf" / "model.safetensors").string()},
      {{"export_gguf", {"export", mha(), "--gguf", (dir / "m.gguf").string()}, dir / "m.gguf", {}, {}},
       (dir / "m.gguf").string()},
  };
  for (auto& [c, file] : cases) {
    // Nothing there before: nothing there after.
    Exit e = run_to_end(c, {}, dir, limit);
    EXPECT_FALSE(e.signaled);
    EXPECT_EQ(e.code, 1) << slurp(dir / (c.name + ".stderr"));
    expect_write_failure(c, dir, file, {});
    // Over a good output with --force: the good output stays as it was.
    ASSERT_EQ(run_to_end(c, {}, dir).code, 0) << slurp(dir / (c.name + ".stderr"));
    auto before = snapshot(c.out);
    e = run_to_end(c, {"--force"}, dir, limit);
    EXPECT_EQ(e.code, 1) << slurp(dir / (c.name + ".stderr"));
    expect_write_failure(c, dir, file, before);
  }
}

// Tune over a full disk: its checkpoints (LoRA state, well under the limit) are written, the
// merged model is not. The run fails with one line naming the output, leaves no output and no
// temporaries, keeps the last good checkpoint, and --resume finishes from it once there is room.
TEST(Interrupt, TuneDiskFullKeepsTheLastCheckpointAndResumes) {
  auto dir = test::temp_dir("efbig_tune");
  Command c = tune_command("tune", dir, dir / "tuned", dir / "ckpt", {}, 3);
  Exit e = run_to_end(c, {}, dir, 1 << 20);
  EXPECT_FALSE(e.signaled);
  EXPECT_EQ(e.code, 1) << slurp(dir / "tune.stderr");
  expect_write_failure(c, dir, (dir / "tuned" / "model.safetensors").string(), {});
  ASSERT_TRUE(has_checkpoint(c)) << "the last good checkpoint is gone";
  EXPECT_TRUE(checkpoint_temps(c.ckpt).empty());
  e = run_to_end(c, {"--resume"}, dir);
  ASSERT_EQ(e.code, 0) << slurp(dir / "tune.stderr");
  EXPECT_EQ(load_error(c.out), "");
  // The same bytes as a run that never hit the limit.
  Command ref = tune_command("tune_ref", dir, dir / "ref", dir / "ref_ckpt", {}, 3);
  ASSERT_EQ(run_to_end(ref, {}, dir).code, 0) << slurp(dir / "tune_ref.stderr");
  EXPECT_TRUE(output_bytes(c) == output_bytes(ref)) << "resumed output differs from an uninterrupted run";
}

}  // namespace
}  // namespace llmprune
