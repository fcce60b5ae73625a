#pragma once
// Atomic outputs: everything is written under a temporary sibling path and renamed into place,
// so an interrupted run never leaves a half-written file or directory that a later load accepts.
// docs/robustness.md ("Interrupted and failing writes") states what is guaranteed.
#include <filesystem>
#include <string>

namespace llmprune {

// Writes `content` to `path` atomically (temp file `<path>.tmp-<pid>` in the same directory +
// fsync + rename). Temp files of killed runs next to `path` are removed first.
void atomic_write_file(const std::filesystem::path& path, const std::string& content);

// The file an AtomicDir keeps in a directory while it is not (yet, or any more) a complete
// output. Its first line is the directory's own temporary name: the directory is incomplete while
// it sits under that name, so the file may survive the final rename harmlessly (see commit()).
inline constexpr const char* kIncompleteMarker = ".llmprune-incomplete";

// True when `dir` holds an incomplete-output marker naming `dir` itself: a directory an llmprune
// run was building (or was deleting after replacing it) when it was interrupted.
bool is_incomplete_output(const std::filesystem::path& dir);
// UserError "<dir>: incomplete output of an interrupted llmprune run (delete it)" when
// is_incomplete_output(dir). Every loader of an output directory calls it.
void refuse_incomplete_output(const std::filesystem::path& dir);

// True when the file name ends in ".tmp-<digits>" (a temp file of atomic_write_file or the GGUF
// writer, or an AtomicDir's temp dir).
bool is_temp_output_name(const std::filesystem::path& p);

// Removes `<final>.tmp-<pid>` and `<final>.old-<pid>` siblings (files or directories) left by
// processes that no longer exist (kill(pid, 0) fails with ESRCH). Errors are ignored.
void remove_stale_temps(const std::filesystem::path& final_path);

// A directory built under `<final>.tmp-<pid>` and moved to `final` by commit().
// Destroying it without commit() removes the temporary directory.
//   - The temp dir holds kIncompleteMarker from its creation on, so no loader accepts it.
//   - commit() flushes every file, then moves the directory into place with one rename; an
//     existing `final` (overwrite) is swapped out with renameat2(RENAME_EXCHANGE), so `final`
//     never goes missing, and the old contents (marked incomplete first) are deleted after.
//   - At construction, temp dirs of killed runs next to `final` are removed.
class AtomicDir {
 public:
  // Refuses (UserError) when `final` exists unless `overwrite`.
  AtomicDir(std::filesystem::path final_path, bool overwrite);
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  const std::filesystem::path& path() const { return tmp_; }
  const std::filesystem::path& final_path() const { return final_; }
  void commit();

 private:
  std::filesystem::path final_, tmp_;
  bool overwrite_ = false, committed_ = false;
};

// Error messages name the file that failed; when that file lies in an AtomicDir's temporary
// directory (already removed by the time the message is printed), this rewrites the temporary
// directory to the output path the user asked for and says that the output was left as it was:
//   "out.tmp-41/model.safetensors: write failed: ..." -> "out/model.safetensors: write failed: ...
//   (out left as it was)". Other messages come back unchanged.
std::string name_output_paths(const std::string& message);

// Resident set size high-water mark of this process, in bytes (from /proc/self/status VmHWM).
size_t peak_rss_bytes();
size_t current_rss_bytes();

std::string human_bytes(double bytes);

// Whole file as bytes; UserError naming the file when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace llmprune
