// Hugging Face Llama directories: config.json + model.safetensors, or shards listed by
// model.safetensors.index.json. Tensors are converted to float32 on the CPU.
#include "core/io/hf_loader.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/io/loader.h"
#include "core/io/safetensors_reader.h"
#include "core/util/error.h"

namespace gear {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(bool(in), path + ": cannot open for reading");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    fail(path + ": not valid JSON (" + e.what() + ")");
  }
}

// Typed access to config.json fields with errors naming the file and the key.
struct ConfigJson {
  const json& j;
  const std::string& path;

  const json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  int integer(const char* key, const json* v) const {
    require(v->is_number_integer(), path + ": \"" + key + "\" must be an integer, got " + v->dump());
    const int64_t x = v->get<int64_t>();
    require(x > 0 && x <= std::numeric_limits<int32_t>::max(),
            path + ": \"" + key + "\" must be a positive 32-bit integer, got " + v->dump());
    return int(x);
  }
  int integer(const char* key) const {
    const json* v = find(key);
    require(v != nullptr, path + ": missing \"" + key + "\"");
    return integer(key, v);
  }
  int integer(const char* key, int fallback) const {
    const json* v = find(key);
    return v ? integer(key, v) : fallback;
  }
  double number(const json& obj, const char* key, const std::string& where) const {
    auto it = obj.find(key);
    require(it != obj.end() && !it->is_null(), path + ": " + where + "missing \"" + key + "\"");
    require(it->is_number(), path + ": " + where + "\"" + key + "\" must be a number, got " + it->dump());
    return it->get<double>();
  }
  double number(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    require(v->is_number(), path + ": \"" + key + "\" must be a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    require(v->is_boolean(), path + ": \"" + key + "\" must be true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const json& obj, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return "";
    require(it->is_string(), path + ": \"" + key + "\" must be a string, got " + it->dump());
    return it->get<std::string>();
  }
};

void check_architecture(const ConfigJson& c) {
  std::vector<std::string> archs;
  if (const json* a = c.find("architectures")) {
    require(a->is_array(), c.path + ": \"architectures\" must be a list of strings, got " + a->dump());
    for (const json& x : *a) {
      require(x.is_string(), c.path + ": \"architectures\" must be a list of strings, got " + a->dump());
      archs.push_back(x.get<std::string>());
    }
  }
  const std::string model_type = c.string(c.j, "model_type");
  for (const std::string& a : archs)
    if (a == "LlamaForCausalLM") return;
  if (model_type == "llama") return;
  std::string what = !archs.empty() ? archs.front() : !model_type.empty() ? model_type : "(none given)";
  fail(c.path + ": unknown architecture " + what +
       " (supported: \"architectures\": [\"LlamaForCausalLM\"] or \"model_type\": \"llama\")");
}

// RoPE settings. transformers >= 5 writes "rope_parameters": {"rope_theta", "rope_type", ...};
// older configs (most published checkpoints) have a top-level "rope_theta" and "rope_scaling"
// (null, or {"type"|"rope_type", ...}).
void parse_rope(const ConfigJson& c, ModelConfig& m) {
  m.rope_theta = float(c.number("rope_theta", 10000.0));
  std::string key = "rope_parameters";
  const json* r = c.find("rope_parameters");
  if (r) {
    require(r->is_object(), c.path + ": \"rope_parameters\" must be an object, got " + r->dump());
    for (auto it = r->begin(); it != r->end(); ++it)
      require(!it.value().is_object(), c.path + ": per-layer-type \"rope_parameters\" (\"" + it.key() +
                                           "\") are not supported by a Llama model");
    if (r->contains("rope_theta")) m.rope_theta = float(c.number(*r, "rope_theta", "rope_parameters: "));
  } else {
    key = "rope_scaling";
    r = c.find("rope_scaling");
    if (!r) return;
    require(r->is_object(), c.path + ": \"rope_scaling\" must be an object or null, got " + r->dump());
  }
  std::string type = c.string(*r, "rope_type");
  if (type.empty()) type = c.string(*r, "type");
  if (type.empty() && key == "rope_parameters") type = "default";
  require(!type.empty(), c.path + ": \"rope_scaling\" has no \"rope_type\"");
  RopeScaling& s = m.rope_scaling;
  const std::string where = key + " (" + type + "): ";
  if (type == "llama3") {
    s.llama3 = true;
    s.factor = float(c.number(*r, "factor", where));
    s.low_freq_factor = float(c.number(*r, "low_freq_factor", where));
    s.high_freq_factor = float(c.number(*r, "high_freq_factor", where));
    const double orig = c.number(*r, "original_max_position_embeddings", where);
    require(orig >= 1 && orig <= std::numeric_limits<int32_t>::max(),
            c.path + ": " + where + "original_max_position_embeddings must be a positive integer");
    s.original_max_position = int(orig);
    require(s.factor > 0 && s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor,
            c.path + ": " + where + "needs factor > 0 and high_freq_factor > low_freq_factor > 0");
  } else if (type == "linear") {
    s.linear_factor = float(c.number(*r, "factor", where));
    require(s.linear_factor > 0, c.path + ": " + where + "factor must be positive");
  } else if (type == "default") {
    // explicitly no scaling
  } else {
    fail(c.path + ": unsupported " + key + " type \"" + type + "\" (supported: llama3, linear)");
  }
}

// Where each tensor lives: one file, or the shards of an index.
class TensorSource {
 public:
  explicit TensorSource(const std::string& dir) {
    const std::string single = join(dir, "model.safetensors");
    index_path_ = join(dir, "model.safetensors.index.json");
    if (fs::exists(single)) {
      files_.emplace("model.safetensors", std::make_unique<SafetensorsFile>(single));
      return;
    }
    require(fs::exists(index_path_), dir +
                                         ": no model.safetensors or model.safetensors.index.json "
                                         "(only safetensors checkpoints are supported)");
    sharded_ = true;
    const json index = read_json(index_path_);
    require(index.is_object(), index_path_ + ": must be a JSON object");
    auto wm = index.find("weight_map");
    require(wm != index.end() && wm->is_object(), index_path_ + ": missing \"weight_map\" object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      require(it.value().is_string(),
              index_path_ + ": weight_map entry for " + it.key() + " must be a file name, got " + it.value().dump());
      const std::string shard = it.value().get<std::string>();
      require(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
              index_path_ + ": weight_map entry for " + it.key() +
                  " must be a file name in the same directory, got \"" + shard + "\"");
      weight_map_[it.key()] = shard;
      if (files_.count(shard)) continue;
      const std::string path = join(dir, shard);
      require(fs::exists(path),
              index_path_ + ": shard " + shard + " (listed for tensor " + it.key() + ") does not exist in " + dir);
      files_.emplace(shard, std::make_unique<SafetensorsFile>(path));
    }
  }

  // Every tensor name in the checkpoint (from the index, or from the single file).
  std::set<std::string> names() const {
    std::set<std::string> out;
    if (sharded_) {
      for (const auto& kv : weight_map_) out.insert(kv.first);
    } else {
      for (const std::string& n : files_.begin()->second->names()) out.insert(n);
    }
    return out;
  }

  // The tensor as float32, after checking that it exists, is floating point and has `shape`.
  at::Tensor get(const std::string& name, std::vector<int64_t> shape) const {
    const SafetensorsFile* file = files_.begin()->second.get();
    if (sharded_) {
      auto it = weight_map_.find(name);
      require(it != weight_map_.end(), index_path_ + ": tensor " + name + " is missing from weight_map");
      file = files_.at(it->second).get();
    }
    require(file->has(name), file->path() + ": tensor " + name + " not found" +
                                 (sharded_ ? " (model.safetensors.index.json maps it to this file)" : ""));
    const StTensorInfo& info = file->info(name);
    const StDtype d = info.dtype;
    require(d == StDtype::F32 || d == StDtype::F16 || d == StDtype::BF16 || d == StDtype::F64,
            file->path() + ": tensor " + name + " has dtype " + st_dtype_name(d) +
                ", expected a floating-point type (F32, F16 or BF16)");
    require(info.shape == shape, file->path() + ": tensor " + name + " has shape " + st_shape_str(info.shape) +
                                     " but config.json implies " + st_shape_str(shape));
    return file->tensor(name);
  }

 private:
  bool sharded_ = false;
  std::string index_path_;
  std::map<std::string, std::string> weight_map_;                  // tensor -> shard file name
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;  // file name -> mapped file
};

}  // namespace

ModelConfig load_hf_config(const std::string& dir) {
  require(fs::exists(dir), dir + ": no such directory");
  require(fs::is_directory(dir), dir + ": not a directory (expected a Hugging Face model directory)");
  const std::string path = join(dir, "config.json");
  require(fs::exists(path), dir + ": no config.json (not a Hugging Face model directory?)");
  const json j = read_json(path);
  require(j.is_object(), path + ": must be a JSON object");
  const ConfigJson cj{j, path};
  check_architecture(cj);
  ModelConfig c;
  c.dim = cj.integer("hidden_size");
  c.hidden_dim = cj.integer("intermediate_size");
  c.n_layers = cj.integer("num_hidden_layers");
  c.n_heads = cj.integer("num_attention_heads");
  c.n_kv_heads = cj.integer("num_key_value_heads", c.n_heads);
  c.vocab_size = cj.integer("vocab_size");
  c.max_seq_len = cj.integer("max_position_embeddings", 2048);
  c.head_dim = cj.integer("head_dim", 0);
  c.norm_eps = float(cj.number("rms_norm_eps", 1e-6));
  c.tied_embeddings = cj.boolean("tie_word_embeddings", false);
  const std::string act = cj.string(j, "hidden_act");
  require(act.empty() || act == "silu", path + ": hidden_act \"" + act + "\" is not supported (Llama uses silu)");
  require(!cj.boolean("attention_bias", false), path + ": attention_bias = true is not supported");
  require(!cj.boolean("mlp_bias", false), path + ": mlp_bias = true is not supported");
  parse_rope(cj, c);
  c.rope_layout = RopeLayout::HalfSplit;
  c.source = dir;
  try {
    c.validate();
  } catch (const Error& e) {
    fail(path + ": " + e.what());
  }
  return c;
}

Weights load_hf_directory(const std::string& dir) {
  Weights w;
  w.config = load_hf_config(dir);
  const ModelConfig& c = w.config;
  const TensorSource src(dir);

  // Layers the config does not know about mean config.json and the weights disagree.
  for (const std::string& name : src.names()) {
    const std::string prefix = "model.layers.";
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t dot = name.find('.', prefix.size());
    const std::string idx =
        name.substr(prefix.size(), dot == std::string::npos ? std::string::npos : dot - prefix.size());
    require(!idx.empty() && idx.size() < 9 && idx.find_first_not_of("0123456789") == std::string::npos &&
                std::stoi(idx) < c.n_layers,
            dir + ": tensor " + name + " does not fit config.json (num_hidden_layers = " + std::to_string(c.n_layers) +
                ")");
  }

  const int64_t d = c.dim, hidden = c.hidden_dim, q = int64_t(c.n_heads) * c.hd(), kv = int64_t(c.n_kv_heads) * c.hd();
  w.tok_embeddings = src.get("model.embed_tokens.weight", {c.vocab_size, d});
  w.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = w.layers[size_t(l)];
    L.attn_norm = src.get(p + "input_layernorm.weight", {d});
    L.wq = src.get(p + "self_attn.q_proj.weight", {q, d});
    L.wk = src.get(p + "self_attn.k_proj.weight", {kv, d});
    L.wv = src.get(p + "self_attn.v_proj.weight", {kv, d});
    L.wo = src.get(p + "self_attn.o_proj.weight", {d, q});
    L.ffn_norm = src.get(p + "post_attention_layernorm.weight", {d});
    L.w1 = src.get(p + "mlp.gate_proj.weight", {hidden, d});
    L.w2 = src.get(p + "mlp.down_proj.weight", {d, hidden});
    L.w3 = src.get(p + "mlp.up_proj.weight", {hidden, d});
  }
  w.final_norm = src.get("model.norm.weight", {d});
  // A tied checkpoint may still carry lm_head.weight (a copy); the embedding is authoritative.
  w.classifier = c.tied_embeddings ? w.tok_embeddings : src.get("lm_head.weight", {c.vocab_size, d});
  w.validate(dir);
  return w;
}

}  // namespace gear
