#include "core/report/inputs.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"

namespace gear::report {
namespace {

using nlohmann::json;

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::binary: return "binary data";
    case json::value_t::discarded: return "nothing";
    default: return "a number";
  }
}

// A JSON object with the path that led to it, so every complaint names the file and the key.
class Node {
 public:
  Node(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail(where() + "expected an object, got " + type_name(j_));
  }

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json& at(const char* key) const {
    if (!j_.contains(key)) fail(where() + "missing key \"" + key + "\"");
    return j_.at(key);
  }
  std::string str(const char* key) const { return typed(key, at(key).is_string(), "a string").get<std::string>(); }
  std::string str_or(const char* key, const std::string& fallback) const { return has(key) ? str(key) : fallback; }
  bool boolean(const char* key) const { return typed(key, at(key).is_boolean(), "true or false").get<bool>(); }
  // JSON has no NaN: writers turn one into null, which reads back as kMissing.
  double num(const char* key) const {
    const json& v = at(key);
    return v.is_null() ? kMissing : typed(key, v.is_number(), "a number").get<double>();
  }
  double num_or(const char* key, double fallback) const { return has(key) ? num(key) : fallback; }
  int64_t integer(const char* key) const {
    const json& v = at(key);
    typed(key, v.is_number_integer() || (v.is_number_float() && v.get<double>() == int64_t(v.get<double>())),
          "an integer");
    return v.is_number_integer() ? v.get<int64_t>() : int64_t(v.get<double>());
  }
  int64_t integer_or(const char* key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  const json& array(const char* key) const { return typed(key, at(key).is_array(), "an array"); }
  Node object(const char* key) const { return Node(at(key), join(key)); }
  Node element(const char* key, size_t i) const { return Node(array(key)[i], join(key) + "[" + std::to_string(i) + "]"); }
  std::vector<double> numbers(const char* key) const {
    std::vector<double> out;
    const json& a = array(key);
    for (size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_number()) fail(where() + "\"" + key + "\"[" + std::to_string(i) + "] must be a number, got " + type_name(a[i]));
      out.push_back(a[i].get<double>());
    }
    return out;
  }
  const json& raw() const { return j_; }
  std::string join(const std::string& key) const {
    const size_t colon = path_.find(": ");
    return path_ + (colon == std::string::npos ? ": " : ".") + key;
  }

 private:
  std::string where() const { return path_ + ": "; }
  const json& typed(const char* key, bool ok, const char* expected) const {
    const json& v = j_.at(key);
    if (!ok) fail(where() + "\"" + key + "\" must be " + expected + ", got " + type_name(v));
    return v;
  }
  const json& j_;
  std::string path_;
};

// "NVIDIA H100 80GB HBM3, driver 580, LibTorch 2.11.0, commit 5daa4e0, 2026-11-25T21:10:01Z"
std::string environment_line(const Node& n) {
  if (!n.has("environment")) return "";
  const Node e = n.object("environment");
  std::string s = e.str_or("gpu", "");
  if (s.empty()) s = e.str_or("cpu", e.str_or("device", ""));
  while (!s.empty() && s.front() == ' ') s.erase(s.begin());
  auto add = [&](const std::string& label, const std::string& v) {
    if (!v.empty()) s += (s.empty() ? "" : ", ") + label + v;
  };
  add("driver ", e.str_or("driver", ""));
  add("LibTorch ", e.str_or("libtorch", ""));
  if (e.has("cpu_threads") && !e.has("gpu")) {
    const int64_t n = e.integer("cpu_threads");
    add("", std::to_string(n) + (n == 1 ? " thread" : " threads"));
  }
  add("commit ", e.str_or("commit", ""));
  add("", e.str_or("time_utc", ""));
  return s;
}

ComponentError read_errors(const Node& n) {
  return {n.num("quant"), n.num("sparse"), n.num("lowrank"), n.num("gear")};
}

SideAnalysis read_side(const Node& n) {
  SideAnalysis s;
  s.error = read_errors(n.object("error"));
  s.rank = n.integer_or("rank", 0);
  if (n.has("heads"))
    for (size_t h = 0; h < n.array("heads").size(); ++h) {
      const Node head = n.element("heads", h);
      if (head.has("spectrum")) s.head_spectra.push_back(head.numbers("spectrum"));
    }
  return s;
}

// A cache config's name: its preset, else its method.
std::string config_name(const Node& n) {
  if (!n.has("config")) return "";
  const Node c = n.object("config");
  return c.has("preset") ? c.str("preset") : c.str_or("cache", "");
}

AnalysisRun read_analysis(const Node& n, const std::string& source, const std::string& fallback_name) {
  AnalysisRun a;
  a.source = source;
  a.name = n.has("name") ? n.str("name") : config_name(n);
  if (a.name.empty()) a.name = fallback_name;
  a.config_text = n.str_or("config_text", a.name);
  a.model = n.str_or("model", "");
  a.tokens = n.integer("tokens");
  a.compressed_tokens = n.integer_or("compressed_tokens", 0);
  a.bytes_in_use = n.has("bytes") ? n.object("bytes").integer_or("in_use", 0) : 0;
  a.fp16_bytes = n.integer("fp16_bytes");
  a.ratio_vs_fp16 = n.num("ratio_vs_fp16");
  const json& layers = n.array("layers");
  for (size_t l = 0; l < layers.size(); ++l) {
    const Node layer = n.element("layers", l);
    a.layers.push_back({read_side(layer.object("k")), read_side(layer.object("v"))});
  }
  return a;
}

EvalMethod read_method(const Node& n) {
  EvalMethod m;
  m.name = n.str("name");
  m.config_text = n.str_or("config_text", m.name);
  m.perplexity = n.num("perplexity");
  m.ppl_delta = n.num("ppl_delta");
  m.ppl_delta_pct = n.num("ppl_delta_pct");
  m.kl_mean = n.num("kl_mean");
  m.kl_max = n.num("kl_max");
  m.top1_agreement = n.num("top1_agreement");
  if (n.has("divergence"))
    for (size_t i = 0; i < n.array("divergence").size(); ++i) {
      const Node d = n.element("divergence", i);
      m.divergence.push_back({d.str_or("prompt", ""), d.integer("first_divergence"), d.integer("generated")});
    }
  m.bytes_in_use = n.object("bytes").integer("in_use");
  m.fp16_bytes = n.integer("fp16_bytes");
  m.ratio_vs_fp16 = n.num("ratio_vs_fp16");
  return m;
}

void read_eval(ReportInputs& in, const Node& n, const std::string& source) {
  EvalRun e;
  e.source = source;
  e.model = n.str("model");
  e.model_config = n.str_or("model_config", "");
  e.generated_weights = n.has("generated_weights") && n.boolean("generated_weights");
  e.text = n.str_or("text", "");
  e.tokens = n.integer("tokens");
  e.prefill_tokens = n.integer_or("prefill_tokens", 0);
  e.environment = environment_line(n);
  const json& methods = n.array("methods");
  require(!methods.empty(), source + ": \"methods\" is empty");
  for (size_t i = 0; i < methods.size(); ++i) {
    const Node mn = n.element("methods", i);
    EvalMethod m = read_method(mn);
    if (mn.has("analysis")) {
      AnalysisRun a = read_analysis(mn.object("analysis"), source + ": methods[" + std::to_string(i) + "].analysis", m.name);
      a.name = m.name;
      if (a.model.empty()) a.model = e.model;
      in.analyses.push_back(std::move(a));
      m.has_analysis = true;
    }
    e.methods.push_back(std::move(m));
  }
  in.evals.push_back(std::move(e));
}

BenchRow read_bench_row(const Node& n) {
  BenchRow r;
  r.name = n.str("name");
  r.config_text = n.str_or("config_text", r.name);
  r.batch = n.integer("batch");
  r.context = n.integer("context");
  r.tokens_per_s = n.num("tokens_per_s");
  r.ms_per_step = n.num("ms_per_step");
  if (n.has("ms_samples")) r.ms_samples = n.numbers("ms_samples");
  r.peak_bytes = n.integer("peak_bytes");
  r.kv_bytes = n.integer("kv_bytes");
  r.weight_bytes = n.integer_or("weight_bytes", 0);
  r.fits = !n.has("fits") || n.boolean("fits");
  return r;
}

BudgetRow read_budget_row(const Node& n) {
  return {n.str("name"), n.num("budget_gib"), n.integer("max_batch"), n.integer("context"), n.integer("peak_bytes"),
          n.num("tokens_per_s")};
}

void read_bench(ReportInputs& in, const Node& n, const std::string& source) {
  BenchRun b;
  b.source = source;
  b.model = n.str("model");
  b.model_config = n.str_or("model_config", "");
  b.generated_weights = n.has("generated_weights") && n.boolean("generated_weights");
  b.environment = environment_line(n);
  b.device = n.has("environment") ? n.object("environment").str_or("device", "") : "";
  b.memory = n.str_or("memory", "");
  for (size_t i = 0; i < n.array("results").size(); ++i) b.results.push_back(read_bench_row(n.element("results", i)));
  if (n.has("budget"))
    for (size_t i = 0; i < n.array("budget").size(); ++i) b.budget.push_back(read_budget_row(n.element("budget", i)));
  require(!b.results.empty() || !b.budget.empty(), source + ": no \"results\" and no \"budget\" entries");
  in.benches.push_back(std::move(b));
}

json parse_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  require(bool(f), path + ": cannot open");
  std::stringstream text;
  text << f.rdbuf();
  require(!text.str().empty(), path + ": empty file");
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    const size_t at = what.find("] ");
    fail(path + ": not valid JSON (" + (at == std::string::npos ? what : what.substr(at + 2)) + ")");
  }
}

}  // namespace

void add_report_input(ReportInputs& into, const json& j, const std::string& source) {
  const Node n(j, source);
  if (!j.contains("kind"))
    fail(source + ": no \"kind\" key: not a gearlab eval, bench or analysis result");
  const std::string kind = n.str("kind");
  if (kind == "eval") read_eval(into, n, source);
  else if (kind == "bench") read_bench(into, n, source);
  else if (kind == "analysis") into.analyses.push_back(read_analysis(n, source, "analysis"));
  else fail(source + ": unknown kind \"" + kind + "\" (expected eval, bench or analysis)");
  into.sources.push_back(source);
}

ReportInputs load_report_inputs(const std::vector<std::string>& paths) {
  require(!paths.empty(), "report: no input files (give eval, bench or analysis JSON files)");
  ReportInputs in;
  for (const std::string& path : paths) add_report_input(in, parse_file(path), path);
  return in;
}

}  // namespace gear::report
