#pragma once
#include <string>

namespace gear {

// The tokenizer that belongs with a model when the user names none: tokenizer.model in a
// Hugging Face directory; beside a llama2.c .bin, tokenizer.model, tokenizer.bin or
// tok<vocab>.bin. Returns "" when there is none (generated weights, or nothing found).
std::string find_tokenizer_for(const std::string& model_path, int vocab_size);

}  // namespace gear
