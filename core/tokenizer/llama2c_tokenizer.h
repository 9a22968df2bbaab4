#pragma once
// The llama2.c tokenizer.bin format (../shared/README.md, run.c's build_tokenizer): int32
// max_token_length, then per token float32 score, int32 length, bytes. Ids 0..2 are <unk>, <s>,
// </s>; ids 3..258 the byte pieces <0x00>..<0xFF>. Encoding is run.c's, via BpeTokenizer.
#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace gear {

// The vocabulary size is what the file holds (read to end of file). Throws gear::Error naming
// the file: missing, truncated (at which token), absurd lengths, wrong byte-piece layout.
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path);

}  // namespace gear
