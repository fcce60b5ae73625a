#pragma once
// Progress on stderr (done/total, rate, ETA) when stderr is a terminal; silent otherwise.
#include <chrono>
#include <cstdint>
#include <string>

namespace llmprune {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();
  void add(int64_t n = 1);
  void finish();
  static void set_enabled(bool on);  // e.g. off under --json or --quiet

 private:
  void draw(bool final_line);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool active_, finished_ = false;
};

}  // namespace llmprune
