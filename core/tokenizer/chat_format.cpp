#include "core/tokenizer/chat_format.h"

#include "core/util/error.h"

namespace gear {
namespace {

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Meta's template puts the system prompt inside the first user message, not in its own turn.
std::string first_user_message(const std::string& system, const std::string& user) {
  const std::string sys = strip(system);
  if (sys.empty()) return strip(user);
  return "<<SYS>>\n" + sys + "\n<</SYS>>\n\n" + strip(user);
}

}  // namespace

// Each turn is encoded on its own (BOS ... EOS), exactly as Meta's chat_completion does, so the
// dummy-prefix space and the merges restart at every "[INST]"; joining the text first would not.
std::vector<int> format_llama2_chat(const Tokenizer& tok, const std::string& system, const std::vector<ChatTurn>& turns) {
  require(!turns.empty(), "chat: no turns to format");
  std::vector<int> ids;
  for (size_t i = 0; i < turns.size(); ++i) {
    const std::string user = i == 0 ? first_user_message(system, turns[i].user) : strip(turns[i].user);
    std::string text = "[INST] " + user + " [/INST]";
    const bool answered = i + 1 < turns.size() || !turns[i].assistant.empty();
    if (answered) text += " " + strip(turns[i].assistant) + " ";
    const std::vector<int> part = tok.encode(text, /*add_bos=*/true, /*add_eos=*/answered);
    ids.insert(ids.end(), part.begin(), part.end());
  }
  return ids;
}

std::vector<int> format_completion(const Tokenizer& tok, const std::string& text) { return tok.encode(text, true); }

}  // namespace gear
