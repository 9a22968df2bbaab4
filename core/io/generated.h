#pragma once
// Configurations of real models' shapes for generated (random) weights; see generate_weights
// in core/io/loader.h.
#include <string>
#include <vector>

#include "core/model/config.h"

namespace gear {

// The configuration generate_weights(shape, ...) would produce, without allocating anything:
// generated = true, source = "generated:<shape>". Throws gear::Error listing the valid names.
ModelConfig generated_config(const std::string& shape);

std::vector<std::string> generated_shape_names();

}  // namespace gear
