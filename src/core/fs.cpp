#include "core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace llmprune {

void atomic_write_file(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw RuntimeError(path.string() + ": cannot create: " + std::strerror(errno));
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw RuntimeError(path.string() + ": write failed: " + std::strerror(e));
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw RuntimeError(path.string() + ": write failed: " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw RuntimeError(path.string() + ": rename failed: " + std::strerror(errno));
  }
}

AtomicDir::AtomicDir(fs::path final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  if (final_.filename().empty()) final_ = final_.parent_path();
  if (fs::exists(final_) && !overwrite_)
    throw UserError(final_.string() + ": output already exists (use --force to replace it)");
  tmp_ = final_;
  tmp_ += ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_, ec);
  if (ec) throw RuntimeError(tmp_.string() + ": cannot create directory: " + ec.message());
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void AtomicDir::commit() {
  std::error_code ec;
  // Flush file contents before the rename makes the directory visible.
  for (auto& e : fs::directory_iterator(tmp_)) {
    int fd = ::open(e.path().c_str(), O_RDONLY);
    if (fd >= 0) { ::fsync(fd); ::close(fd); }
  }
  if (fs::exists(final_)) {
    fs::path old = final_;
    old += ".old-" + std::to_string(::getpid());
    fs::rename(final_, old, ec);
    if (ec) throw RuntimeError(final_.string() + ": cannot replace: " + ec.message());
    fs::rename(tmp_, final_, ec);
    if (ec) throw RuntimeError(final_.string() + ": rename failed: " + ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, final_, ec);
    if (ec) throw RuntimeError(final_.string() + ": rename failed: " + ec.message());
  }
  committed_ = true;
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
