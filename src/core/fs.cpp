#include "core/fs.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <vector>

#include "core/error.h"

namespace fs = std::filesystem;

namespace llmprune {

namespace {

// fsync of a file or directory; false (errno set) when it fails.
bool fsync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  int e = errno;
  ::close(fd);
  errno = e;
  return ok;
}

fs::path parent_or_dot(const fs::path& p) { return p.parent_path().empty() ? fs::path(".") : p.parent_path(); }

// Writes the incomplete-output marker naming `name` into `dir`; false when it cannot.
bool write_marker(const fs::path& dir, const std::string& name) {
  const std::string text = name + "\nThis directory is an llmprune output that was never completed (or was being deleted);\n"
                                  "llmprune refuses to load it under the name above. Delete it.\n";
  int fd = ::open((dir / kIncompleteMarker).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  return ::close(fd) == 0 && ok;
}

// Removes a directory an AtomicDir built or replaced, its marker last: a run killed while
// deleting leaves a directory that is still refused, never a partial one that loads.
void remove_marked_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) {
    fs::remove(dir, ec);
    return;
  }
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    if (it->path().filename() != kIncompleteMarker) fs::remove_all(it->path(), ec);
  fs::remove_all(dir, ec);
}

// The pid in "<base>.tmp-<pid>" / "<base>.old-<pid>", or -1.
long temp_sibling_pid(const std::string& name, const std::string& base) {
  if (name.size() <= base.size() + 5 || name.compare(0, base.size(), base) != 0) return -1;
  const std::string tag = name.substr(base.size(), 5);
  if (tag != ".tmp-" && tag != ".old-") return -1;
  const std::string digits = name.substr(base.size() + 5);
  if (digits.empty() || digits.size() > 9) return -1;
  long pid = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}

}  // namespace

bool is_incomplete_output(const fs::path& dir) {
  std::ifstream in(dir / kIncompleteMarker);
  if (!in) return false;
  std::string named;
  std::getline(in, named);
  // The directory's own name, however the path was spelled ("out/", "out/.", a symlink).
  std::error_code ec;
  fs::path p = fs::weakly_canonical(dir, ec);
  if (ec) p = fs::absolute(dir, ec).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  // An empty marker is one whose write was cut short: in a new temp dir nothing else is there
  // yet (no config.json, so no loader accepts it anyway); in an output being replaced it must
  // not make the output unloadable.
  return !named.empty() && named == p.filename().string();
}

void refuse_incomplete_output(const fs::path& dir) {
  if (is_incomplete_output(dir)) throw input_error(dir.string(), "incomplete output of an interrupted llmprune run (delete it)");
}

bool is_temp_output_name(const fs::path& p) {
  const std::string name = p.filename().string();
  size_t at = name.rfind(".tmp-");
  if (at == std::string::npos || at == 0 || at + 5 == name.size()) return false;
  return name.find_first_not_of("0123456789", at + 5) == std::string::npos;
}

void remove_stale_temps(const fs::path& final_path) {
  const std::string base = final_path.filename().string();
  if (base.empty()) return;
  std::error_code ec;
  for (auto it = fs::directory_iterator(parent_or_dot(final_path), ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    long pid = temp_sibling_pid(it->path().filename().string(), base);
    if (pid <= 0 || pid == long(::getpid())) continue;
    if (::kill(pid_t(pid), 0) == -1 && errno == ESRCH) remove_marked_dir(it->path());
  }
}

void atomic_write_file(const fs::path& path, const std::string& content) {
  remove_stale_temps(path);
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw RuntimeError(path.string() + ": cannot create: " + std::strerror(errno));
  auto fail = [&](const char* what) {
    int e = errno;
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw RuntimeError(path.string() + ": " + what + ": " + std::strerror(e));
  };
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write failed");
    done += size_t(n);
  }
  if (::fsync(fd) != 0) fail("write failed");
  int closing = fd;
  fd = -1;
  if (::close(closing) != 0) fail("write failed");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename failed");
}

namespace {
// Every temporary directory this process made, with its output path (name_output_paths).
std::mutex g_temp_dirs_mu;
std::vector<std::pair<std::string, std::string>> g_temp_dirs;
}  // namespace

std::string name_output_paths(const std::string& message) {
  std::lock_guard<std::mutex> lock(g_temp_dirs_mu);
  std::string out = message;
  std::string kept;
  for (auto& [tmp, final_path] : g_temp_dirs) {
    bool hit = false;
    for (size_t at = out.find(tmp); at != std::string::npos; at = out.find(tmp, at)) {
      const size_t end = at + tmp.size();
      if (end < out.size() && out[end] != '/' && out[end] != ':' && out[end] != ' ') {  // a longer name
        at = end;
        continue;
      }
      out.replace(at, tmp.size(), final_path);
      at += final_path.size();
      hit = true;
    }
    if (hit) kept += (kept.empty() ? "" : ", ") + final_path;
  }
  if (!kept.empty()) out += " (" + kept + " left as it was)";
  return out;
}

AtomicDir::AtomicDir(fs::path final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.filename().empty()) final_ = final_.parent_path();
  if (fs::exists(final_) && !overwrite_)
    throw UserError(final_.string() + ": output already exists (use --force to replace it)");
  remove_stale_temps(final_);
  tmp_ = final_;
  tmp_ += ".tmp-" + std::to_string(::getpid());
  {
    std::lock_guard<std::mutex> lock(g_temp_dirs_mu);
    g_temp_dirs.emplace_back(tmp_.string(), final_.string());
  }
  std::error_code ec;
  remove_marked_dir(tmp_);
  fs::create_directories(tmp_, ec);
  if (ec) throw RuntimeError(tmp_.string() + ": cannot create directory: " + ec.message());
  // The marker goes in before anything else: from here on no loader accepts this directory.
  if (!write_marker(tmp_, tmp_.filename().string())) {
    int e = errno;
    fs::remove_all(tmp_, ec);
    throw RuntimeError((tmp_ / kIncompleteMarker).string() + ": cannot create: " + std::strerror(e));
  }
}

AtomicDir::~AtomicDir() {
  if (!committed_) remove_marked_dir(tmp_);
}

void AtomicDir::commit() {
  // Flush file contents before the rename makes the directory visible.
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(tmp_, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec) && !fsync_path(it->path(), false))
      throw RuntimeError(it->path().string() + ": write failed: " + std::strerror(errno));
  if (ec) throw RuntimeError(tmp_.string() + ": cannot list: " + ec.message());
  if (!fsync_path(tmp_, true)) throw RuntimeError(tmp_.string() + ": write failed: " + std::strerror(errno));

  // The marker stays in: it names the temporary name, so the directory is refused there and
  // accepted once renamed. It is deleted after the rename.
  const std::string tmp_name = tmp_.filename().string();
  bool swapped = false;
  if (fs::exists(fs::symlink_status(final_, ec))) {
    // Replace: mark the old output for the temporary name it is about to get, then swap the two
    // in one step, so `final` holds the old or the new output at every moment.
    const bool old_is_dir = fs::is_directory(fs::symlink_status(final_, ec));
    const bool marked_old = old_is_dir && write_marker(final_, tmp_name);
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, final_.c_str(), RENAME_EXCHANGE) == 0) {
      swapped = true;
    } else {
      int e = errno;
      if (marked_old) ::unlink((final_ / kIncompleteMarker).c_str());
      if (e != EINVAL && e != ENOSYS) throw RuntimeError(final_.string() + ": cannot replace: " + std::strerror(e));
      // No RENAME_EXCHANGE on this filesystem: move the old output aside, then the new one in
      // (`final` is missing between the two renames).
      fs::path old = final_;
      old += ".old-" + std::to_string(::getpid());
      remove_marked_dir(old);
      fs::rename(final_, old, ec);
      if (ec) throw RuntimeError(final_.string() + ": cannot replace: " + ec.message());
      fs::rename(tmp_, final_, ec);
      if (ec) {
        std::error_code ec2;
        fs::rename(old, final_, ec2);
        throw RuntimeError(final_.string() + ": rename failed: " + ec.message());
      }
      committed_ = true;
      remove_marked_dir(old);
    }
  } else {
    fs::rename(tmp_, final_, ec);
    if (ec) throw RuntimeError(final_.string() + ": rename failed: " + ec.message());
  }
  committed_ = true;
  ::unlink((final_ / kIncompleteMarker).c_str());
  fsync_path(parent_or_dot(final_), true);
  if (swapped) remove_marked_dir(tmp_);  // the old output, refused by its marker until gone
}

static size_t proc_status_kb(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  size_t klen = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, klen, key) == 0) return size_t(std::stoull(line.substr(klen + 1)));
  return 0;
}
size_t peak_rss_bytes() { return proc_status_kb("VmHWM") * 1024; }
size_t current_rss_bytes() { return proc_status_kb("VmRSS") * 1024; }

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) { b /= 1024; u++; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in || fs::is_directory(path)) throw input_error(path, "cannot open");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s;
}

}  // namespace llmprune
