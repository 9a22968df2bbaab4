#pragma once
// A progress bar for long benchmark runs: one line redrawn in place (\r) on a terminal, plain
// lines otherwise (logs, CI), so a redirected stderr stays readable.
#include <cstdio>
#include <string>

namespace gear::bench {

class ProgressBar {
 public:
  // `total` units of work; `interactive` chooses the redrawn line (default: whether `out` is a TTY).
  ProgressBar(std::FILE* out, int total);
  ProgressBar(std::FILE* out, int total, bool interactive);
  ~ProgressBar() { finish(); }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void show(const std::string& what);  // what is running now (the done count unchanged)
  void advance() { ++done_; }          // one unit finished
  void finish();                        // ends the redrawn line (once)

 private:
  std::string bar() const;
  std::FILE* out_;
  int total_, done_ = 0;
  bool interactive_, open_ = false;
};

}  // namespace gear::bench
