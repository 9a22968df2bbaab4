#pragma once
// Prompt templates: Llama-2-chat for chat-tuned checkpoints, plain completion otherwise.
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace gear {

struct ChatTurn {
  std::string user;
  std::string assistant;  // empty for the turn being asked
};

// <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
// BOS/EOS are token ids, never text; the system block only in the first turn, only if non-empty.
std::vector<int> format_llama2_chat(const Tokenizer& tok, const std::string& system, const std::vector<ChatTurn>& turns);

// Plain text with BOS (models that are not chat-tuned, such as stories260K).
std::vector<int> format_completion(const Tokenizer& tok, const std::string& text);

}  // namespace gear
