// gearlab chat: the session API on a terminal. Each line of stdin is a user turn; the compressed
// side's reply streams as it is generated, and with --compare the FP16 reply follows with the point
// where the two first differ. The same Session drives the desktop app.
#include <condition_variable>
#include <iostream>
#include <mutex>

#include "app/cache_flags.h"
#include "app/commands.h"
#include "core/session/session.h"
#include "core/util/error.h"

namespace gear::cli {
namespace {

std::vector<FlagSpec> chat_flags() {
  std::vector<FlagSpec> f = {
      {"model", "PATH", "llama2.c .bin, Hugging Face directory, or gen:<shape>", ""},
      {"tokenizer", "PATH", "tokenizer (found beside the model if omitted)", ""},
      {"device", "DEV", "cpu, cuda or cuda:N", "cpu"},
      {"dtype", "T", "auto, f32, f16 or bf16", "auto"},
      {"context", "N", "KV-cache capacity in tokens (default: the model's context)", "0"},
      {"max-tokens", "N", "new tokens per reply", "128"},
      {"temperature", "T", "0 = greedy", "0"},
      {"top-p", "P", "nucleus sampling mass", "0.9"},
      {"seed", "S", "sampling seed (both sides use it)", "42"},
      {"compare", "", "answer with the FP16 cache too, side by side", ""},
      {"no-gear", "", "GEAR off: the full cache only", ""},
      {"chat-template", "", "Llama-2-chat [INST] format (else the text is continued)", ""},
      {"system", "TEXT", "system prompt for --chat-template", ""},
      {"export", "DIR", "write the session report there at the end", ""},
  };
  std::vector<FlagSpec> c = cache_flags();
  f.insert(f.end(), c.begin(), c.end());
  return f;
}

}  // namespace

int cmd_chat(int argc, char** argv) {
  Args args("chat", chat_flags(), argc, argv, 2);
  if (args.help_requested()) {
    std::cout << args.help_text("Chat on the terminal through the session API (one user turn per stdin line).");
    return 0;
  }
  ModelRequest req;
  req.model_path = args.required("model");
  req.tokenizer_path = args.str("tokenizer");
  req.device = args.str("device");
  req.dtype = args.str("dtype");
  req.context = args.integer("context", 0, 1 << 24);
  TurnOptions turn;
  turn.max_new_tokens = int(args.integer("max-tokens", 1, 1 << 20));
  turn.sampling.temperature = float(args.number("temperature", 0, 100));
  turn.sampling.top_p = float(args.number("top-p", 1e-6, 1));
  turn.sampling.seed = uint64_t(args.integer("seed", 0, 1LL << 62));
  turn.chat_template = args.flag("chat-template");
  turn.system = args.str("system");
  const CacheConfig config = cache_config(args);
  const bool compare = args.flag("compare"), gear_on = !args.flag("no-gear");

  Session session;
  std::mutex m;
  std::condition_variable cv;
  uint64_t seen = 0;
  session.set_listener([&] { cv.notify_all(); });
  auto fail_on_error = [&](uint64_t before) {
    const auto s = session.state();
    if (s->error_count > before) fail(s->error);
  };
  session.load_model(req);
  session.wait_idle();
  fail_on_error(0);
  session.set_cache(config);
  fail_on_error(0);
  session.set_compare(compare);
  session.set_gear(gear_on);
  const int shown = gear_on ? kCompressed : kReference;
  const std::string label[2] = {"fp16", gear_on ? describe(config) : "fp16"};
  std::cerr << "model: " << session.state()->model.description << "\ncache: " << label[kCompressed]
            << "\n(one turn per line; end with Ctrl-D)\n";
  for (std::string line; std::getline(std::cin, line);) {
    if (line.empty()) continue;
    const uint64_t errors = session.state()->error_count;
    const size_t index = session.state()->chat.size();
    session.send(line, turn);
    size_t printed = 0;
    for (;;) {  // stream the shown side's reply as it grows
      std::unique_lock<std::mutex> lock(m);
      cv.wait_for(lock, std::chrono::milliseconds(50));
      const auto s = session.state();
      if (s->version == seen) continue;
      seen = s->version;
      if (s->error_count > errors) {
        std::cerr << "error: " << s->error << "\n";
        break;
      }
      if (s->chat.size() <= index) continue;
      const Exchange& e = s->chat[index];
      const std::string& text = e.reply[shown];
      if (text.size() > printed) std::cout << text.substr(printed) << std::flush, printed = text.size();
      if (e.done) {
        std::cout << "\n";
        if (compare) {
          std::cout << "[" << label[kReference] << "] " << e.reply[kReference] << "\n";
          std::cout << (e.first_divergence < 0 ? std::string("(identical replies)")
                                               : "(replies differ from token " + std::to_string(e.first_divergence) + ")")
                    << "\n";
        }
        std::cerr << "[" << s->live[shown].tokens_per_s << " tokens/s | cache " << s->live[shown].bytes.in_use()
                  << " bytes, " << s->live[shown].ratio_vs_fp16() << "x smaller than FP16]\n";
        break;
      }
    }
  }
  session.wait_idle();
  if (args.has("export")) {
    for (const auto& f : session.export_report(args.str("export"))) std::cerr << "wrote " << f << "\n";
  }
  return 0;
}

}  // namespace gear::cli
