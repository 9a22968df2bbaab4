// gearlab sweep: the data of the quality-vs-compression Pareto plot in one command -- the cross product
// of bits x rank x sparsity x method evaluated like `gearlab eval` (same JSON, one entry per setting).
#include <iostream>

#include "app/commands.h"
#include "app/eval_setup.h"
#include "core/eval/eval_table.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

// The sweep's own axes; every other cache flag applies to each setting.
const std::vector<std::string> kAxes = {"cache", "bits", "rank", "sparsity", "backbone"};

std::vector<FlagSpec> flags() {
  std::vector<FlagSpec> f = eval_flags();
  f.insert(f.end(), {
      {"bits", "LIST", "quantization bits", "2,4"},
      {"rank", "LIST", "low-rank rank (prefill and streamed blocks, K and V) for gear / gear-l", "0,2,4"},
      {"sparsity", "LIST", "outlier percent for gear", "0,2"},
      {"methods", "LIST", "methods: gear, gear-l, quant (or kivi, groupwise, uniform: bits only)", "gear,gear-l,quant"},
      {"backbone", "B", "quantization backbone of the methods that take one", "kivi"},
  });
  const std::vector<FlagSpec> c = shared_cache_flags(kAxes);
  f.insert(f.end(), c.begin(), c.end());
  return f;
}

// One setting of the cross product: the method's defaults, the shared flags, then the axes' values.
NamedConfig setting(const Args& args, const std::string& method, const std::string& bits, const std::string& rank,
                    const std::string& sparsity) {
  CacheConfig c;
  set_option(c, "cache", method);
  if (!c.quantized())
    throw UsageError("sweep: --methods: '" + method + "' has no bits to sweep (gear, gear-l, quant, kivi, groupwise, uniform)");
  // kivi, groupwise and uniform are defined by their backbone.
  if (c.method != CacheMethod::Kivi && c.method != CacheMethod::Groupwise && c.method != CacheMethod::Uniform)
    set_option(c, "backbone", args.str("backbone"));
  apply_cache_flags(args, kAxes, c);
  set_option(c, "bits", bits);
  std::string name = method + " b" + bits;
  if (c.has_low_rank()) set_option(c, "rank", rank), name += " r" + rank;
  if (c.has_sparse()) set_option(c, "sparsity", sparsity), name += " s" + sparsity;
  return {name, c};
}

// The cross product; an axis that does not apply to a method (rank for quant, sparsity for gear-l)
// is not repeated for it, so no two entries are the same cache.
std::vector<NamedConfig> settings(const Args& args) {
  std::vector<NamedConfig> out;
  const auto ranks = split_list(args, "rank"), sparsities = split_list(args, "sparsity");
  for (const std::string& method : split_list(args, "methods")) {
    for (const std::string& bits : split_list(args, "bits")) {
      for (const std::string& rank : ranks) {
        for (const std::string& s : sparsities) {
          out.push_back(setting(args, method, bits, rank, s));
          if (!out.back().config.has_sparse()) break;
        }
        if (!out.back().config.has_low_rank()) break;
      }
    }
  }
  return out;
}

}  // namespace

int cmd_sweep(int argc, char** argv) {
  Args args("sweep", flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text(
        "Evaluate the cross product of --methods x --bits x --rank x --sparsity like `gearlab eval` (FP16 first) "
        "and write one JSON entry per setting: the data of the quality-vs-compression Pareto plot. Axes that do "
        "not apply to a method (rank for quant, sparsity for gear-l) are not repeated for it.");
    return 0;
  }
  args.required("json");
  const std::vector<NamedConfig> list = settings(args);
  std::cerr << "sweep: " << list.size() << " settings + FP16\n";
  EvalSetup setup = load_eval_setup(args);
  const EvalRun run = evaluate(*setup.model.model, setup.tokens, list, setup.options, report_progress);
  std::cout << format_table(run);
  write_eval_json(args, eval_document(setup, run));
  return 0;
}

}  // namespace gear::cli
