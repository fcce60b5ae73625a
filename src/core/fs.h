#pragma once
// Atomic outputs: everything is written under a temporary sibling path and renamed into place,
// so an interrupted run never leaves a half-written file or directory that a later load accepts.
#include <filesystem>
#include <string>

namespace llmprune {

// Writes `content` to `path` atomically (temp file in the same directory + fsync + rename).
void atomic_write_file(const std::filesystem::path& path, const std::string& content);

// A directory built under `<final>.tmp-<pid>` and renamed to `final` by commit().
// Destroying it without commit() removes the temporary directory.
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

// Resident set size high-water mark of this process, in bytes (from /proc/self/status VmHWM).
size_t peak_rss_bytes();
size_t current_rss_bytes();

std::string human_bytes(double bytes);

// Whole file as bytes; UserError naming the file when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace llmprune
