// gearlab info: what a model is and what its KV cache costs.
#include <iomanip>
#include <iostream>

#include "app/commands.h"
#include "app/model_setup.h"
#include "core/io/loader.h"
#include "core/model/llama.h"

namespace gear::cli {

int cmd_info(int argc, char** argv) {
  std::vector<FlagSpec> flags = {
      {"model", "PATH", "llama2.c .bin, Hugging Face directory, or gen:<shape>", ""},
      {"dtype", "T", "element type assumed for KV bytes: f32, f16 or bf16", "f16"},
  };
  Args args("info", flags, argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text("Print a model's configuration, parameter count and KV-cache bytes.\n"
                                "Generated shapes: " + list_generated_shapes());
    return 0;
  }
  const std::string path = args.required("model");
  const int elem = int(at::elementSize(dtype_flag(args, "dtype")));
  const ModelConfig c = load_config(path);
  const int64_t per_token = c.kv_bytes_per_token(elem);
  std::cout << "model:        " << path << (c.generated ? "  [GENERATED weights: " + c.source + "]" : "") << "\n"
            << "config:       " << c.describe() << "\n"
            << "parameters:   " << c.param_count() << " (" << std::fixed << std::setprecision(3)
            << c.param_count() / 1e9 << " B)\n"
            << "KV per token: " << per_token << " bytes (" << args.str("dtype") << ", K+V, all layers)\n"
            << "KV per 1k:    " << per_token * 1024 << " bytes (" << std::setprecision(2)
            << per_token * 1024 / double(1 << 20) << " MiB)\n"
            << "KV full ctx:  " << per_token * c.max_seq_len << " bytes at " << c.max_seq_len << " tokens\n";
  return 0;
}

}  // namespace gear::cli
