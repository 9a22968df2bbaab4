#include "app/model_setup.h"

#include <ATen/Parallel.h>

#include "core/io/find_tokenizer.h"
#include "core/io/loader.h"
#include "core/util/error.h"

namespace gear::cli {

std::vector<FlagSpec> model_flags() {
  return {
      {"model", "PATH", "llama2.c .bin, Hugging Face directory, or gen:<shape> (generated weights)", ""},
      {"tokenizer", "PATH", "tokenizer.model or llama2.c tokenizer .bin (found beside the model if omitted)", ""},
      {"device", "DEV", "cpu, cuda or cuda:N", "cpu"},
      {"dtype", "T", "f32, f16, bf16 or auto (f32 on cpu, f16 on cuda)", "auto"},
      {"threads", "N", "CPU threads for ATen (0 = LibTorch's default)", "0"},
  };
}

at::ScalarType dtype_flag(const Args& args, const std::string& name) {
  try {
    return parse_dtype(args.str(name));
  } catch (const Error& e) {
    throw UsageError("--" + name + ": " + e.what());
  }
}

LoadedModel load_model(const Args& args) {
  LoadedModel out;
  out.model_path = args.required("model");
  const int threads = int(args.integer("threads", 0, 1024));
  if (threads > 0) at::set_num_threads(threads);
  DeviceSpec spec;
  spec.device = args.str("device");
  parse_device(spec.device);  // fail on a bad device before reading gigabytes
  spec.dtype = args.str("dtype");
  if (spec.dtype == "auto") spec.dtype = spec.device == "cpu" ? "f32" : "f16";
  else dtype_flag(args, "dtype");
  Weights w = load_weights(out.model_path, spec.device, spec.dtype);
  const int vocab = w.config.vocab_size;
  const bool generated = w.config.generated;
  out.model = std::make_unique<LlamaModel>(std::move(w), spec);
  out.tokenizer_path = args.has("tokenizer") ? args.str("tokenizer") : find_tokenizer_for(out.model_path, vocab);
  if (!out.tokenizer_path.empty()) {
    out.tokenizer = load_tokenizer(out.tokenizer_path);
    require(out.tokenizer->vocab_size() == vocab, out.tokenizer_path + ": tokenizer has " +
                                                      std::to_string(out.tokenizer->vocab_size()) +
                                                      " tokens but the model's vocabulary is " + std::to_string(vocab));
  } else {
    require(generated, out.model_path + ": no tokenizer found beside the model; pass --tokenizer PATH");
  }
  return out;
}

}  // namespace gear::cli
