#include "core/cache/gear_cuda_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/bench/device_memory.h"
#include "core/cache/attention.h"
#include "core/compression/low_rank.h"
#include "core/compression/quantizer.h"
#include "core/model/cuda_ops.h"
#include "core/util/error.h"
#include "kernels/reference.h"

namespace gear {
namespace {

using kernels::CompressedKV;
using kernels::DType;

std::string str(int64_t v) { return std::to_string(v); }

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    default: fail(std::string("gear cuda cache: unsupported dtype ") + c10::toString(t));
  }
}

int64_t nbytes(const at::Tensor& t) { return t.defined() ? t.numel() * int64_t(t.element_size()) : 0; }

template <class T> T* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? static_cast<T*>(t.data_ptr()) : nullptr;
}

bool sparse_on(const CacheConfig& c) { return c.has_sparse() && c.sparsity > 0; }

// The value group as core applies it: a group at least as long as the hidden vector is the whole vector.
int64_t value_group(const CacheConfig& c, int nkv, int hd) {
  const int64_t hidden = int64_t(nkv) * hd, g = c.value_spec().group;
  return g == 0 || g >= hidden ? hidden : g;
}

// The largest rank GearCache can give a block with these settings (R of the layout).
int64_t max_rank(const CacheConfig& c, int hd) {
  if (!c.has_low_rank()) return 0;
  if (c.rank_ratio > 0) return resolve_rank(0, c.rank_ratio, hd, hd);  // min(T, hd) is at most hd
  return std::max({c.prefill_rank_k, c.prefill_rank_v, c.block_rank_k, c.block_rank_v});
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sizes of the layout (no pointers) for a batch; tile_cap at least 1 so that a check without a known
// capacity still validates the rest. The key tile G is CacheConfig::prompt_alignment: KIVI's key group, or for KCVT's
// keys (one range per channel over a whole block: CacheConfig::block_wide_keys) the streaming gap, every block being
// whole gaps, each tile holding its block's scale / zero.
CompressedKV layout_sizes(const CacheConfig& c, int batch, int nkv, int hd, int64_t capacity, int64_t sparse_cap) {
  CompressedKV kv;
  kv.B = batch, kv.nkv = nkv, kv.hd = hd, kv.bits = c.bits;
  kv.group = int(c.prompt_alignment());
  // A group wider than a head spans whole heads (kernels.h: v_span); each head of it stores its scale / zero.
  const int64_t vg = value_group(c, nkv, hd);
  kv.v_group = int(std::min<int64_t>(vg, hd));
  kv.v_span = vg > hd ? int(vg / hd) : 1;
  kv.rank = int(max_rank(c, hd));
  kv.tile_cap = std::max<int64_t>(1, kv.group > 0 ? ceil_div(capacity, kv.group) : 1);
  // Low-rank blocks: a row has one per compressed block (the prompt's, then one per n_b tokens), at most one
  // per tile; start with a few and grow (grow_low_rank) rather than reserve a B for every possible tile.
  kv.lr_cap = kv.rank > 0 ? std::min<int64_t>(kv.tile_cap, 4) : 0;
  kv.sparse_cap = sparse_cap;
  kv.buf_cap = int(std::max<int64_t>(c.stream_gap, kv.group));
  return kv;
}

// What keeps these settings off the layout ("" when nothing).
std::string layout_problem(const CacheConfig& c, int nkv, int hd, int64_t capacity) {
  if (!c.quantized()) return std::string("method ") + method_name(c.method) + " does not quantize";
  const QuantSpec k = c.key_spec(), v = c.value_spec();
  const int64_t G = c.prompt_alignment();
  const bool key_group_ok = G == 16 || G == 32 || G == 64 || G == 128;
  if (k.axis != QuantAxis::Channel)
    return std::string("keys must be quantized per channel; the ") + backbone_name(c.backbone) +
           " backbone quantizes them along the " + axis_name(k.axis) + " axis";
  if (!key_group_ok)
    return c.block_wide_keys()
               ? "the " + std::string(backbone_name(c.backbone)) + " backbone's key tiles are the streaming gap, " + str(G) +
                     " tokens: it must be 16, 32, 64 or 128"
               : "keys must be quantized per channel in groups of 16, 32, 64 or 128 tokens, not " + str(k.group);
  if (v.axis != QuantAxis::Token)
    return std::string("values must be quantized per token; the ") + backbone_name(c.backbone) +
           " backbone quantizes them along the " + axis_name(v.axis) + " axis";
  const int64_t vg = value_group(c, nkv, hd);
  if (vg % 8 != 0 || (hd % vg != 0 && (vg % hd != 0 || nkv % (vg / hd) != 0)))
    return "value groups of " + str(vg) + " channels are not supported (a multiple of 8 dividing the head dim " +
           str(hd) + ", or whole heads)";
  if (c.bits != 2 && c.bits != 4 && c.bits != 8) return "bits " + str(c.bits) + " not supported (2, 4 or 8)";
  if (c.stream_gap % G != 0)
    return "streaming gap " + str(c.stream_gap) + " is not a multiple of the key group " + str(G);
  const int64_t R = max_rank(c, hd);
  if (R > 8) return "rank " + str(R) + " not supported (at most 8)";
  if (sparse_on(c)) {
    const int per_value = kernels::outliers_per_side(int64_t(nkv) * hd, c.sparsity);
    const int per_key = kernels::outliers_per_side(capacity, c.sparsity);
    if (std::max(per_value, per_key) > 2048)
      return "sparsity " + std::to_string(c.sparsity) + "% needs more than 2048 outliers per side of a vector";
  }
  return kernels::compressed_kv_problem(layout_sizes(c, 1, nkv, hd, capacity, 0));
}

}  // namespace

void* KernelWorkspace::get(std::size_t bytes, const at::TensorOptions& like) {
  if (bytes == 0) return nullptr;
  // `like` may name the device without an index ("cuda"); the buffer's device always has one.
  const at::Device want = like.device();
  const bool elsewhere = buffer.defined() && (buffer.device().type() != want.type() ||
                                              (want.has_index() && buffer.device().index() != want.index()));
  if (!buffer.defined() || elsewhere || std::size_t(buffer.numel()) < bytes) {
    // Geometric growth: a growing context reallocates O(log n) times.
    const int64_t grown = std::max<int64_t>(int64_t(bytes), buffer.defined() && !elsewhere ? 2 * buffer.numel() : 0);
    buffer = at::empty({grown}, at::TensorOptions().device(like.device()).dtype(at::kByte));
  }
  return buffer.data_ptr();
}

bool GearCudaCache::fused_attention(int head_dim) { return kernels::attention_head_dim_ok(head_dim); }

std::string GearCudaCache::supports(const CacheConfig& c, int head_dim, at::Device device, at::ScalarType dtype,
                                    int n_kv_heads, int64_t capacity) {
  if (!device.is_cuda()) return "the model is on " + device.str() + ", not a CUDA device";
  if (dtype != at::kHalf && dtype != at::kBFloat16)
    return std::string("the model's dtype is ") + c10::toString(dtype) + " (the kernels take f16 or bf16)";
  const std::string p = layout_problem(c, std::max(n_kv_heads, 1), head_dim, capacity);
  if (!p.empty()) return p;
#ifdef GEARLAB_WITH_CUDA
  return "";
#else
  return "gearlab was built without CUDA";
#endif
}

GearCudaCache::GearCudaCache(int layer, int batch, int n_kv_heads, int head_dim, int64_t capacity,
                             at::TensorOptions options, const CacheConfig& config,
                             std::shared_ptr<KernelWorkspace> workspace, int64_t sparse_cap)
    : config_(config), layer_(layer), batch_(batch), nkv_(n_kv_heads), hd_(head_dim), capacity_(capacity),
      options_(options), rows_(batch), workspace_(workspace ? std::move(workspace) : std::make_shared<KernelWorkspace>()) {
  require(config.quantized(), std::string("gear cuda cache: method ") + method_name(config.method) + " does not quantize");
  require(batch > 0 && n_kv_heads > 0 && head_dim > 0 && capacity > 0,
          "gear cuda cache: bad shape (batch " + str(batch) + ", " + str(n_kv_heads) + " kv heads of " + str(head_dim) +
              ", capacity " + str(capacity) + ")");
  cuda_ = options.device().is_cuda();
  const at::ScalarType dt = options.dtype().toScalarType();
  const std::string why = cuda_ ? supports(config, head_dim, options.device(), dt, n_kv_heads, capacity)
                                : layout_problem(config, n_kv_heads, head_dim, capacity);
  require(why.empty(), "gear cuda cache: " + why);
  name_ = config.preset.empty() ? method_name(config.method) : config.preset;

  kv_ = layout_sizes(config, batch, n_kv_heads, head_dim, capacity, 0);
  const int64_t B = batch, H = n_kv_heads, hd = head_dim, G = kv_.group, R = kv_.rank;
  const int64_t tiles = kv_.tile_cap, tokens = kv_.token_cap();
  // Outlier pools (one capacity per (row, head), both sides): keys hold exactly hd * 2k entries per head per
  // block (every channel of the head has 2k), at most hd * 2 * floor(tokens * s / 200) (+ one k of slack for
  // rounding) over the row; values T * 2k per block over all heads, split among them by the data. Values start
  // at the per-head average + 4 standard deviations of a head's count if the outliers fell on heads at random
  // (binomial: ~sqrt(average)) + 64: enough for evenly spread outliers at any head count; a model whose outliers
  // crowd into a few heads overflows that once, at its first long block, and the pools grow to the count the
  // kernel reports (store_outliers). The old start, 1.25 x the average + 1024, reserved ~30 % more than evenly
  // spread outliers use (~38 MB a row of Llama-2-7B at 4k tokens).
  if (sparse_on(config)) {
    const int64_t k_key = kernels::outliers_per_side(tokens, config.sparsity);
    const int64_t k_val = kernels::outliers_per_side(H * hd, config.sparsity);
    const int64_t keys = k_key > 0 ? hd * 2 * (k_key + 1) : 0, values = tokens * 2 * k_val;
    sparse_limit_ = std::max(keys, values);
    const int64_t avg = ceil_div(values, H);
    const int64_t even = avg + 4 * static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(avg)))) + 64;
    if (sparse_limit_ > 0) kv_.sparse_cap = kernels::sparse_cap_in_chunks(sparse_cap > 0 ? sparse_cap : std::max(keys, std::min(values, even)));
  }
  const auto dev = at::TensorOptions().device(options.device());
  const auto u8 = dev.dtype(at::kByte), f16 = dev.dtype(at::kHalf), i32 = dev.dtype(at::kInt), i16 = dev.dtype(at::kShort);
  // Zeroed: nothing the kernels may stage past a row's end is ever NaN.
  a_.k_codes = at::zeros({B, H, tiles, hd, G * kv_.bits / 8}, u8);
  a_.k_scale = at::zeros({B, H, tiles, hd}, f16);
  a_.k_zero = at::zeros({B, H, tiles, hd}, f16);
  a_.v_codes = at::zeros({B, H, tokens, hd * kv_.bits / 8}, u8);
  a_.v_scale = at::zeros({B, H, tokens, kv_.value_groups()}, f16);
  a_.v_zero = at::zeros({B, H, tokens, kv_.value_groups()}, f16);
  if (R > 0) {
    a_.lr_block = at::zeros({B, tiles}, i32);
    a_.k_lr_a = at::zeros({B, H, tokens, R}, f16);
    a_.v_lr_a = at::zeros({B, H, tokens, R}, f16);
    a_.k_lr_b = at::zeros({B, H, kv_.lr_cap, R, hd}, f16);
    a_.v_lr_b = at::zeros({B, H, kv_.lr_cap, R, hd}, f16);
  }
  if (kv_.sparse_cap > 0) {
    a_.k_sp_off = at::zeros({B, H, tiles + 1}, i32);
    a_.v_sp_off = at::zeros({B, H, tiles + 1}, i32);
    a_.k_sp_pos = at::zeros({B, H, kv_.sparse_cap}, i16);
    a_.v_sp_pos = at::zeros({B, H, kv_.sparse_cap}, i16);
    // On the GPU each outlier is kept once, as its fp16 correction (outlier - dequant - low rank: what the
    // attention's outlier passes add), from which reconstruct() recovers the value within one fp16 ulp: 4 bytes
    // an entry, as the CPU's position + value (kernels.h, "corrections only"; float32 corrections, exact, made a
    // GEAR row of Llama-2-7B at 4k tokens ~40 MB larger). The CPU references keep the values.
    if (cuda_) {
      a_.k_sp_corr = at::zeros({B, H, kv_.sparse_cap}, options_.dtype(at::kHalf));
      a_.v_sp_corr = at::zeros({B, H, kv_.sparse_cap}, options_.dtype(at::kHalf));
    } else {
      a_.k_sp_val = at::zeros({B, H, kv_.sparse_cap}, f16);
      a_.v_sp_val = at::zeros({B, H, kv_.sparse_cap}, f16);
    }
  }
  a_.k_buf = at::zeros({B, H, kv_.buf_cap, hd}, f16);
  a_.v_buf = at::zeros({B, H, kv_.buf_cap, hd}, f16);
  a_.n_comp = at::zeros({B}, i32);
  a_.n_buf = at::zeros({B}, i32);
  a_.overflow = at::zeros({2}, i32);
  if (cuda_ && kv_.sparse_cap > 0) flags_read_.reset(kernels::async_read_create(2), kernels::async_read_free);
  bind();
  const std::string p = kernels::compressed_kv_problem(kv_);
  require(p.empty(), "gear cuda cache: " + p);
}

void GearCudaCache::bind() {
  kv_.k_codes = ptr<uint8_t>(a_.k_codes);
  kv_.k_scale = ptr<uint16_t>(a_.k_scale);
  kv_.k_zero = ptr<uint16_t>(a_.k_zero);
  kv_.v_codes = ptr<uint8_t>(a_.v_codes);
  kv_.v_scale = ptr<uint16_t>(a_.v_scale);
  kv_.v_zero = ptr<uint16_t>(a_.v_zero);
  kv_.lr_block = ptr<int32_t>(a_.lr_block);
  kv_.k_lr_a = ptr<uint16_t>(a_.k_lr_a);
  kv_.k_lr_b = ptr<uint16_t>(a_.k_lr_b);
  kv_.v_lr_a = ptr<uint16_t>(a_.v_lr_a);
  kv_.v_lr_b = ptr<uint16_t>(a_.v_lr_b);
  kv_.k_sp_off = ptr<int32_t>(a_.k_sp_off);
  kv_.k_sp_pos = ptr<uint16_t>(a_.k_sp_pos);
  kv_.k_sp_val = ptr<uint16_t>(a_.k_sp_val);
  kv_.v_sp_off = ptr<int32_t>(a_.v_sp_off);
  kv_.v_sp_pos = ptr<uint16_t>(a_.v_sp_pos);
  kv_.v_sp_val = ptr<uint16_t>(a_.v_sp_val);
  kv_.k_sp_corr = ptr<uint16_t>(a_.k_sp_corr);
  kv_.v_sp_corr = ptr<uint16_t>(a_.v_sp_corr);
  kv_.k_buf = ptr<uint16_t>(a_.k_buf);
  kv_.v_buf = ptr<uint16_t>(a_.v_buf);
  kv_.n_comp = ptr<int32_t>(a_.n_comp);
  kv_.n_buf = ptr<int32_t>(a_.n_buf);
}

// On CUDA from pinned memory without waiting: a pageable copy is followed by a stream sync, which made the host
// wait for the GPU at every compression (the caching host allocator keeps the block until the copy is done).
at::Tensor GearCudaCache::ints(const std::vector<int32_t>& v) const {
  const at::Tensor host = at::tensor(at::ArrayRef<int32_t>(v), at::TensorOptions().dtype(at::kInt));
  if (!cuda_) return host.to(options_.device());
  return host.pin_memory().to(options_.device(), at::kInt, /*non_blocking=*/true);
}

// The device lengths from the host's (after a prefill, a compression or a clear; a decode step adds 1 on
// the device instead, without a host round trip).
void GearCudaCache::upload_lengths() {
  std::vector<int32_t> c(rows_.size()), b(rows_.size());
  for (size_t i = 0; i < rows_.size(); ++i) c[i] = int32_t(rows_[i].n_comp), b[i] = int32_t(rows_[i].n_buf);
  a_.n_comp.copy_(ints(c));
  a_.n_buf.copy_(ints(b));
}

// GearCache::settings' rank for a block of `tokens` tokens.
int64_t GearCudaCache::ranks_for(bool key, bool prefill, int64_t tokens) const {
  if (!config_.has_low_rank()) return 0;
  const int64_t r = prefill ? (key ? config_.prefill_rank_k : config_.prefill_rank_v)
                            : (key ? config_.block_rank_k : config_.block_rank_v);
  return resolve_rank(r, config_.rank_ratio, tokens, hd_);
}

namespace {

// The kernels on CUDA tensors, their float64 references on CPU tensors. Sources x are [n, nkv, x_cap, hd]
// contiguous; dst_row / dst_tile int32 [n] on the same device.
struct Ops {
  bool cuda;
  void* stream;

  // whole_block: keys with one range per channel over the block (KCVT).
  void quantize(bool key, const at::Tensor& x, int64_t x_cap, int n, int64_t T, const CompressedKV& kv,
                const at::Tensor& rows, const at::Tensor& tiles, bool whole_block) const {
    const int32_t* r = rows.data_ptr<int32_t>();
    const int32_t* t = tiles.data_ptr<int32_t>();
    if (cuda) {
      const at::Tensor xc = x.contiguous();
      if (key)
        kernels::quantize_keys(dtype_of(xc.scalar_type()), xc.data_ptr(), x_cap, n, int(T), kv, r, t, stream, whole_block);
      else
        kernels::quantize_values(dtype_of(xc.scalar_type()), xc.data_ptr(), x_cap, n, int(T), kv, r, t, stream);
      return;
    }
    const at::Tensor xd = x.to(at::kDouble).contiguous();
    if (key)
      kernels::ref::quantize_keys(xd.data_ptr<double>(), x_cap, n, int(T), kv, r, t, whole_block);
    else
      kernels::ref::quantize_values(xd.data_ptr<double>(), x_cap, n, int(T), kv, r, t);
  }

  // float32 [n, nkv, T, hd]: the Q part of those tiles.
  at::Tensor dequantize(bool key, int n, int64_t T, const CompressedKV& kv, const at::Tensor& rows,
                        const at::Tensor& tiles) const {
    const int32_t* r = rows.data_ptr<int32_t>();
    const int32_t* t = tiles.data_ptr<int32_t>();
    if (cuda) {
      at::Tensor out = at::empty({n, kv.nkv, T, kv.hd}, rows.options().dtype(at::kFloat));
      auto f = key ? kernels::dequantize_keys : kernels::dequantize_values;
      f(kv, DType::F32, out.data_ptr(), T, n, int(T), r, t, stream);
      return out;
    }
    at::Tensor out = at::empty({n, kv.nkv, T, kv.hd}, at::kDouble);
    auto f = key ? kernels::ref::dequantize_keys : kernels::ref::dequantize_values;
    f(kv, out.data_ptr<double>(), T, n, int(T), r, t);
    return out.to(at::kFloat);
  }

  // The outliers (extract's values / index) written back into deq, float32 [n, nkv, T, hd] contiguous, in place at
  // their flat offsets ((i*nkv + h)*T + t)*hd + d: a permuted copy of the block to scatter along its rows was one
  // more float32 block at a prompt's peak (62 MB at 3.8k tokens of 7B). On CUDA one launch (the ATen ops were most
  // of a compressing step's host time).
  void scatter(bool key, const at::Tensor& values, const at::Tensor& index, int n, int64_t T, int nkv, int hd, int k,
               at::Tensor& deq) const {
    if (cuda) {
      kernels::scatter_outliers(static_cast<const uint16_t*>(values.data_ptr()), index.data_ptr<int32_t>(), n, int(T), nkv,
                                hd, key, k, deq.data_ptr<float>(), stream);
      return;
    }
    const int64_t H = nkv;
    const at::Tensor v = values.view(at::kHalf).to(at::kFloat), idx = index.to(at::kLong);  // [n, rows, 2k]
    const at::Tensor base = at::arange(n, idx.options()).view({n, 1, 1}) * (H * T * hd);
    at::Tensor flat;
    if (key) {  // rows = channels h*hd + d, index = token
      const at::Tensor row = at::arange(H * hd, idx.options()).view({1, H * hd, 1});
      flat = base + at::div(row, hd, "trunc") * (T * hd) + row.remainder(hd) + idx * hd;
    } else {  // rows = tokens, index = h*hd + d
      const at::Tensor t = at::arange(T, idx.options()).view({1, T, 1});
      flat = base + at::div(idx, hd, "trunc") * (T * hd) + idx.remainder(hd) + t * hd;
    }
    deq.view({-1}).index_put_({flat.view({-1})}, v.view({-1}));
  }

  // Per-vector outliers: values (fp16 bits as int16) / index int32 [n, rows, 2k], and the inliers
  // [n, nkv, T, hd] (float32 on CUDA; float64 holding float32 values on the CPU).
  void extract(bool key, const at::Tensor& x, int64_t x_cap, int n, int64_t T, int nkv, int hd, int k, at::Tensor& values,
               at::Tensor& index, at::Tensor& inliers) const {
    const int64_t rows = key ? int64_t(nkv) * hd : T;
    const auto on = x.options();
    values = at::empty({n, rows, 2 * k}, on.dtype(at::kShort));
    index = at::empty({n, rows, 2 * k}, on.dtype(at::kInt));
    if (cuda) {
      const at::Tensor xc = x.contiguous();
      inliers = at::empty({n, nkv, T, hd}, on.dtype(at::kFloat));
      kernels::extract_outliers(dtype_of(xc.scalar_type()), xc.data_ptr(), x_cap, n, int(T), nkv, hd, key, k,
                                static_cast<uint16_t*>(values.data_ptr()), index.data_ptr<int32_t>(),
                                inliers.data_ptr<float>(), stream);
      return;
    }
    const at::Tensor xd = x.to(at::kDouble).contiguous();
    inliers = at::empty({n, nkv, T, hd}, at::kDouble);
    kernels::ref::extract_outliers(xd.data_ptr<double>(), x_cap, n, int(T), nkv, hd, key, k,
                                   static_cast<uint16_t*>(values.data_ptr()), index.data_ptr<int32_t>(),
                                   inliers.data_ptr<double>());
  }

  // The sparse store; non-zero when a (row, head) pool overflowed (its entries are then incomplete): on CUDA the
  // entries the fullest pool would have needed, on the CPU reference -1 (it stops at the first). On CUDA with
  // read == false the verdict stays in overflow[key ? 0 : 1] on the device (0 is returned) for the caller to
  // read once, after the rest of the block's work is queued.
  int64_t sparse(bool key, const CompressedKV& kv, const at::Tensor& values, const at::Tensor& index, int n, int64_t T,
              int k, const at::Tensor& rows, const at::Tensor& tiles, at::Tensor& overflow, bool read) const {
    const uint16_t* v = k > 0 ? static_cast<const uint16_t*>(values.data_ptr()) : nullptr;
    const int32_t* i = k > 0 ? index.data_ptr<int32_t>() : nullptr;
    if (cuda) {
      at::Tensor flag = overflow.narrow(0, key ? 0 : 1, 1);
      flag.zero_();
      kernels::sparse_to_tiles(kv, key, v, i, n, int(T), k, rows.data_ptr<int32_t>(), tiles.data_ptr<int32_t>(),
                               flag.data_ptr<int32_t>(), stream);
      return read ? flag.item<int32_t>() : 0;  // a host sync
    }
    try {
      kernels::ref::sparse_to_tiles(kv, key, v, i, n, int(T), k, rows.data_ptr<int32_t>(), tiles.data_ptr<int32_t>());
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()).find("pass sparse_cap") == std::string::npos) throw;
      return -1;  // the reference throws where the kernel flags
    }
    return 0;
  }
};

}  // namespace

void GearCudaCache::grow_low_rank(int64_t at_least) {
  const int64_t old = kv_.lr_cap;
  const int64_t cap = std::min<int64_t>(kv_.tile_cap, std::max(at_least, 2 * old));
  for (at::Tensor* t : {&a_.k_lr_b, &a_.v_lr_b}) {
    at::Tensor grown = at::zeros({t->size(0), t->size(1), cap, t->size(3), t->size(4)}, t->options());
    grown.narrow(2, 0, old).copy_(*t);  // every (row, head) keeps its blocks at the same indices
    *t = grown;
  }
  kv_.lr_cap = cap;
  bind();
}

// Grows by at least an eighth (geometric: a pool that keeps overflowing costs O(log) copies), never past what a
// pool can ever need; each growth copies one layer's pools, a transient of their size.
void GearCudaCache::grow_sparse(int64_t at_least) {
  const int64_t old = kv_.sparse_cap;
  const int64_t cap = kernels::sparse_cap_in_chunks(std::max({at_least, std::min(sparse_limit_, old + old / 8), old + 1}));
  for (at::Tensor* t : {&a_.k_sp_pos, &a_.k_sp_val, &a_.v_sp_pos, &a_.v_sp_val, &a_.k_sp_corr, &a_.v_sp_corr}) {
    if (!t->defined()) continue;  // the corrections: CUDA only
    at::Tensor grown = at::zeros({t->size(0), t->size(1), cap}, t->options());
    grown.narrow(2, 0, old).copy_(*t);  // every (row, head) pool keeps its entries at the same indices
    *t = grown;
  }
  kv_.sparse_cap = cap;
  bind();
}

void GearCudaCache::store_outliers(bool key, const at::Tensor& values, const at::Tensor& index, int n, int64_t T,
                                   int k, const at::Tensor& dst_row, const at::Tensor& dst_tile, bool deferred, int64_t need) {
  const Ops ops{cuda_, cuda_ ? cuda_ops::current_stream() : nullptr};
  // deferred (CUDA): the caller reads the flag later and calls again with deferred = false and the flag's `need`
  // on overflow.
  if (need == 0) need = ops.sparse(key, kv_, values, index, n, T, k, dst_row, dst_tile, a_.overflow, !deferred);
  if (need == 0) return;
  // A pool overflowed: grow every pool so that this block fits wherever it starts, then store the block again.
  // The block's start offsets were left as they were, so the second call redoes exactly the same tiles. The
  // kernel reports what the fullest pool needed: grow to that and a sixteenth more (the blocks that follow
  // bring more of the same), never past what a pool can hold after this block — its old entries (each pool
  // held at most the old capacity) plus the block's most per head: keys hd·2k (2k per channel), values T·2k
  // (every token's in one head) — the CPU reference's growth, which does not learn the need.
  const int64_t worst = kv_.sparse_cap + (key ? hd_ : T) * 2 * k;
  grow_sparse(need > 0 ? std::min(worst, need + need / 16) : worst);
  require(ops.sparse(key, kv_, values, index, n, T, k, dst_row, dst_tile, a_.overflow, true) == 0,
          "gear cuda cache: the outlier pool still overflows after growing to " + str(kv_.sparse_cap) + " entries");
}

// A and B (r <= R columns / rows; undefined: rank 0) into each row's next A rows and B block, zero-padded to R.
// Rows that decode in step (consecutive, the same n_comp and block count) take one copy per array instead of
// a handful of small ATen ops per row (~1 ms of host time per side and layer at batch 16).
void GearCudaCache::store_low_rank(bool key, const std::vector<int>& rows, int64_t T, const at::Tensor& A,
                                   const at::Tensor& B) {
  const int n = int(rows.size());
  const int64_t G = kv_.group, r = A.defined() ? A.size(3) : 0;
  at::Tensor& A_all = key ? a_.k_lr_a : a_.v_lr_a;  // [B, nkv, token_cap, R]
  at::Tensor& B_all = key ? a_.k_lr_b : a_.v_lr_b;  // [B, nkv, lr_cap, R, hd]
  auto store = [&](const at::Tensor& a_dst, const at::Tensor& b_dst, const at::Tensor& a, const at::Tensor& b) {
    a_dst.narrow(-1, r, a_dst.size(-1) - r).zero_();
    b_dst.narrow(-2, r, b_dst.size(-2) - r).zero_();
    if (r > 0) {
      a_dst.narrow(-1, 0, r).copy_(a);
      b_dst.narrow(-2, 0, r).copy_(b);
    }
  };
  const RowState& first = rows_[rows[0]];
  bool in_step = true;
  for (int i = 1; i < n; ++i) {
    const RowState& rs = rows_[rows[i]];
    in_step = in_step && rows[i] == rows[0] + i && rs.n_comp == first.n_comp && rs.blocks == first.blocks;
  }
  if (in_step) {
    store(A_all.narrow(0, rows[0], n).narrow(2, first.n_comp, T), B_all.narrow(0, rows[0], n).select(2, first.blocks), A, B);
    if (key) a_.lr_block.narrow(0, rows[0], n).narrow(1, first.n_comp / G, T / G).fill_(first.blocks);
    return;
  }
  for (int i = 0; i < n; ++i) {
    const RowState& rs = rows_[rows[i]];
    store(A_all[rows[i]].narrow(1, rs.n_comp, T), B_all[rows[i]].select(1, rs.blocks), r > 0 ? A[i] : A,
          r > 0 ? B[i] : B);
    if (key) a_.lr_block[rows[i]].narrow(0, rs.n_comp / G, T / G).fill_(rs.blocks);
  }
}

void GearCudaCache::compress(const std::vector<int>& rows, const at::Tensor& xk, const at::Tensor& xv, int64_t T,
                             bool prefill) {
  settle();  // the previous block's pools first
  const int n = int(rows.size());
  const int64_t G = kv_.group, H = nkv_, hd = hd_, x_cap = xk.size(2);
  require(T > 0 && T % G == 0 && x_cap >= T, "gear cuda cache: bad block of " + str(T) + " tokens");
  std::vector<int32_t> dst_row(n), dst_tile(n);
  for (int i = 0; i < n; ++i) {
    const RowState& r = rows_.at(rows[i]);
    require(r.n_comp + T <= kv_.token_cap(), "gear cuda cache: row " + str(rows[i]) + " has no room for " + str(T) +
                                                 " more compressed tokens");
    require(kv_.rank == 0 || r.blocks < kv_.tile_cap, "gear cuda cache: row " + str(rows[i]) + " has no low-rank block left");
    if (kv_.rank > 0 && r.blocks >= kv_.lr_cap) grow_low_rank(r.blocks + 1);
    dst_row[i] = rows[i];
    dst_tile[i] = int32_t(r.n_comp / G);
  }
  const at::Tensor drow = ints(dst_row), dtile = ints(dst_tile);
  const Ops ops{cuda_, cuda_ ? cuda_ops::current_stream() : nullptr};
  const int k_key = kv_.sparse_cap > 0 ? kernels::outliers_per_side(T, config_.sparsity) : 0;
  const int k_val = kv_.sparse_cap > 0 ? kernels::outliers_per_side(H * hd, config_.sparsity) : 0;
  // Key pools need exactly hd·2k entries per head and block, so the host grows them before they could overflow;
  // value pools depend on the data. Each side's overflow flag stays on the device; once the whole block is queued
  // both go to the host behind it, and settle() reads them at the next call that touches the pools: no host sync.
  if (kv_.sparse_cap > 0 && k_key > 0) {
    int64_t need = 0;
    for (int row : rows) need = std::max(need, rows_[row].sparse_k / H + hd * 2 * k_key);
    if (need > kv_.sparse_cap) grow_sparse(need);
  }
  at::Tensor side_values[2], side_index[2];  // kept for a second store after an overflow
  for (bool key : {true, false}) {
    const bool whole_block = key && config_.block_wide_keys();
    const at::Tensor& x = key ? xk : xv;  // fp16 [n, nkv, x_cap, hd]
    const int k = key ? k_key : k_val;
    // S: the outliers out first (into the per-tile pools); Q from the inliers, or straight from the source.
    at::Tensor& values = side_values[key ? 0 : 1];
    at::Tensor& index = side_index[key ? 0 : 1];
    at::Tensor inliers;
    if (k > 0) {
      ops.extract(key, x, x_cap, n, T, int(H), int(hd), k, values, index, inliers);
      bench::trace_memory(options_.device(), key ? "gear extract k" : "gear extract v", layer_);
      ops.quantize(key, inliers, T, n, T, kv_, drow, dtile, whole_block);
      inliers = at::Tensor();  // (float32: a prompt's largest copy; the low rank below does not need it)
    } else {
      ops.quantize(key, x, x_cap, n, T, kv_, drow, dtile, whole_block);
    }
    if (kv_.sparse_cap > 0)  // also with k == 0: the block's tiles get their (empty) offsets
      store_outliers(key, values, index, n, T, k, drow, dtile, /*deferred=*/true);

    // L: GearCache's low rank of the residual x - (dequantized Q with the outliers written back).
    if (kv_.rank == 0) continue;
    const int64_t r = ranks_for(key, prefill, T);
    at::Tensor residual;
    if (r > 0) {
      at::Tensor deq = ops.dequantize(key, n, T, kv_, drow, dtile);  // [n, nkv, T, hd], contiguous
      if (k > 0) ops.scatter(key, values, index, n, T, int(H), int(hd), k, deq);
      // x - deq, in place ((-deq) + x is the same IEEE result): no second float32 block.
      residual = deq.neg_().add_(x.narrow(2, 0, T));
      bench::trace_memory(options_.device(), key ? "gear residual k" : "gear residual v", layer_);
    }
    // One batched power iteration over every row's heads; GearCache::settings' spec, each row seeded by its
    // block's index within the row (as GearCache seeds it).
    at::Tensor A, B;  // [n, nkv, T, r], [n, nkv, r, hd]
    if (r > 0) {
      LowRankSpec spec;
      spec.rank = r;
      spec.power_iters = config_.power_iters;
      spec.exact_svd = config_.exact_svd;
      std::vector<uint64_t> seeds;
      for (int i = 0; i < n; ++i)
        seeds.push_back(config_.seed + uint64_t(layer_) * 1000003u + uint64_t(rows_[rows[i]].blocks) * 2 + (key ? 0 : 1));
      std::tie(A, B) = low_rank_batched(residual, spec, seeds);
      bench::trace_memory(options_.device(), key ? "gear low rank k" : "gear low rank v", layer_);
    }
    store_low_rank(key, rows, T, A, B);
  }
  if (cuda_ && kv_.sparse_cap > 0) {
    // Each entry's correction outlier - dequant - lowrank, once per block, for the attention's outlier passes
    // (which would otherwise recompute it at every decode step from scattered codes, scales and factors); redone
    // by settle() if a pool overflowed.
    kernels::outlier_corrections(kv_, drow.data_ptr<int32_t>(), dtile.data_ptr<int32_t>(), n, int(T / G), ops.stream);
    // The overflow flags go to the host behind the block's work; settle() reads them (PendingBlock).
    kernels::async_read_start(flags_read_.get(), a_.overflow.data_ptr<int32_t>(), ops.stream);
    PendingBlock& p = pending_block_;
    p.active = true;
    for (int s = 0; s < 2; ++s) p.values[s] = side_values[s], p.index[s] = side_index[s];
    p.drow = drow, p.dtile = dtile, p.n = n, p.T = T, p.k[0] = k_key, p.k[1] = k_val;
  }
  for (int i = 0; i < n; ++i) {
    RowState& rs = rows_[rows[i]];
    rs.n_comp += T;
    ++rs.blocks;
    rs.sparse_k += H * hd * 2 * k_key;
    rs.sparse_v += T * 2 * k_val;
  }
}

void GearCudaCache::settle() const {
  if (!pending_block_.active) return;
  auto* self = const_cast<GearCudaCache*>(this);
  const PendingBlock p = std::move(self->pending_block_);
  self->pending_block_ = PendingBlock();
  const int32_t* flags = kernels::async_read_wait(flags_read_.get());
  const int32_t need[2] = {flags[0], flags[1]};  // (the host copy is reused by the next block)
  if (need[0] == 0 && need[1] == 0) return;
  // Both sides are stored again, not only the one that overflowed: without a values array a pool keeps each
  // outlier in its correction's slot until outlier_corrections replaces it in place, so recomputing the
  // corrections of a side that was not stored again would correct its corrections.
  for (const bool key : {true, false}) {
    const int s = key ? 0 : 1;
    self->store_outliers(key, p.values[s], p.index[s], p.n, p.T, p.k[s], p.drow, p.dtile, /*deferred=*/false, need[s]);
  }
  kernels::outlier_corrections(kv_, p.drow.data_ptr<int32_t>(), p.dtile.data_ptr<int32_t>(), p.n, int(p.T / kv_.group),
                               cuda_ops::current_stream());
}

void GearCudaCache::shift_buffer(int row, int64_t tokens) {
  RowState& r = rows_.at(row);
  const int64_t rest = r.n_buf - tokens;
  if (rest > 0)
    for (at::Tensor* buf : {&a_.k_buf, &a_.v_buf}) {
      at::Tensor b = (*buf)[row];  // [nkv, buf_cap, hd]
      b.narrow(1, 0, rest).copy_(b.narrow(1, tokens, rest).clone());  // clone: the ranges overlap
    }
  r.n_buf = std::max<int64_t>(rest, 0);
}

void GearCudaCache::append(const StepInfo& step, const at::Tensor& k, const at::Tensor& v) {
  if (step.kind == StepInfo::Kind::Prefill) {
    const RowState& row = rows_.at(step.row);
    require(row.n_comp + row.n_buf == step.start, "gear cache: prefill at position " + str(step.start) +
                                                      " but the row holds " + str(row.n_comp + row.n_buf) + " tokens");
    require(step.start + step.n_new <= capacity_, "kv cache: " + str(step.start + step.n_new) +
                                                      " tokens exceed the context of " + str(capacity_));
    // Exact for the prompt's own attention; compressed / buffered after it. Contiguous copies [nkv, T, hd] now, the
    // layout the compression reads: v is a view of the model's fused qkv rows, which would otherwise stay alive
    // (3x v's bytes) through the attention and until the compression's source blocks were copied out of them
    // (~120 MB of a 7B prompt of 3.8k tokens at its prefill peak, which a memory budget pays on top of every row).
    pending_k_ = k.contiguous(), pending_v_ = v.contiguous();
    return;
  }
  const int64_t B = k.size(0), H = nkv_, hd = hd_;
  const bool same = check_decode_rows(B);
  const at::Tensor kh = k.to(at::kHalf), vh = v.to(at::kHalf);  // [B, nkv, 1, hd]
  if (same) {
    a_.k_buf.narrow(2, rows_[0].n_buf, 1).copy_(kh);
    a_.v_buf.narrow(2, rows_[0].n_buf, 1).copy_(vh);
  } else {
    // Row b, head h goes to buffer row (b*nkv + h)*buf_cap + n_buf[b], from the device lengths (no sync).
    // (expand, not repeat_interleave, which may read its output size back from the device)
    const at::Tensor at_ = at::arange(B * H, a_.n_buf.options().dtype(at::kLong))
                               .mul_(kv_.buf_cap)
                               .add_(a_.n_buf.to(at::kLong).view({B, 1}).expand({B, H}).reshape({B * H}));
    a_.k_buf.view({-1, hd}).index_copy_(0, at_, kh.reshape({B * H, hd}));
    a_.v_buf.view({-1, hd}).index_copy_(0, at_, vh.reshape({B * H, hd}));
  }
  for (RowState& r : rows_) ++r.n_buf;
  a_.n_buf.add_(1);
}

// The decode checks append() makes, shared with append_fused(). Returns whether every row's buffer is filled
// to the same length.
bool GearCudaCache::check_decode_rows(int64_t B) const {
  require(B == batch_, "gear cache: decode batch " + str(B) + " != cache batch " + str(batch_));
  bool same = true;
  for (const RowState& r : rows_) {
    require(r.n_comp + r.n_buf < capacity_, "kv cache: context of " + str(capacity_) + " tokens is full");
    require(r.n_buf < kv_.buf_cap, "gear cuda cache: streaming buffer overflow (a bug)");
    same = same && r.n_buf == rows_[0].n_buf;
  }
  return same;
}

at::Tensor GearCudaCache::append_fused(const StepInfo& step, const FusedQkv& in) {
  // The kernel writes the model's dtype into the buffer, which holds fp16 (the quantizers' source).
  if (!cuda_ || in.qkv.scalar_type() != at::kHalf || step.kind != StepInfo::Kind::Decode) return at::Tensor();
  check_decode_rows(in.qkv.size(0));
  // ~25 ATen ops per layer on the model's side (RoPE of q and k, casts, the copies) become one launch: small
  // batches of the compressed caches were bound by issuing them (docs/kernels.md).
  at::Tensor q = cuda_ops::rope_qkv_append(in.qkv, step.positions, in.cos, in.sin, a_.k_buf, a_.v_buf, in.n_heads,
                                           in.n_kv_heads, in.layout, a_.n_buf);
  for (RowState& r : rows_) ++r.n_buf;
  a_.n_buf.add_(1);
  return q.unsqueeze(2);
}

at::Tensor GearCudaCache::attend(const StepInfo& step, const at::Tensor& q) {
  settle();  // the last block's outliers complete before anything reads them
  const at::ScalarType dt = options_.dtype().toScalarType();
  if (step.kind == StepInfo::Kind::Prefill) {
    const int row = step.row;
    RowState& r = rows_.at(row);
    at::Tensor K = pending_k_.to(dt), V = pending_v_.to(dt);
    if (r.n_comp + r.n_buf > 0) {
      auto [k_old, v_old] = row_kv(row);
      K = at::cat({k_old, K}, 1);
      V = at::cat({v_old, V}, 1);
    }
    at::Tensor out = prefill_attention(q, K, V, step.start);
    bench::trace_memory(options_.device(), "gear prefill attention", layer_);
    // The row's buffer followed by the chunk is the source of the prompt block (fp16, as GearCache buffers it); a
    // fresh fp16 prompt is that block already.
    auto source = [&](const at::Tensor& buf, const at::Tensor& chunk) {
      if (r.n_buf == 0 && chunk.scalar_type() == at::kHalf) return chunk.unsqueeze(0);
      return at::cat({buf[row].narrow(1, 0, r.n_buf), chunk.to(at::kHalf)}, 1).unsqueeze(0).contiguous();
    };
    const at::Tensor sk = source(a_.k_buf, pending_k_), sv = source(a_.v_buf, pending_v_);
    // The prompt's exact K/V are not needed past here (a fresh fp16 prompt's copies live on as sk / sv): freed
    // before the compression's buffers.
    pending_k_ = pending_v_ = K = V = at::Tensor();
    const int64_t L = sk.size(2), T = L / kv_.group * kv_.group, rest = L - T;
    if (T > 0) compress({row}, sk, sv, T, /*prefill=*/true);
    require(rest <= kv_.buf_cap, "gear cuda cache: prompt tail of " + str(rest) + " tokens does not fit the buffer");
    if (rest > 0) {
      a_.k_buf[row].narrow(1, 0, rest).copy_(sk[0].narrow(1, T, rest));
      a_.v_buf[row].narrow(1, 0, rest).copy_(sv[0].narrow(1, T, rest));
    }
    r.n_buf = rest;
    upload_lengths();
    return out;
  }
  // Decode: attention straight from the compressed layout.
  const int64_t B = q.size(0), nh = q.size(1);
  require(B == batch_, "gear cache: decode batch " + str(B) + " != cache batch " + str(batch_));
  int64_t max_comp = 0;
  for (const RowState& r : rows_) max_comp = std::max(max_comp, r.n_comp);
  const at::Tensor qc = q.contiguous();  // [B, nh, 1, hd] = [B, nh, hd]
  const float scale = float(1.0 / std::sqrt(double(hd_)));
  at::Tensor out;
  if (cuda_ && !kernels::attention_head_dim_ok(hd_)) {
    // A head dim compressed_attention does not take (stories260K's 8): each row's K/V reconstructed from the
    // layout (row_kv, as a later prefill does) and attended in ATen. O(length) work a step, but every model
    // runs --impl cuda's compression; --impl auto keeps such models on GearCache (fused_attention()).
    std::vector<at::Tensor> rows;
    for (int b = 0; b < int(B); ++b) {
      const auto kv = row_kv(b);
      rows.push_back(prefill_attention(qc[b], kv.first, kv.second, kv.first.size(1) - 1));
    }
    out = at::stack(rows, 0);
  } else if (cuda_) {
    out = at::empty_like(qc);
    const std::size_t need = kernels::compressed_attention_workspace_bytes(int(B), int(nh), hd_, max_comp, kv_.sparse_cap > 0);
    void* ws = workspace_->get(need, options_);
    kernels::compressed_attention(dtype_of(qc.scalar_type()), qc.data_ptr(), kv_, out.data_ptr(), int(nh), max_comp,
                                  scale, ws, ws ? std::size_t(workspace_->buffer.numel()) : 0,
                                  cuda_ops::current_stream());
  } else {
    const at::Tensor qd = qc.to(at::kDouble).contiguous();
    at::Tensor od = at::empty(qd.sizes(), at::kDouble);
    kernels::ref::compressed_attention(qd.data_ptr<double>(), kv_, od.data_ptr<double>(), int(nh), scale);
    out = od.to(qc.scalar_type());
  }
  // Then, as GearCache does, every row whose buffer holds stream_gap tokens compresses them as one block:
  // one call for the whole batch when every row is due (rows fill their buffers in step), else per row.
  std::vector<int> due;
  for (int b = 0; b < batch_; ++b)
    if (rows_[b].n_buf >= config_.stream_gap) due.push_back(b);
  if (!due.empty()) {
    if (int(due.size()) == batch_) {
      compress(due, a_.k_buf, a_.v_buf, config_.stream_gap, /*prefill=*/false);
    } else {
      for (int b : due) compress({b}, a_.k_buf.narrow(0, b, 1), a_.v_buf.narrow(0, b, 1), config_.stream_gap, false);
    }
    for (int b : due) shift_buffer(b, config_.stream_gap);
    upload_lengths();
  }
  return out;
}

at::Tensor GearCudaCache::reconstruct(bool key, int row) const {
  const RowState& r = rows_.at(row);
  const int64_t C = r.n_comp, G = kv_.group, tiles = C / G, H = nkv_, hd = hd_;
  const Ops ops{cuda_, cuda_ ? cuda_ops::current_stream() : nullptr};
  at::Tensor x = ops.dequantize(key, 1, C, kv_, ints({row}), ints({0}))[0];  // [nkv, C, hd] float32
  if (kv_.rank > 0) {  // + A·B, each tile with its block's B
    const int64_t R = kv_.rank;
    const at::Tensor A = (key ? a_.k_lr_a : a_.v_lr_a)[row].narrow(1, 0, C).to(at::kFloat).reshape({H, tiles, G, R});
    const at::Tensor l = a_.lr_block[row].narrow(0, 0, tiles).to(at::kLong);
    const at::Tensor Bf = (key ? a_.k_lr_b : a_.v_lr_b)[row].index_select(1, l).to(at::kFloat);  // [nkv, tiles, R, hd]
    x = x + at::matmul(A, Bf).reshape({H, C, hd});
  }
  x = x.contiguous();
  if (kv_.sparse_cap > 0) {  // the outliers over both: entry e of tile j at (t, d) = (jG + pos/hd, pos%hd)
    const at::Tensor off = (key ? a_.k_sp_off : a_.v_sp_off)[row].narrow(1, 0, tiles + 1).to(at::kCPU).contiguous();
    const int64_t used = off.select(1, tiles).max().item<int32_t>();
    if (used > 0) {
      const at::Tensor pos = (key ? a_.k_sp_pos : a_.v_sp_pos)[row].narrow(1, 0, used).to(at::kCPU).contiguous();
      const int32_t* o = off.data_ptr<int32_t>();
      const int16_t* p = pos.data_ptr<int16_t>();
      std::vector<int64_t> dst, src;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < tiles; ++j)
          for (int64_t e = o[h * (tiles + 1) + j]; e < o[h * (tiles + 1) + j + 1]; ++e) {
            const int64_t ps = uint16_t(p[h * used + e]), t = j * G + ps / hd, d = ps % hd;
            dst.push_back((h * C + t) * hd + d);
            src.push_back(h * kv_.sparse_cap + e);
          }
      if (!dst.empty()) {
        const auto lng = at::TensorOptions().dtype(at::kLong);
        const at::Tensor s = at::tensor(at::ArrayRef<int64_t>(src), lng).to(x.device());
        const at::Tensor dd = at::tensor(at::ArrayRef<int64_t>(dst), lng).to(x.device());
        at::Tensor vals;
        if (cuda_) {  // corrections only: the value is the correction over what x holds there, rounded to fp16 as stored
          const at::Tensor corr = (key ? a_.k_sp_corr : a_.v_sp_corr)[row].reshape({-1}).index_select(0, s).to(at::kFloat);
          vals = (x.view({-1}).index_select(0, dd) + corr).to(at::kHalf).to(at::kFloat);
        } else {
          vals = (key ? a_.k_sp_val : a_.v_sp_val)[row].reshape({-1}).index_select(0, s).to(at::kFloat);
        }
        x.view({-1}).index_copy_(0, dd, vals);
      }
    }
  }
  return x;
}

std::pair<at::Tensor, at::Tensor> GearCudaCache::row_kv(int row) const {
  settle();
  const RowState& r = rows_.at(row);
  const at::ScalarType dt = options_.dtype().toScalarType();
  auto side = [&](bool key) {
    std::vector<at::Tensor> parts;
    if (r.n_comp > 0) parts.push_back(reconstruct(key, row).to(dt));
    if (r.n_buf > 0) parts.push_back((key ? a_.k_buf : a_.v_buf)[row].narrow(1, 0, r.n_buf).to(dt));
    if (parts.empty()) return at::empty({nkv_, 0, hd_}, options_);
    return parts.size() == 1 ? parts[0].clone() : at::cat(parts, 1);  // never a view of the layout
  };
  return {side(true), side(false)};
}

std::pair<at::Tensor, at::Tensor> GearCudaCache::view(int row) const { return row_kv(row); }

// What the layout holds for the tokens in use, from the host's counts: codes; fp16 scales + zeros; outliers
// (fp16 value + 16-bit position) with the per-tile offsets (int32 per tile and head); the low rank as the
// layout stores it (A rows padded to R columns, one B of R rows per block, the tiles' block indices); the
// fp16 buffer. reserved: every array allocated.
ByteBreakdown GearCudaCache::bytes() const {
  settle();  // (a pending block may still grow the pools)
  ByteBreakdown t;
  const int64_t H = nkv_, hd = hd_, G = kv_.group, R = kv_.rank;
  for (const RowState& r : rows_) {
    const int64_t tiles = r.n_comp / G;
    t.codes += 2 * H * r.n_comp * hd * kv_.bits / 8;
    // A value group spanning v_span heads counts once, as the method holds it (each head keeps a copy for
    // the kernels: reserved counts those); so do KCVT's key ranges, one per channel and block (each tile of the
    // block keeps a copy).
    const int64_t key_ranges = config_.block_wide_keys() ? r.blocks : tiles;
    t.scales += H * key_ranges * hd * 4 + H / kv_.v_span * r.n_comp * kv_.value_groups() * 4;
    // Per entry: a 16-bit position and the fp16 value, or on CUDA the fp16 correction instead of the value.
    if (kv_.sparse_cap > 0) t.sparse += (r.sparse_k + r.sparse_v) * 4 + 2 * H * tiles * 4;
    if (R > 0) t.low_rank += 2 * (H * r.n_comp * R * 2 + H * r.blocks * R * hd * 2) + tiles * 4;
    t.full += 2 * H * r.n_buf * hd * 2;
  }
  for (const at::Tensor* a : {&a_.k_codes, &a_.k_scale, &a_.k_zero, &a_.v_codes, &a_.v_scale, &a_.v_zero, &a_.lr_block,
                              &a_.k_lr_a, &a_.k_lr_b, &a_.v_lr_a, &a_.v_lr_b, &a_.k_sp_off, &a_.k_sp_pos, &a_.k_sp_val,
                              &a_.v_sp_off, &a_.v_sp_pos, &a_.v_sp_val, &a_.k_sp_corr, &a_.v_sp_corr, &a_.k_buf, &a_.v_buf, &a_.n_comp, &a_.n_buf,
                              &a_.overflow})
    t.reserved += nbytes(*a);
  return t;
}

void GearCudaCache::clear_row(int row) {
  settle();  // (a pending second store would write the row again)
  rows_.at(row) = RowState();
  if (kv_.sparse_cap > 0) {
    a_.k_sp_off[row].zero_();
    a_.v_sp_off[row].zero_();
  }
  upload_lengths();
}

}  // namespace gear
