#pragma once
// One struct for every KV-cache method GEAR Lab compares, parsed from CLI flags, from JSON, and from
// the app's sliders through the same set_option(), validated in one place, and printed back with
// every result so a number can always be traced to its settings.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/cache/eviction_cache.h"
#include "core/cache/pyramid_cache.h"
#include "core/compression/quantizer.h"

namespace gear {

// full: the uncompressed cache (FP16 on GPU, FP32 on CPU), the reference.
// quant / gear-l / gear: GEAR's family on a quantization backbone: Q, Q + L, Q + L + S.
// kivi: KIVI (per-channel keys, per-token values, full-precision residual window).
// groupwise / uniform: plain quantization baselines. pyramid / streamingllm / h2o: token-level methods.
enum class CacheMethod { Full, Quant, GearL, Gear, Kivi, Groupwise, Uniform, Pyramid, StreamingLLM, H2O };

// How the K and V of a block are laid out for quantization (see quantizer.h):
// uniform: one range per head; groupwise: per token, groups of `group` channels;
// kivi: keys per channel in groups of `group` tokens, values per token in groups of `group` channels;
// kcvt: keys per channel over the whole block, values per token over the whole hidden vector.
enum class Backbone { Uniform, Groupwise, Kivi, Kcvt };

// Which implementation runs a quantized cache (GEAR's family and KIVI): aten = GearCache, the ATen
// reference path (any device, reconstructs K/V for attention); cuda = GearCudaCache, the fused kernels
// of kernels/ on the compressed layout (CUDA builds, f16/bf16 models, KIVI and KCVT backbones); auto =
// cuda wherever it supports the model and settings, else aten. Other methods ignore it.
enum class CacheImpl { Auto, Aten, Cuda };

struct CacheConfig {
  CacheMethod method = CacheMethod::Gear;
  std::string preset;  // the preset it started from, "" when built from flags alone

  // Quantization backbone (every method except full / pyramid / streamingllm / h2o).
  Backbone backbone = Backbone::Kivi;
  int bits = 2;
  int64_t group = 64;  // tokens (per-channel keys) or channels (per-token values) per group; >= axis = whole axis
  QuantAxis group_axis = QuantAxis::Token;  // the group-wise backbone's axis: token (groups of channels) or channel

  // GEAR's sparse and low-rank parts.
  double sparsity = 2.0;        // percent of each vector kept exactly (half largest, half smallest)
  int64_t prefill_rank_k = 4, prefill_rank_v = 4;  // rank of L for the compressed prompt
  int64_t block_rank_k = 2, block_rank_v = 2;      // rank of L for each streamed block
  double rank_ratio = 0;        // > 0: rank = ceil(ratio * min(tokens, head_dim)), overriding the ranks
  int power_iters = 3;
  bool exact_svd = false;       // truncated SVD instead of power iteration (for comparison)
  int64_t stream_gap = 64;      // n_b: newest tokens kept full precision, compressed together when full
  uint64_t seed = 1234;         // power iteration's random start

  // The ATen reference path keeps a dequantized working copy of the compressed blocks so decode
  // does not re-dequantize the whole history every step. Off: reconstruct every step (slower, but
  // what is resident is only the compressed bytes -- for peak-memory measurements).
  bool dequant_cache = true;
  CacheImpl impl = CacheImpl::Auto;

  PyramidOptions pyramid;
  EvictionOptions eviction;

  // Derived settings.
  bool quantized() const;   // has a quantization backbone
  bool has_low_rank() const { return method == CacheMethod::Gear || method == CacheMethod::GearL; }
  bool has_sparse() const { return method == CacheMethod::Gear; }
  QuantSpec key_spec() const;
  QuantSpec value_spec() const;
  // Per-channel keys with one range per channel over a whole block (KCVT's), not over KIVI's token groups.
  bool block_wide_keys() const;
  // Tokens a compressed prompt block is a multiple of; the rest waits in the streaming buffer. Per-channel keys
  // need whole groups: KIVI's group, and for KCVT's block-wide ranges the streaming gap, so that every block
  // (prompt or streamed) is whole gaps and the GPU layout's key tiles of n_b tokens tile it. Else 1.
  int64_t prompt_alignment() const;
};

// Named configurations. GEAR's reported ones: kcvt-4, gear-kcvt-4, gearl-kcvt-4, kivi-2, gear-kivi-2,
// gearl-kivi-2 (prefill rank 4, block rank 2, 3 power iterations, 2 % outliers for GEAR, gap 64);
// plus full, kivi-4, uniform-4, uniform-2, group-4, group-2, pyramid, streamingllm, h2o.
CacheConfig preset(const std::string& name);
std::vector<std::string> preset_names();
constexpr const char* kDefaultPreset = "gear-kivi-2";

const char* method_name(CacheMethod m);
const char* backbone_name(Backbone b);
const char* impl_name(CacheImpl i);             // "auto", "aten", "cuda"
CacheImpl parse_impl(const std::string& s);     // gear::Error listing the valid names
CacheMethod parse_method(const std::string& s);  // also accepts gear-l / gearl
Backbone parse_backbone(const std::string& s);

// One setting by its flag name (without dashes), value as text: "cache" (a method or a preset
// name), "preset", "backbone", "bits", "group", "rank" (all four ranks), "prefill-rank", "block-rank",
// "k-rank"/"v-rank" (prefill and block of one side), "rank-ratio", "sparsity", "power-iters",
// "group-axis", "stream-gap", "exact-svd", "power-seed", "dequant-cache", "impl", "beta", "l0", "sinks", "recent", "window",
// "pool", "heavy", "compress-prefill". Unknown names and malformed values throw gear::Error.
void set_option(CacheConfig& c, const std::string& name, const std::string& value);
// Every option name set_option() accepts.
const std::vector<std::string>& option_names();

// Throws gear::Error with one clear line for the first invalid setting, given the model's shape.
void validate(const CacheConfig& c, int n_layers, int n_kv_heads, int head_dim);

nlohmann::json to_json(const CacheConfig& c);
// A JSON object of the same keys as to_json / set_option (flag names; numbers or strings); "cache"
// or "preset" is applied first, then the rest. Bad keys or types throw naming the key.
CacheConfig config_from_json(const nlohmann::json& j);
// One line, e.g. "gear-kivi-2: gear, kivi 2-bit g64, sparsity 2%, rank 4/2 (k) 4/2 (v), 3 iters, gap 64".
std::string describe(const CacheConfig& c);

}  // namespace gear
