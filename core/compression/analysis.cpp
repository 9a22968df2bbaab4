#include "core/compression/analysis.h"

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/compression/bitpack.h"
#include "core/compression/gear_block.h"
#include "core/util/error.h"

namespace gear {
namespace {

struct BlockRange {
  int64_t start = 0, len = 0;
  bool prefill = false;
};

// The blocks GearCache would hold for this sequence: the aligned prompt, then every full streaming
// buffer; whatever is left is in the buffer.
std::vector<BlockRange> plan_blocks(const CacheConfig& c, int64_t T, int64_t prompt) {
  prompt = std::min(prompt, T);
  const int64_t align = c.prompt_alignment();
  std::vector<BlockRange> blocks;
  int64_t pos = prompt / align * align;
  if (pos > 0) blocks.push_back({0, pos, true});
  int64_t buffered = prompt - pos;
  for (int64_t t = prompt; t < T; ++t)
    if (++buffered >= c.stream_gap) {
      blocks.push_back({pos, c.stream_gap, false});
      pos += c.stream_gap;
      buffered -= c.stream_gap;
    }
  return blocks;
}

// Squared error per head: [nkv] float64.
at::Tensor head_sq(const at::Tensor& d) { return d.to(at::kDouble).pow(2).sum({1, 2}); }

// Per-side accumulators over the blocks.
struct SideAccum {
  at::Tensor norm, e_quant, e_sparse, e_lowrank, e_gear;  // [nkv] float64
  std::vector<at::Tensor> residuals;                      // [nkv, len, hd] per block
  ByteBreakdown bytes;
  int64_t rank = -1;
  OutlierMap outliers;
  std::vector<ByteBreakdown> heads;
};

// Appends S's entries to the map; returns how many fell in each head.
std::vector<int64_t> add_outliers(OutlierMap& map, const GearBlock& b, int64_t start) {
  std::vector<int64_t> per_head(size_t(b.q.nkv), 0);
  if (!b.s || b.s->count() == 0) return per_head;
  const QuantSpec& spec = b.q.spec;
  const int64_t nkv = b.q.nkv, T = b.q.T, hd = b.q.hd;
  // The flat block index of every matrix entry, laid out like the matrix, maps S's (row, index)
  // back to (head, token, dim).
  at::Tensor flat = to_matrix(at::arange(nkv * T * hd, at::kLong).view({nkv, T, hd}), spec.axis);
  at::Tensor f = flat.gather(1, b.s->index.to(at::kCPU).to(at::kLong)).reshape(-1);
  at::Tensor vals = b.s->values.to(at::kCPU).to(at::kFloat).reshape(-1).contiguous();
  at::Tensor head = f.div(T * hd, "floor"), tok = f.div(hd, "floor").remainder(T), dim = f.remainder(hd);
  at::Tensor ch = (head * hd + dim).to(at::kInt).contiguous(), tk = (tok + start).to(at::kInt).contiguous();
  const int64_t n = f.numel();
  map.token.insert(map.token.end(), tk.data_ptr<int32_t>(), tk.data_ptr<int32_t>() + n);
  map.channel.insert(map.channel.end(), ch.data_ptr<int32_t>(), ch.data_ptr<int32_t>() + n);
  map.value.insert(map.value.end(), vals.data_ptr<float>(), vals.data_ptr<float>() + n);
  const at::Tensor counts = at::bincount(head, {}, nkv).contiguous();
  for (int64_t h = 0; h < nkv; ++h) per_head[size_t(h)] = counts[h].item<int64_t>();
  return per_head;
}

// The configured method's exact bytes for one block of one side.
// `outliers_per_head`: how many of S's entries each head holds (S's entries have one size each).
void add_method_bytes(SideAccum& acc, const CacheConfig& c, const QuantSpec& spec, int64_t nkv, int64_t len,
                      int64_t hd, int64_t rank, const std::vector<int64_t>& outliers_per_head) {
  ByteBreakdown& t = acc.bytes;
  const int64_t codes = packed_bytes(nkv * len * hd, spec.bits);
  const int64_t scales = quantized_bytes(spec, nkv, len, hd) - codes;
  const int64_t cols = matrix_cols(spec.axis, nkv, len, hd);
  const int64_t sparse = c.has_sparse() ? outlier_bytes(nkv * len * hd / cols, cols, c.sparsity) : 0;
  const int64_t lr = c.has_low_rank() ? low_rank_bytes(nkv, len, hd, rank) : 0;
  t.codes += codes, t.scales += scales, t.sparse += sparse, t.low_rank += lr;
  int64_t n_out = 0;
  for (int64_t x : outliers_per_head) n_out += x;
  for (int64_t h = 0; h < nkv; ++h) {
    ByteBreakdown& b = acc.heads[size_t(h)];
    // Even shares of the shared parts; the last head takes the remainder so the heads sum exactly.
    auto share = [&](int64_t total) { return h + 1 < nkv ? total / nkv : total - (nkv - 1) * (total / nkv); };
    b.codes += share(codes), b.scales += share(scales), b.low_rank += share(lr);
    if (n_out > 0 && sparse > 0) b.sparse += sparse / n_out * outliers_per_head[size_t(h)];
  }
}

void analyze_block(SideAccum& acc, const at::Tensor& x, const CacheConfig& c, bool key, const BlockRange& r,
                   uint64_t seed) {
  const int64_t nkv = x.size(0), len = x.size(1), hd = x.size(2);
  const int64_t want = r.prefill ? (key ? c.prefill_rank_k : c.prefill_rank_v) : (key ? c.block_rank_k : c.block_rank_v);
  const int64_t rank = resolve_rank(want, c.rank_ratio, len, hd);
  if (acc.rank < 0 || r.prefill) acc.rank = rank;
  BlockSettings s;
  s.quant = fit_spec(key ? c.key_spec() : c.value_spec(), nkv, len, hd);
  s.low_rank = {rank, c.power_iters, c.exact_svd, seed};
  // Without S: Q alone and Q + L.
  const at::Tensor q0 = dequantize_block(quantize_block(x, s.quant));
  acc.e_quant += head_sq(x - q0);
  at::Tensor ql = q0;
  if (rank > 0) ql = q0 + reconstruct(low_rank(x - q0, s.low_rank));
  acc.e_lowrank += head_sq(x - ql);
  // With S: Q + S and Q + L + S.
  s.sparsity = c.sparsity;
  const GearBlock g = compress_block(x, s);
  const BlockParts parts = block_parts(g);
  acc.e_sparse += head_sq(x - parts.quantized);
  acc.e_gear += head_sq(x - decompress_block(g));
  acc.residuals.push_back(x - parts.quantized);
  const std::vector<int64_t> per_head = add_outliers(acc.outliers, g, r.start);
  add_method_bytes(acc, c, s.quant, nkv, len, hd, rank, per_head);
}

ComponentErrors ratio(double q, double s, double l, double g, double norm) {
  const double n = norm > 0 ? std::sqrt(norm) : 1.0;
  return {std::sqrt(q) / n, std::sqrt(s) / n, std::sqrt(l) / n, std::sqrt(g) / n};
}

SideAnalysis analyze_side(const at::Tensor& X, const CacheConfig& c, bool key, const std::vector<BlockRange>& blocks,
                          uint64_t seed) {
  const int64_t nkv = X.size(0), T = X.size(1), hd = X.size(2);
  SideAccum acc;
  const at::Tensor zero = at::zeros({nkv}, at::kDouble);
  acc.norm = head_sq(X);
  acc.e_quant = zero.clone(), acc.e_sparse = zero.clone(), acc.e_lowrank = zero.clone(), acc.e_gear = zero.clone();
  acc.heads.resize(size_t(nkv));
  int64_t end = 0, i = 0;
  for (const BlockRange& r : blocks) {
    analyze_block(acc, X.narrow(1, r.start, r.len), c, key, r, seed + uint64_t(i++) * 2 + (key ? 0 : 1));
    end = r.start + r.len;
  }
  // The FP16 buffer: only fp16 rounding.
  if (end < T) {
    const at::Tensor buf = X.narrow(1, end, T - end);
    const at::Tensor e = head_sq(buf - buf.to(at::kHalf).to(at::kFloat));
    acc.e_quant += e, acc.e_sparse += e, acc.e_lowrank += e, acc.e_gear += e;
    acc.bytes.full += nkv * (T - end) * hd * 2;
    for (auto& h : acc.heads) h.full += (T - end) * hd * 2;
  }
  acc.bytes.reserved = acc.bytes.in_use();
  SideAnalysis out;
  out.bytes = acc.bytes;
  out.rank = std::max<int64_t>(acc.rank, 0);
  out.outliers = std::move(acc.outliers);
  auto sum = [](const at::Tensor& t) { return t.sum().item<double>(); };
  out.error = ratio(sum(acc.e_quant), sum(acc.e_sparse), sum(acc.e_lowrank), sum(acc.e_gear), sum(acc.norm));
  const at::Tensor res = acc.residuals.empty() ? at::Tensor() : at::cat(acc.residuals, 1);
  const at::Tensor sv = res.defined() ? at::linalg_svdvals(res) : at::Tensor();  // [nkv, min(Tc, hd)]
  for (int64_t h = 0; h < nkv; ++h) {
    HeadAnalysis ha;
    ha.bytes = acc.heads[size_t(h)];
    ha.bytes.reserved = ha.bytes.in_use();
    ha.error = ratio(acc.e_quant[h].item<double>(), acc.e_sparse[h].item<double>(), acc.e_lowrank[h].item<double>(),
                     acc.e_gear[h].item<double>(), acc.norm[h].item<double>());
    if (sv.defined()) {
      const at::Tensor row = sv[h].contiguous();
      ha.spectrum.assign(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
    }
    out.heads.push_back(std::move(ha));
  }
  return out;
}

nlohmann::json errors_json(const ComponentErrors& e) {
  return {{"quant", e.quant}, {"sparse", e.sparse}, {"lowrank", e.lowrank}, {"gear", e.gear}};
}

nlohmann::json bytes_json(const ByteBreakdown& b) {
  return {{"full", b.full},     {"codes", b.codes},       {"scales", b.scales},
          {"sparse", b.sparse}, {"low_rank", b.low_rank}, {"in_use", b.in_use()}};
}

}  // namespace

CacheSnapshot capture_snapshot(const KvCache& cache, const ModelConfig& model, int row, int64_t prompt_tokens) {
  require(row >= 0 && row < cache.batch(), "snapshot: row " + std::to_string(row) + " is outside the batch");
  CacheSnapshot s;
  s.model = model;
  s.prompt_tokens = prompt_tokens;
  for (int l = 0; l < model.n_layers; ++l) {
    auto [k, v] = cache.layer(l).view(row);
    s.k.push_back(k.to(at::kCPU).to(at::kFloat).contiguous());
    s.v.push_back(v.to(at::kCPU).to(at::kFloat).contiguous());
  }
  return s;
}

Analysis analyze(const CacheSnapshot& snap, const CacheConfig& config) {
  const auto t0 = std::chrono::steady_clock::now();
  require(config.quantized(), std::string("analyze: method ") + method_name(config.method) +
                                  " has no quantization backbone to decompose (use quant, gear-l, gear, kivi, "
                                  "groupwise or uniform)");
  require(!snap.k.empty() && snap.tokens() > 0, "analyze: the snapshot is empty (generate or prefill some tokens first)");
  const ModelConfig& m = snap.model;
  validate(config, m.n_layers, m.n_kv_heads, m.hd());
  Analysis a;
  a.config = config;
  a.tokens = snap.tokens();
  a.n_kv_heads = m.n_kv_heads, a.head_dim = m.hd();
  const auto blocks = plan_blocks(config, a.tokens, snap.prompt_tokens);
  for (const auto& b : blocks) a.compressed_tokens += b.len;
  a.buffered_tokens = a.tokens - a.compressed_tokens;
  // Layers (and K / V) are independent: spread them over the cores (the many small ops of one side
  // gain nothing from ATen's intra-op threads, which LibTorch may also limit to the physical cores).
  a.layers.resize(size_t(m.n_layers));
  const int64_t jobs = int64_t(m.n_layers) * 2;
  std::atomic<int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    c10::InferenceMode guard;
    for (int64_t i; (i = next++) < jobs;) {
      try {
        const int l = int(i / 2);
        const bool key = i % 2 == 0;
        const uint64_t seed = config.seed + uint64_t(l) * 1000003u;
        (key ? a.layers[size_t(l)].k : a.layers[size_t(l)].v) =
            analyze_side(key ? snap.k[size_t(l)] : snap.v[size_t(l)], config, key, blocks, seed);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        failure = std::current_exception();
      }
    }
  };
  const int64_t n_threads = std::min<int64_t>(jobs, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (int64_t t = 1; t < n_threads; ++t) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
  for (const LayerAnalysis& la : a.layers) a.bytes += la.k.bytes, a.bytes += la.v.bytes;
  a.fp16_bytes = 2 * 2 * int64_t(m.n_layers) * m.n_kv_heads * m.hd() * a.tokens;
  a.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return a;
}

nlohmann::json to_json(const Analysis& a, bool with_spectra, bool with_outliers) {
  nlohmann::json j;
  j["kind"] = "analysis";
  j["config"] = to_json(a.config);
  j["config_text"] = describe(a.config);
  j["tokens"] = a.tokens;
  j["compressed_tokens"] = a.compressed_tokens;
  j["buffered_tokens"] = a.buffered_tokens;
  j["bytes"] = bytes_json(a.bytes);
  j["fp16_bytes"] = a.fp16_bytes;
  j["ratio_vs_fp16"] = a.ratio_vs_fp16();
  j["seconds"] = a.seconds;
  auto side = [&](const SideAnalysis& s) {
    nlohmann::json o = {{"error", errors_json(s.error)}, {"bytes", bytes_json(s.bytes)}, {"rank", s.rank},
                        {"outlier_count", s.outliers.value.size()}};
    nlohmann::json heads = nlohmann::json::array();
    for (const HeadAnalysis& h : s.heads) {
      nlohmann::json hj = {{"error", errors_json(h.error)}, {"bytes", bytes_json(h.bytes)}};
      if (with_spectra) hj["spectrum"] = h.spectrum;
      heads.push_back(hj);
    }
    o["heads"] = heads;
    if (with_outliers)
      o["outliers"] = {{"token", s.outliers.token}, {"channel", s.outliers.channel}, {"value", s.outliers.value}};
    return o;
  };
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < a.layers.size(); ++l)
    layers.push_back({{"layer", l}, {"k", side(a.layers[l].k)}, {"v", side(a.layers[l].v)}});
  j["layers"] = layers;
  return j;
}

std::string format_table(const Analysis& a) {
  std::ostringstream os;
  char line[256];
  os << describe(a.config) << "\n";
  os << a.tokens << " tokens (" << a.compressed_tokens << " compressed, " << a.buffered_tokens
     << " in the FP16 buffer); relative Frobenius error ||X - X^|| / ||X||\n";
  std::snprintf(line, sizeof line, "%5s | %8s %8s %8s %8s | %8s %8s %8s %8s | %10s %7s\n", "layer", "K quant", "K +S",
                "K +L", "K gear", "V quant", "V +S", "V +L", "V gear", "bytes", "vs fp16");
  os << line;
  const int64_t per_layer_fp16 = a.layers.empty() ? 0 : a.fp16_bytes / int64_t(a.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const auto& k = a.layers[l].k.error;
    const auto& v = a.layers[l].v.error;
    const int64_t b = a.layers[l].k.bytes.in_use() + a.layers[l].v.bytes.in_use();
    std::snprintf(line, sizeof line, "%5zu | %8.4f %8.4f %8.4f %8.4f | %8.4f %8.4f %8.4f %8.4f | %10lld %6.2fx\n", l,
                  k.quant, k.sparse, k.lowrank, k.gear, v.quant, v.sparse, v.lowrank, v.gear, (long long)b,
                  b > 0 ? double(per_layer_fp16) / double(b) : 0.0);
    os << line;
  }
  const ByteBreakdown& t = a.bytes;
  os << "total " << t.in_use() << " bytes (codes " << t.codes << ", scales " << t.scales << ", sparse " << t.sparse
     << ", low-rank " << t.low_rank << ", fp16 buffer " << t.full << ") vs fp16 " << a.fp16_bytes << ": "
     << a.ratio_vs_fp16() << "x smaller; analysis took " << a.seconds * 1000 << " ms\n";
  return os.str();
}

}  // namespace gear
