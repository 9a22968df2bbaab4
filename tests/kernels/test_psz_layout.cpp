// v7's (p·scale, p·zero) table (kernels/psz_layout.h): every entry a distinct slot of the warp's share, the value
// loop's split of an index into a lane part and a compile-time part equal to the whole index, the mask table the
// search's minimum, and fewer shared-memory wavefronts a tile than the [head][token][group] table it replaced.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <vector>

#include "kernels/psz_layout.h"

namespace {

namespace pl = gear::kernels::psz_layout;

struct V7Shape {
  int hd, g, bits;
};
// Every (hd, G, bits) v7's FMA value loop is built for (lean_layout_ok: 4-bit codes only at GT 1, same table).
constexpr V7Shape kShapes[] = {{64, 32, 2}, {64, 32, 4}, {64, 64, 2}, {64, 64, 4}, {128, 32, 2}, {128, 32, 4}, {128, 64, 2}, {128, 64, 4}};

// The value-group counts a shape allows: hd / v_group with v_group >= one word's channels, at most kGroups.
std::vector<int> group_counts(const V7Shape& v) {
  std::vector<int> out;
  for (int ng = 1; ng <= pl::kGroups && (32 / v.bits) * ng <= v.hd; ng *= 2) out.push_back(ng);
  return out;
}

// The wavefronts of one tile in the table before this layout, [head][token][group]: a lane's TPL tokens one 8-byte
// store each.
int old_tile_wavefronts(const V7Shape& v, int ng) {
  const pl::Shape s = pl::shape(v.hd, v.g, v.bits);
  auto at = [](int t, int vg) { return t * pl::kGroups + vg; };
  int total = 0;
  for (int vg = 0; vg < ng; ++vg)
    for (int i = 0; i < s.tpl; ++i) {
      int e[32] = {};
      for (int lane = 0; lane < 32; ++lane) e[lane] = at(s.cpw * (lane % s.tbs) + s.tpl * (lane / s.tbs) + i, vg);
      total += pl::wavefronts(e, 8);
    }
  for (int it = 0; it < v.g / s.tpi; ++it) {
    int e[32] = {};
    for (int lane = 0; lane < 32; ++lane) e[lane] = at(it * s.tpi + lane / s.vpl, s.cpw * (lane % s.vpl) * ng / v.hd);
    total += pl::wavefronts(e, 8);
  }
  return total;
}

int shape_wavefronts(const V7Shape& v, int a, int c) {
  int w = 0;
  for (const int ng : group_counts(v)) w += pl::tile_wavefronts(v.hd, v.g, v.bits, ng, a, c);
  return w;
}

template <int HD, int G, int BITS>
void check_entries(int gt) {
  CAPTURE(HD, G, BITS, gt);
  const pl::Shape s = pl::shape(HD, G, BITS);
  std::set<int> seen;
  for (int h = 0; h < gt; ++h)
    for (int vg = 0; vg < pl::kGroups; ++vg)
      for (int t = 0; t < G; ++t) {
        const int e = pl::entry<HD, G, BITS>(h, vg, t);
        CHECK(e >= 0);
        CHECK(2 * e + 1 < pl::floats(gt, G));
        CHECK(seen.insert(e).second);
        // a lane's TPL tokens are one aligned slot (the kernel stores them as one 8- or 16-byte vector)
        if (t % s.tpl == 0) {
          CHECK(e % s.tpl == 0);
          for (int i = 1; i < s.tpl; ++i) CHECK(pl::entry<HD, G, BITS>(h, vg, t + i) == e + i);
        }
      }
  // the value loop's index: lane part + compile-time part
  for (int h = 0; h < gt; ++h)
    for (int vg = 0; vg < pl::kGroups; ++vg)
      for (int it = 0; it < G / s.tpi; ++it)
        for (int tv = 0; tv < s.tpi; ++tv)
          CHECK(pl::step_base<G>(0, vg, tv) + h * pl::kGroups * pl::row_stride(G) + pl::step_offset<HD, G, BITS>(it) ==
                pl::entry<HD, G, BITS>(h, vg, it * s.tpi + tv));
}

}  // namespace

TEST_CASE("ref v7's (p·scale, p·zero) table: distinct aligned slots, the value loop's split index", "[kernels][ref]") {
  for (const int gt : {1, 2, 4}) {
    check_entries<64, 32, 2>(gt);
    check_entries<64, 64, 2>(gt);
    check_entries<128, 32, 2>(gt);
    check_entries<128, 64, 2>(gt);
  }
  check_entries<64, 32, 4>(1);
  check_entries<64, 64, 4>(1);
  check_entries<128, 32, 4>(1);
  check_entries<128, 64, 4>(1);
}

TEST_CASE("ref v7's (p·scale, p·zero) table: the mask table is the search's minimum and beats the old table",
          "[kernels][ref]") {
  for (const V7Shape& v : kShapes) {
    CAPTURE(v.hd, v.g, v.bits);
    int least = 1 << 30;
    for (int a = 0; a < 4; ++a)
      for (int c = 1; c <= 8; ++c) least = std::min(least, shape_wavefronts(v, a, c));
    const pl::Mask m = pl::mask_for(v.hd, v.g, v.bits);
    const int chosen = shape_wavefronts(v, m.a, m.c);
    CHECK(chosen == least);
    int old = 0;
    for (const int ng : group_counts(v)) old += old_tile_wavefronts(v, ng);
    CAPTURE(chosen, old);
    CHECK(chosen < old);
    // the value loop's reads alone (stores aside) are no worse than before
    for (const int ng : group_counts(v)) {
      const pl::Shape s = pl::shape(v.hd, v.g, v.bits);
      int reads_new = 0, reads_old = 0;
      for (int it = 0; it < v.g / s.tpi; ++it) {
        int e[32] = {}, o[32] = {};
        for (int lane = 0; lane < 32; ++lane) {
          const int t = it * s.tpi + lane / s.vpl, vg = s.cpw * (lane % s.vpl) * ng / v.hd;
          e[lane] = pl::entry_ac(s, m.a, m.c, v.g, 0, vg, t);
          o[lane] = t * pl::kGroups + vg;
        }
        reads_new += pl::wavefronts(e, 8);
        reads_old += pl::wavefronts(o, 8);
      }
      CAPTURE(ng, reads_new, reads_old);
      CHECK(reads_new <= reads_old);
    }
  }
  // G 64, 2-bit codes, hd 128 (GEAR's MHA tiles): the stores, 16 wavefronts an 8-byte store before, are 4 a
  // 16-byte one (the minimum for 512 bytes)
  const pl::Shape s = pl::shape(128, 64, 2);
  const pl::Mask m = pl::mask_for(128, 64, 2);
  int e[32] = {};
  for (int lane = 0; lane < 32; ++lane) e[lane] = pl::entry_ac(s, m.a, m.c, 64, 0, 1, s.cpw * (lane % s.tbs) + s.tpl * (lane / s.tbs));
  CHECK(pl::wavefronts(e, 16) == 4);
}
