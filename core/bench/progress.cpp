#include "core/bench/progress.h"

#include <unistd.h>

#include <algorithm>

namespace gear::bench {

ProgressBar::ProgressBar(std::FILE* out, int total) : ProgressBar(out, total, isatty(fileno(out)) != 0) {}

ProgressBar::ProgressBar(std::FILE* out, int total, bool interactive)
    : out_(out), total_(std::max(total, 1)), interactive_(interactive) {}

std::string ProgressBar::bar() const {
  constexpr int kWidth = 24;
  const int filled = std::min(kWidth, done_ * kWidth / total_);
  return "[" + std::string(size_t(filled), '#') + std::string(size_t(kWidth - filled), '.') + "] " +
         std::to_string(done_) + "/" + std::to_string(total_);
}

void ProgressBar::show(const std::string& what) {
  if (interactive_) {
    // \033[K clears what a longer previous label left on the line.
    std::fprintf(out_, "\r%s %s\033[K", bar().c_str(), what.c_str());
    open_ = true;
  } else {
    std::fprintf(out_, "%s %s\n", bar().c_str(), what.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (!open_) return;
  std::fprintf(out_, "\r%s done\033[K\n", bar().c_str());
  std::fflush(out_);
  open_ = false;
}

}  // namespace gear::bench
