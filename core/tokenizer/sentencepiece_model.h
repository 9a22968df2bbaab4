#pragma once
// SentencePiece .model files (Llama-2 and most Hugging Face Llama checkpoints), read directly.
#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace gear {

// BPE models with the identity normalizer and byte fallback (Llama's); anything else, or a file
// that is not a SentencePiece ModelProto, throws gear::Error naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path);

}  // namespace gear
