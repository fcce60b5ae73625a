#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace llmprune {

static bool g_progress_enabled = true;
void Progress::set_enabled(bool on) { g_progress_enabled = on; }

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
  active_ = g_progress_enabled && ::isatty(2);
}

Progress::~Progress() { finish(); }

void Progress::add(int64_t n) {
  done_ += n;
  if (!active_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(200) || done_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (active_) draw(true);
}

void Progress::draw(bool final_line) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? double(done_) / secs : 0;
  double eta = rate > 0 ? double(total_ - done_) / rate : 0;
  std::fprintf(stderr, "\r%s %lld/%lld  %.1f %s/s  ETA %.0fs   %s", label_.c_str(), (long long)done_,
               (long long)total_, rate, unit_.c_str(), eta, final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace llmprune
