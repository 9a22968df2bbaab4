#pragma once
// Loading weights from wherever a user points us. Every failure is a gear::Error naming the
// file and the problem.
#include <cstdint>
#include <string>

#include "core/model/weights.h"

namespace gear {

// llama2.c checkpoint (legacy version 0). Float32 tensors on the CPU.
Weights load_llama2c(const std::string& path);

// Hugging Face Llama directory: config.json + model.safetensors or sharded *.safetensors with
// model.safetensors.index.json. F32/F16/BF16 are converted to float32 on the CPU (the model
// casts them to its dtype). q/k keep the HF permutation, so rope_layout is HalfSplit.
Weights load_hf_directory(const std::string& dir);

// Random weights of a named real shape, clearly labelled as generated (config.generated,
// config.source = "generated:<name>"). Created directly on `device` in `dtype` so a 7B shape
// never touches host memory. Names: llama2-7b, llama2-13b, llama3-8b, tinyllama-1.1b,
// stories260K-shape ... (list_generated_shapes()).
Weights generate_weights(const std::string& shape, const std::string& device, const std::string& dtype,
                         uint64_t seed = 0);
std::string list_generated_shapes();

// Only the configuration (no tensors read): for `gearlab info` on models too big for RAM.
ModelConfig load_config(const std::string& path);

// Dispatch: "gen:<shape>" -> generated; a directory -> HF; a .bin file -> llama2.c.
Weights load_weights(const std::string& path, const std::string& device = "cpu", const std::string& dtype = "f32");

}  // namespace gear
