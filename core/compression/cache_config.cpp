#include "core/compression/cache_config.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"

namespace gear {
namespace {

const std::map<std::string, CacheMethod>& method_table() {
  static const std::map<std::string, CacheMethod> t = {
      {"full", CacheMethod::Full},           {"fp16", CacheMethod::Full},        {"quant", CacheMethod::Quant},
      {"gear-l", CacheMethod::GearL},        {"gearl", CacheMethod::GearL},      {"gear", CacheMethod::Gear},
      {"kivi", CacheMethod::Kivi},           {"groupwise", CacheMethod::Groupwise},
      {"uniform", CacheMethod::Uniform},     {"pyramid", CacheMethod::Pyramid},
      {"streamingllm", CacheMethod::StreamingLLM}, {"h2o", CacheMethod::H2O}};
  return t;
}

// The defaults a method brings when chosen by name (`--cache kivi`): the setting its paper uses.
CacheConfig method_defaults(CacheMethod m) {
  CacheConfig c;
  c.method = m;
  switch (m) {
    case CacheMethod::Kivi:  // KIVI: 2-bit, group 32, residual (full-precision window) 128
      c.backbone = Backbone::Kivi, c.bits = 2, c.group = 32, c.stream_gap = 128;
      break;
    case CacheMethod::Groupwise: c.backbone = Backbone::Groupwise, c.bits = 4, c.group = 64; break;
    case CacheMethod::Uniform: c.backbone = Backbone::Uniform, c.bits = 4; break;
    case CacheMethod::Quant:
    case CacheMethod::GearL:
    case CacheMethod::Gear: c.backbone = Backbone::Kivi, c.bits = 2, c.group = 64; break;
    case CacheMethod::StreamingLLM: c.eviction.kind = EvictionKind::StreamingLLM; break;
    case CacheMethod::H2O:
      c.eviction.kind = EvictionKind::H2O;
      c.eviction.sinks = 0, c.eviction.heavy = 128, c.eviction.recent = 128;
      break;
    default: break;
  }
  return c;
}

bool fixed_backbone(CacheMethod m) {
  return m == CacheMethod::Kivi || m == CacheMethod::Groupwise || m == CacheMethod::Uniform;
}

long long parse_int(const std::string& name, const std::string& v) {
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == v.size() && !v.empty(), "cache settings: " + name + " must be an integer, got \"" + v + "\"");
  return x;
}

double parse_real(const std::string& name, const std::string& v) {
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == v.size() && !v.empty() && std::isfinite(x),
          "cache settings: " + name + " must be a number, got \"" + v + "\"");
  return x;
}

bool parse_bool(const std::string& name, const std::string& v) {
  if (v == "1" || v == "true" || v == "on" || v == "yes" || v.empty()) return true;
  if (v == "0" || v == "false" || v == "off" || v == "no") return false;
  fail("cache settings: " + name + " must be true or false, got \"" + v + "\"");
}

std::string num(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}

}  // namespace

bool CacheConfig::quantized() const {
  switch (method) {
    case CacheMethod::Quant:
    case CacheMethod::GearL:
    case CacheMethod::Gear:
    case CacheMethod::Kivi:
    case CacheMethod::Groupwise:
    case CacheMethod::Uniform: return true;
    default: return false;
  }
}

QuantSpec CacheConfig::key_spec() const {
  switch (backbone) {
    case Backbone::Uniform: return {bits, QuantAxis::Head, 0};
    case Backbone::Groupwise: return {bits, group_axis, group};
    case Backbone::Kivi: return {bits, QuantAxis::Channel, group};
    case Backbone::Kcvt: return {bits, QuantAxis::Channel, 0};
  }
  return {};
}

QuantSpec CacheConfig::value_spec() const {
  switch (backbone) {
    case Backbone::Uniform: return {bits, QuantAxis::Head, 0};
    case Backbone::Groupwise: return {bits, group_axis, group};
    case Backbone::Kivi: return {bits, QuantAxis::Token, group};
    case Backbone::Kcvt: return {bits, QuantAxis::Token, 0};
  }
  return {};
}

bool CacheConfig::block_wide_keys() const {
  const QuantSpec k = key_spec();
  return quantized() && k.axis == QuantAxis::Channel && k.group == 0;
}

int64_t CacheConfig::prompt_alignment() const {
  const QuantSpec k = key_spec();
  if (!quantized() || k.axis != QuantAxis::Channel) return 1;
  return block_wide_keys() ? std::max<int64_t>(stream_gap, 1) : k.group;
}

const char* method_name(CacheMethod m) {
  switch (m) {
    case CacheMethod::Full: return "full";
    case CacheMethod::Quant: return "quant";
    case CacheMethod::GearL: return "gear-l";
    case CacheMethod::Gear: return "gear";
    case CacheMethod::Kivi: return "kivi";
    case CacheMethod::Groupwise: return "groupwise";
    case CacheMethod::Uniform: return "uniform";
    case CacheMethod::Pyramid: return "pyramid";
    case CacheMethod::StreamingLLM: return "streamingllm";
    case CacheMethod::H2O: return "h2o";
  }
  return "?";
}

const char* backbone_name(Backbone b) {
  switch (b) {
    case Backbone::Uniform: return "uniform";
    case Backbone::Groupwise: return "groupwise";
    case Backbone::Kivi: return "kivi";
    case Backbone::Kcvt: return "kcvt";
  }
  return "?";
}

const char* impl_name(CacheImpl i) {
  switch (i) {
    case CacheImpl::Auto: return "auto";
    case CacheImpl::Aten: return "aten";
    case CacheImpl::Cuda: return "cuda";
  }
  return "?";
}

CacheImpl parse_impl(const std::string& s) {
  for (CacheImpl i : {CacheImpl::Auto, CacheImpl::Aten, CacheImpl::Cuda})
    if (s == impl_name(i)) return i;
  fail("cache settings: impl must be auto, aten or cuda, got \"" + s + "\"");
}

CacheMethod parse_method(const std::string& s) {
  auto it = method_table().find(s);
  if (it != method_table().end()) return it->second;
  std::string known;
  for (const auto& kv : method_table()) known += (known.empty() ? "" : ", ") + kv.first;
  fail("cache settings: unknown cache method \"" + s + "\" (methods: " + known + "; presets: see --cache help)");
}

Backbone parse_backbone(const std::string& s) {
  for (Backbone b : {Backbone::Uniform, Backbone::Groupwise, Backbone::Kivi, Backbone::Kcvt})
    if (s == backbone_name(b)) return b;
  fail("cache settings: unknown backbone \"" + s + "\" (uniform, groupwise, kivi, kcvt)");
}

std::vector<std::string> preset_names() {
  return {"full",     "kcvt-4",    "gear-kcvt-4", "gearl-kcvt-4", "kivi-2",  "gear-kivi-2", "gearl-kivi-2",
          "kivi-4",   "uniform-4", "uniform-2",   "group-4",      "group-2", "pyramid",     "streamingllm",
          "h2o"};
}

CacheConfig preset(const std::string& name) {
  // GEAR's reported configurations share everything but the backbone and the parts used.
  auto gear_family = [&](CacheMethod m, Backbone b, int bits) {
    CacheConfig c = method_defaults(m);
    c.backbone = b, c.bits = bits, c.group = 64, c.stream_gap = 64, c.sparsity = 2.0;
    c.prefill_rank_k = c.prefill_rank_v = 4, c.block_rank_k = c.block_rank_v = 2, c.power_iters = 3;
    return c;
  };
  CacheConfig c;
  if (name == "full") c = method_defaults(CacheMethod::Full);
  else if (name == "kcvt-4") c = gear_family(CacheMethod::Quant, Backbone::Kcvt, 4);
  else if (name == "gear-kcvt-4") c = gear_family(CacheMethod::Gear, Backbone::Kcvt, 4);
  else if (name == "gearl-kcvt-4") c = gear_family(CacheMethod::GearL, Backbone::Kcvt, 4);
  else if (name == "kivi-2") c = gear_family(CacheMethod::Quant, Backbone::Kivi, 2);
  else if (name == "gear-kivi-2") c = gear_family(CacheMethod::Gear, Backbone::Kivi, 2);
  else if (name == "gearl-kivi-2") c = gear_family(CacheMethod::GearL, Backbone::Kivi, 2);
  else if (name == "kivi-4") (c = method_defaults(CacheMethod::Kivi)).bits = 4;
  else if (name == "uniform-4") c = method_defaults(CacheMethod::Uniform);
  else if (name == "uniform-2") (c = method_defaults(CacheMethod::Uniform)).bits = 2;
  else if (name == "group-4") c = method_defaults(CacheMethod::Groupwise);
  else if (name == "group-2") (c = method_defaults(CacheMethod::Groupwise)).bits = 2;
  else if (name == "pyramid") c = method_defaults(CacheMethod::Pyramid);
  else if (name == "streamingllm") c = method_defaults(CacheMethod::StreamingLLM);
  else if (name == "h2o") c = method_defaults(CacheMethod::H2O);
  else {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    fail("cache settings: unknown preset \"" + name + "\" (presets: " + known + ")");
  }
  c.preset = name;
  return c;
}

const std::vector<std::string>& option_names() {
  static const std::vector<std::string> names = {
      "cache",       "preset", "backbone",  "bits",          "group", "group-axis",     "rank",   "prefill-rank", "block-rank",
      "k-rank",      "v-rank", "rank-ratio", "sparsity",     "power-iters", "stream-gap", "exact-svd", "power-seed",
      "dequant-cache", "impl", "beta", "l0",         "sinks",        "recent",    "window", "pool",         "heavy",
      "compress-prefill"};
  return names;
}

void set_option(CacheConfig& c, const std::string& name, const std::string& v) {
  auto integer = [&] { return parse_int(name, v); };
  auto real = [&] { return parse_real(name, v); };
  if (name == "cache") {
    const auto names = preset_names();
    c = std::find(names.begin(), names.end(), v) != names.end() ? preset(v) : method_defaults(parse_method(v));
  } else if (name == "preset") {
    c = preset(v);
  } else if (name == "backbone") {
    const Backbone b = parse_backbone(v);
    require(!fixed_backbone(c.method) || b == c.backbone,
            std::string("cache settings: --cache ") + method_name(c.method) + " always uses the " +
                backbone_name(c.backbone) + " backbone (use --cache quant|gear-l|gear to choose one)");
    c.backbone = b;
  } else if (name == "bits") c.bits = int(integer());
  else if (name == "group") c.group = integer();
  else if (name == "group-axis") {
    require(v == "token" || v == "channel", "cache settings: group-axis must be token or channel, got \"" + v + "\"");
    c.group_axis = v == "token" ? QuantAxis::Token : QuantAxis::Channel;
  }
  else if (name == "rank") c.prefill_rank_k = c.prefill_rank_v = c.block_rank_k = c.block_rank_v = integer();
  else if (name == "prefill-rank") c.prefill_rank_k = c.prefill_rank_v = integer();
  else if (name == "block-rank") c.block_rank_k = c.block_rank_v = integer();
  else if (name == "k-rank") c.prefill_rank_k = c.block_rank_k = integer();
  else if (name == "v-rank") c.prefill_rank_v = c.block_rank_v = integer();
  else if (name == "rank-ratio") c.rank_ratio = real();
  else if (name == "sparsity") c.sparsity = real();
  else if (name == "power-iters") c.power_iters = int(integer());
  else if (name == "stream-gap") c.stream_gap = integer();
  else if (name == "exact-svd") c.exact_svd = parse_bool(name, v);
  else if (name == "power-seed") c.seed = uint64_t(integer());
  else if (name == "dequant-cache") c.dequant_cache = parse_bool(name, v);
  else if (name == "impl") c.impl = parse_impl(v);
  else if (name == "beta") c.pyramid.beta = real();
  else if (name == "l0") c.pyramid.l0 = integer();
  else if (name == "sinks") c.pyramid.sinks = c.eviction.sinks = integer();
  else if (name == "recent") c.pyramid.recent = c.eviction.recent = integer();
  else if (name == "window") c.pyramid.window = integer();
  else if (name == "pool") c.pyramid.pool = parse_pool(v);
  else if (name == "heavy") c.eviction.heavy = integer();
  else if (name == "compress-prefill") c.pyramid.compress_prefill = parse_bool(name, v);
  else {
    std::string known;
    for (const auto& n : option_names()) known += (known.empty() ? "" : ", ") + n;
    fail("cache settings: unknown setting \"" + name + "\" (known: " + known + ")");
  }
}

void validate(const CacheConfig& c, int n_layers, int n_kv_heads, int head_dim) {
  const std::string m = std::string("cache settings (") + method_name(c.method) + "): ";
  if (c.quantized()) {
    require(c.bits == 2 || c.bits == 3 || c.bits == 4 || c.bits == 8,
            m + "bits must be 2, 3, 4 or 8, got " + std::to_string(c.bits));
    require(c.stream_gap >= 1, m + "streaming gap must be at least 1 token, got " + std::to_string(c.stream_gap));
    require(c.group >= 1, m + "group size must be positive, got " + std::to_string(c.group));
    // A group at least as long as its axis means "the whole axis"; a shorter one must divide it:
    // token-wise rows are the hidden K/V vector, channel-wise rows the tokens of a streaming block.
    const int64_t hidden = int64_t(n_kv_heads) * head_dim;
    for (const QuantSpec& q : {c.key_spec(), c.value_spec()}) {
      if (q.group == 0) continue;
      require(q.axis != QuantAxis::Token || q.group >= hidden || hidden % q.group == 0,
              m + "group size " + std::to_string(q.group) + " does not divide the hidden K/V vector of " +
                  std::to_string(hidden) + " channels");
      require(q.axis != QuantAxis::Channel || q.group >= c.stream_gap || c.stream_gap % q.group == 0,
              m + "group size " + std::to_string(q.group) + " does not divide the streaming block of " +
                  std::to_string(c.stream_gap) + " tokens (channel-wise groups run along tokens)");
    }
  }
  if (c.has_low_rank()) {
    for (int64_t r : {c.prefill_rank_k, c.prefill_rank_v, c.block_rank_k, c.block_rank_v}) {
      require(r >= 0, m + "rank must not be negative, got " + std::to_string(r));
      require(r <= head_dim, m + "rank " + std::to_string(r) + " is larger than the head dimension " +
                                 std::to_string(head_dim));
    }
    require(c.rank_ratio >= 0 && c.rank_ratio <= 1, m + "rank ratio must be in [0, 1], got " + num(c.rank_ratio));
    require(c.power_iters >= 1, m + "power iterations must be at least 1, got " + std::to_string(c.power_iters));
  }
  if (c.has_sparse())
    require(c.sparsity >= 0 && c.sparsity <= 50, m + "sparsity must be in [0, 50] %, got " + num(c.sparsity));
  if (c.method == CacheMethod::Pyramid) validate(c.pyramid, n_layers);
  if (c.method == CacheMethod::StreamingLLM || c.method == CacheMethod::H2O) validate(c.eviction);
}

nlohmann::json to_json(const CacheConfig& c) {
  nlohmann::json j;
  j["cache"] = method_name(c.method);
  if (!c.preset.empty()) j["preset"] = c.preset;
  if (c.quantized()) {
    j["backbone"] = backbone_name(c.backbone);
    j["bits"] = c.bits;
    j["group"] = c.group;
    if (c.backbone == Backbone::Groupwise) j["group-axis"] = axis_name(c.group_axis);
    j["stream-gap"] = c.stream_gap;
    j["dequant-cache"] = c.dequant_cache;
    j["impl"] = impl_name(c.impl);
  }
  if (c.has_low_rank()) {
    j["prefill-rank-k"] = c.prefill_rank_k;
    j["prefill-rank-v"] = c.prefill_rank_v;
    j["block-rank-k"] = c.block_rank_k;
    j["block-rank-v"] = c.block_rank_v;
    j["rank-ratio"] = c.rank_ratio;
    j["power-iters"] = c.power_iters;
    j["exact-svd"] = c.exact_svd;
    j["power-seed"] = c.seed;
  }
  if (c.has_sparse()) j["sparsity"] = c.sparsity;
  if (c.method == CacheMethod::Pyramid) {
    j["l0"] = c.pyramid.l0;
    j["beta"] = c.pyramid.beta;
    j["sinks"] = c.pyramid.sinks;
    j["recent"] = c.pyramid.recent;
    j["window"] = c.pyramid.window;
    j["pool"] = pool_name(c.pyramid.pool);
    j["compress-prefill"] = c.pyramid.compress_prefill;
  }
  if (c.method == CacheMethod::StreamingLLM || c.method == CacheMethod::H2O) {
    j["sinks"] = c.eviction.sinks;
    j["recent"] = c.eviction.recent;
    j["heavy"] = c.eviction.heavy;
  }
  return j;
}

CacheConfig config_from_json(const nlohmann::json& j) {
  require(j.is_object(), "cache settings: JSON must be an object of settings, got " + j.dump());
  CacheConfig c = preset(kDefaultPreset);
  auto text = [](const std::string& key, const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
    require(v.is_number(), "cache settings: \"" + key + "\" must be a number, string or boolean, got " + v.dump());
    return v.is_number_integer() ? std::to_string(v.get<long long>()) : num(v.get<double>());
  };
  // The method or preset first: it resets everything else to its defaults.
  for (const char* first : {"cache", "preset"})
    if (j.contains(first)) set_option(c, first, text(first, j.at(first)));
  for (const auto& [key, v] : j.items()) {
    if (key == "cache" || key == "preset") continue;
    // to_json writes the four ranks separately; accept them back.
    if (key == "prefill-rank-k") c.prefill_rank_k = parse_int(key, text(key, v));
    else if (key == "prefill-rank-v") c.prefill_rank_v = parse_int(key, text(key, v));
    else if (key == "block-rank-k") c.block_rank_k = parse_int(key, text(key, v));
    else if (key == "block-rank-v") c.block_rank_v = parse_int(key, text(key, v));
    else set_option(c, key, text(key, v));
  }
  return c;
}

std::string describe(const CacheConfig& c) {
  std::ostringstream os;
  if (!c.preset.empty()) os << c.preset << ": ";
  os << method_name(c.method);
  if (c.quantized()) {
    os << ", " << backbone_name(c.backbone) << " " << c.bits << "-bit";
    if (c.backbone == Backbone::Kivi || c.backbone == Backbone::Groupwise) os << " g" << c.group;
    if (c.backbone == Backbone::Groupwise) os << " along " << axis_name(c.group_axis) << "s";
  }
  if (c.has_sparse()) os << ", sparsity " << c.sparsity << "%";
  if (c.has_low_rank()) {
    if (c.rank_ratio > 0) os << ", rank ratio " << c.rank_ratio;
    else
      os << ", rank " << c.prefill_rank_k << "/" << c.block_rank_k << " (k) " << c.prefill_rank_v << "/"
         << c.block_rank_v << " (v)";
    os << ", " << (c.exact_svd ? "exact SVD" : std::to_string(c.power_iters) + " power iters");
  }
  if (c.quantized()) os << ", gap " << c.stream_gap;
  if (c.quantized() && c.impl != CacheImpl::Auto) os << ", impl " << impl_name(c.impl);
  if (c.method == CacheMethod::Pyramid)
    os << ", L0 " << c.pyramid.l0 << ", beta " << c.pyramid.beta << ", sinks " << c.pyramid.sinks << ", recent "
       << c.pyramid.recent << ", window " << c.pyramid.window << ", " << pool_name(c.pyramid.pool) << " pool";
  if (c.method == CacheMethod::StreamingLLM || c.method == CacheMethod::H2O) {
    os << ", sinks " << c.eviction.sinks << ", recent " << c.eviction.recent;
    if (c.method == CacheMethod::H2O) os << ", heavy " << c.eviction.heavy;
  }
  return os.str();
}

}  // namespace gear
