// The canvas's arithmetic: ticks, labels, byte formatting, colour maps, the live ring buffer.
// (The rendering itself is checked by "ui: canvas demo renders under xvfb".)
#include <catch2/catch.hpp>

#include <cstring>

#include "canvas/plot_data.h"
#include "canvas/plot_math.h"

using namespace gear::ui;
using namespace gear::ui::plot;

TEST_CASE("linear ticks are nice steps inside the range") {
  const Ticks t = linear_ticks(0, 1, 6);
  REQUIRE(t.n == 6);
  CHECK(t.v[0] == 0.0);
  CHECK(t.v[1] == Approx(0.2));
  CHECK(t.v[5] == Approx(1.0));
  const Ticks few = linear_ticks(0, 10, 4);
  CHECK(few.n <= 4);
  CHECK(few.v[1] - few.v[0] == Approx(5.0));
  const Ticks ints = linear_ticks(0, 4, 10, true);  // layers: no 0.5 steps
  CHECK(ints.n == 5);
  CHECK(ints.v[1] == 1.0);
  const Ticks neg = linear_ticks(-3, 3, 7);
  CHECK(neg.v[3] == 0.0);  // exactly zero, not -1e-17
}

TEST_CASE("log ticks are the decades, thinned when there are many") {
  const Ticks t = log_ticks(1e-3, 1, 8);
  REQUIRE(t.n == 4);
  CHECK(t.v[0] == Approx(1e-3));
  CHECK(t.v[3] == Approx(1.0));
  const Ticks many = log_ticks(1e-12, 1, 5);
  CHECK(many.n <= 5);
  CHECK(many.n >= 3);
}

TEST_CASE("nice ranges round outwards") {
  double lo = 0.012, hi = 0.37;
  nice_range(lo, hi, true);
  CHECK(lo == Approx(0.01));
  CHECK(hi == Approx(1.0));
  lo = 0;
  hi = 1432;
  nice_range(lo, hi, false);
  CHECK(lo == 0.0);
  CHECK(hi == Approx(1500.0));
  lo = hi = 5;  // degenerate
  nice_range(lo, hi, false);
  CHECK(lo < 5);
  CHECK(hi > 5);
  lo = 0;
  hi = 0;  // nothing positive on a log axis
  nice_range(lo, hi, true);
  CHECK(lo > 0);
  CHECK(hi > lo);
}

TEST_CASE("tick labels and byte sizes read well") {
  char b[32];
  format_tick(b, sizeof b, 0.25, false);
  CHECK(std::strcmp(b, "0.25") == 0);
  format_tick(b, sizeof b, 1e-6, true);
  CHECK(std::strcmp(b, "1e-6") == 0);
  format_tick(b, sizeof b, 0.01, true);
  CHECK(std::strcmp(b, "0.01") == 0);
  format_bytes(b, sizeof b, 812);
  CHECK(std::strcmp(b, "812 B") == 0);
  format_bytes(b, sizeof b, 83200);
  CHECK(std::strcmp(b, "81.2 KiB") == 0);
  format_bytes(b, sizeof b, 1.5 * 1024 * 1024);
  CHECK(std::strcmp(b, "1.50 MiB") == 0);
  format_bytes_exact(b, sizeof b, 327680);
  CHECK(std::strcmp(b, "327,680 B") == 0);
  format_bytes_exact(b, sizeof b, 999);
  CHECK(std::strcmp(b, "999 B") == 0);
}

TEST_CASE("colour maps run from their first to their last stop") {
  const uint32_t lo = colormap(Colormap::Viridis, 0), hi = colormap(Colormap::Viridis, 1);
  CHECK((lo & 0xff) == 68);           // red of viridis(0)
  CHECK(((hi >> 8) & 0xff) == 231);   // green of viridis(1)
  CHECK((hi >> 24) == 255);           // opaque
  CHECK(colormap(Colormap::Magma, -3) == colormap(Colormap::Magma, 0));  // clamped
  const uint32_t mid = colormap(Colormap::Diverging, 0.5f);
  CHECK((mid & 0xff) == 221);         // the neutral middle of the diverging map
}

TEST_CASE("finite_range skips NaN and infinities") {
  const float v[] = {NAN, 2.0f, -1.0f, INFINITY, 0.5f};
  float lo = 0, hi = 0;
  REQUIRE(finite_range(v, 5, lo, hi));
  CHECK(lo == -1.0f);
  CHECK(hi == 2.0f);
  const float none[] = {NAN};
  CHECK_FALSE(finite_range(none, 1, lo, hi));
}

TEST_CASE("TimeSeries keeps the newest samples in order") {
  TimeSeries ts(3);
  for (int i = 0; i < 5; ++i) ts.push(i, 10.0f * i, 1.0f / (i + 1));
  REQUIRE(ts.size() == 3);
  CHECK(ts.time(0) == 2.0);
  CHECK(ts.time(2) == 4.0);
  CHECK(ts.tokens_per_s(1) == 30.0f);
  CHECK(ts.version() == 5);
  ts.clear();
  CHECK(ts.size() == 0);
}

TEST_CASE("MemoryBreakdown totals and ratio") {
  MemoryBreakdown m;
  m.codes = 100;
  m.scales = 20;
  m.sparse = 30;
  m.low_rank = 40;
  m.fp16_buffer = 10;
  m.fp16_reference = 800;
  CHECK(m.total() == 200);
  CHECK(m.ratio() == Approx(0.25));
}
