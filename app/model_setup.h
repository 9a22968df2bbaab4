#pragma once
// What the subcommands share: turning flags into a loaded model and its tokenizer.
#include <memory>
#include <string>
#include <vector>

#include "app/cli_args.h"
#include "core/model/llama.h"
#include "core/tokenizer/tokenizer.h"

namespace gear::cli {

// The flags every model-loading command accepts.
std::vector<FlagSpec> model_flags();

struct LoadedModel {
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null for generated weights without --tokenizer
  std::string model_path, tokenizer_path;
};

LoadedModel load_model(const Args& args);

// The dtype named by flag `name`; an unknown name is a usage error (exit 2), not an engine error.
at::ScalarType dtype_flag(const Args& args, const std::string& name);

}  // namespace gear::cli
