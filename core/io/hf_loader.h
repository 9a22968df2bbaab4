#pragma once
// Hugging Face Llama directories (load_hf_directory is declared in core/io/loader.h).
#include <string>

#include "core/model/config.h"

namespace gear {

// The model configuration from DIR/config.json alone (no tensors read), validated:
// rope_layout HalfSplit, source = dir. Throws gear::Error naming the file and the field.
ModelConfig load_hf_config(const std::string& dir);

}  // namespace gear
