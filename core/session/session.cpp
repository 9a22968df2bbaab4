#include "core/session/session.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/cache/make_cache.h"
#include "core/io/find_tokenizer.h"
#include "core/io/loader.h"
#include "core/model/llama.h"
#include "core/tokenizer/chat_format.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace gear {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

constexpr size_t kHistoryPoints = 600;
constexpr double kPublishInterval = 1.0 / 60;  // a UI cannot show more often than this anyway

}  // namespace

// One side's conversation: its cache and every token in it. `exchanges` counts the exchanges already
// in the cache, so a side that sat a turn out catches up with the reply that was shown.
struct Session::Conversation {
  KvCache cache;
  CacheConfig config;
  std::vector<int> tokens;
  size_t exchanges = 0;
  int64_t first_prompt = 0;
};

Session::Session() {
  auto initial = std::make_shared<SessionState>();
  initial->cache = preset(kDefaultPreset);
  state_ = initial;
  t0_ = now_seconds();
  model_thread_ = std::thread([this] { model_worker(); });
  analysis_thread_ = std::thread([this] { analysis_worker(); });
}

Session::~Session() {
  cancel_ = true;
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    stopping_ = true;
    queue_.clear();
  }
  queue_cv_.notify_all();
  {
    std::lock_guard<std::mutex> lock(analysis_mutex_);
    analysis_wanted_ = false;
  }
  analysis_cv_.notify_all();
  model_thread_.join();
  analysis_thread_.join();
}

// ---- state ---------------------------------------------------------------------------------------

std::shared_ptr<const SessionState> Session::state() const {
  std::lock_guard<std::mutex> lock(state_mutex_);
  return state_;
}

void Session::set_listener(std::function<void()> on_change) {
  std::lock_guard<std::mutex> lock(state_mutex_);
  listener_ = std::move(on_change);
}

void Session::set_report_writer(ReportWriter writer) {
  std::lock_guard<std::mutex> lock(state_mutex_);
  report_writer_ = std::move(writer);
}

// Copy, edit, swap: readers keep the snapshot they hold, unchanged.
void Session::publish(const std::function<void(SessionState&)>& edit) {
  std::function<void()> listener;
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    auto next = std::make_shared<SessionState>(*state_);
    edit(*next);
    ++next->version;
    state_ = next;
    listener = listener_;
  }
  if (listener) listener();
}

void Session::report_error(const std::string& message) {
  publish([&](SessionState& s) {
    s.error = message;
    ++s.error_count;
  });
}

// ---- the model worker ----------------------------------------------------------------------------

void Session::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    queue_.push_back(std::move(job));
  }
  queue_cv_.notify_one();
}

void Session::model_worker() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(queue_mutex_);
      queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_job_ = true;
    }
    try {
      job();
    } catch (const std::exception& e) {  // gear::Error, c10::Error (e.g. out of memory): one line
      std::string what = e.what();
      report_error(what.substr(0, what.find('\n')));
      publish([](SessionState& s) { s.busy = false, s.busy_what.clear(); });
    }
    {
      std::lock_guard<std::mutex> lock(queue_mutex_);
      running_job_ = false;
    }
    idle_cv_.notify_all();
  }
}

void Session::wait_idle() {
  {
    std::unique_lock<std::mutex> lock(queue_mutex_);
    idle_cv_.wait(lock, [&] { return queue_.empty() && !running_job_; });
  }
  std::unique_lock<std::mutex> lock(analysis_mutex_);
  analysis_cv_.wait(lock, [&] { return !analysis_wanted_ && !analysis_running_; });
}

void Session::load_model(const ModelRequest& request) {
  cancel_ = true;  // a new model supersedes a turn in progress
  post([this, request] { do_load(request); });
}

void Session::do_load(const ModelRequest& req) {
  cancel_ = false;
  publish([&](SessionState& s) { s.busy = true, s.busy_what = "loading " + req.model_path; });
  require(!req.model_path.empty(), "load model: no model path given");
  const std::string device = req.device.empty() ? "cpu" : req.device;
  std::string dtype = req.dtype.empty() || req.dtype == "auto" ? (device == "cpu" ? "f32" : "f16") : req.dtype;
  parse_device(device);
  parse_dtype(dtype);
  Weights w = load_weights(req.model_path, device, dtype);
  const std::string tok_path = !req.tokenizer_path.empty() ? req.tokenizer_path
                                                           : find_tokenizer_for(req.model_path, w.config.vocab_size);
  require(!tok_path.empty(), req.model_path + ": no tokenizer found beside the model; give its path");
  auto tok = load_tokenizer(tok_path);
  require(tok->vocab_size() == w.config.vocab_size,
          tok_path + ": tokenizer has " + std::to_string(tok->vocab_size()) + " tokens but the model's vocabulary is " +
              std::to_string(w.config.vocab_size));
  auto model = std::make_unique<LlamaModel>(std::move(w), DeviceSpec{device, dtype});
  const ModelConfig& c = model->config();
  const int64_t context = req.context > 0 ? std::min<int64_t>(req.context, c.max_seq_len) : c.max_seq_len;
  // Only now replace the old model: a failed load leaves the session as it was.
  sides_[0].reset();
  sides_[1].reset();
  prompt_tokens_.clear();
  model_ = std::move(model);
  tokenizer_ = std::move(tok);
  ModelInfo info;
  info.path = req.model_path, info.tokenizer_path = tok_path, info.device = device, info.dtype = dtype;
  info.config = c, info.weight_bytes = model_->weight_bytes(), info.context = context;
  info.description = c.describe();
  publish([&](SessionState& s) {
    s.model_loaded = true, s.model = info, s.chat.clear(), s.snapshot.reset(), s.analysis.reset();
    s.live[0] = s.live[1] = LiveStats{};
    s.busy = false, s.busy_what.clear();
  });
  // The current settings may not fit the new model's shape: say so now, keep them for editing.
  try {
    validate(state()->cache, c.n_layers, c.n_kv_heads, c.hd());
  } catch (const Error& e) {
    report_error(e.what());
  }
}

void Session::set_cache(const CacheConfig& config) {
  const auto s = state();
  if (s->model_loaded) {
    const ModelConfig& c = s->model.config;
    try {
      validate(config, c.n_layers, c.n_kv_heads, c.hd());
    } catch (const Error& e) {
      report_error(e.what());
      return;
    }
  }
  publish([&](SessionState& st) { st.cache = config, st.error.clear(); });
  request_analysis();
}

void Session::set_gear(bool on) {
  publish([&](SessionState& s) { s.gear_on = on; });
}

void Session::set_compare(bool on) {
  publish([&](SessionState& s) { s.compare = on; });
}

void Session::cancel() { cancel_ = true; }

void Session::new_chat() {
  cancel_ = true;
  post([this] {
    cancel_ = false;
    sides_[0].reset();
    sides_[1].reset();
    prompt_tokens_.clear();
    publish([](SessionState& s) {
      s.chat.clear(), s.snapshot.reset(), s.analysis.reset();
      s.live[0] = s.live[1] = LiveStats{};
    });
  });
}

void Session::send(const std::string& user_text, const TurnOptions& options) {
  cancel_ = false;
  post([this, user_text, options] { run_turn(user_text, options); });
}

// ---- a chat turn ---------------------------------------------------------------------------------

namespace {

// The tokens a turn adds before the reply: the chat template's [INST] block (after closing the
// previous reply with </s>), or the text itself to be continued.
std::vector<int> turn_tokens(const Tokenizer& tok, const std::string& text, const TurnOptions& o, bool first) {
  if (o.chat_template) {
    std::vector<int> t;
    if (!first) t.push_back(tok.eos_id());
    const auto block = format_llama2_chat(tok, first ? o.system : "", {{text, ""}});
    t.insert(t.end(), block.begin(), block.end());
    return t;
  }
  return tok.encode(text, /*add_bos=*/first);
}

}  // namespace

void Session::run_turn(const std::string& text, const TurnOptions& options) {
  require(model_ != nullptr, "chat: load a model first");
  require(!text.empty(), "chat: the message is empty");
  options.sampling.validate();
  require(options.max_new_tokens >= 1, "chat: max new tokens must be at least 1");
  const auto st = state();
  validate(st->cache, model_->config().n_layers, model_->config().n_kv_heads, model_->config().hd());
  const CacheConfig side_config[2] = {preset("full"), st->gear_on ? st->cache : preset("full")};
  std::vector<int> run;
  if (st->compare) run = {kReference, kCompressed};
  else run = {st->gear_on ? kCompressed : kReference};

  const bool first = st->chat.empty();
  const std::vector<int> prompt = turn_tokens(*tokenizer_, text, options, first);  // throws on bad UTF-8
  const size_t index = st->chat.size();
  publish([&](SessionState& s) {
    Exchange e;
    e.user = text;
    s.chat.push_back(e);
    s.busy = true, s.busy_what = "generating";
    s.error.clear();
  });
  prompt_tokens_.resize(index);
  prompt_tokens_.push_back(prompt);
  try {
    answer(index, prompt, options, side_config, run);
  } catch (...) {
    // A turn that failed before any side answered leaves no trace in the conversation.
    bool dropped = false;
    publish([&](SessionState& s) {
      dropped = index < s.chat.size() && !s.chat[index].answered[0] && !s.chat[index].answered[1];
      if (dropped) s.chat.resize(index);
      else if (index < s.chat.size()) s.chat[index].done = true;
      s.busy = false, s.busy_what.clear();
    });
    if (dropped) prompt_tokens_.resize(index);
    throw;
  }
  refresh_snapshot();
}

void Session::answer(size_t index, const std::vector<int>& prompt, const TurnOptions& options,
                     const CacheConfig side_config[2], const std::vector<int>& run) {
  const std::vector<std::vector<int>>& prompts = prompt_tokens_;  // each exchange's tokens as sent
  for (int side : run) {
    // Build or rebuild the side's cache when its settings changed; then catch up on exchanges it sat out.
    auto& conv = sides_[side];
    if (!conv || to_json(conv->config) != to_json(side_config[side])) {
      auto fresh = std::make_unique<Conversation>(
          Conversation{make_cache(*model_, side_config[side], 1, state()->model.context), side_config[side], {}, 0, 0});
      if (conv && !conv->tokens.empty()) {
        model_->prefill(fresh->cache, 0, conv->tokens, true);
        fresh->tokens = conv->tokens, fresh->exchanges = conv->exchanges, fresh->first_prompt = conv->first_prompt;
      }
      conv = std::move(fresh);
    }
    const auto now = state();
    std::vector<int> catch_up;
    for (size_t i = conv->exchanges; i < index; ++i) {
      const Exchange& e = now->chat[i];
      catch_up.insert(catch_up.end(), prompts[i].begin(), prompts[i].end());
      const auto& reply = e.answered[side] ? e.reply_tokens[side] : e.reply_tokens[1 - side];
      catch_up.insert(catch_up.end(), reply.begin(), reply.end());
    }
    std::vector<int> feed = catch_up;
    feed.insert(feed.end(), prompt.begin(), prompt.end());
    const int64_t room = conv->cache.capacity() - int64_t(conv->tokens.size()) - int64_t(feed.size());
    require(room >= 1, "chat: the conversation is " + std::to_string(conv->tokens.size() + feed.size()) +
                           " tokens but the context holds " + std::to_string(conv->cache.capacity()) +
                           ": start a new chat");
    if (conv->tokens.empty()) conv->first_prompt = int64_t(feed.size());

    Sampler sampler(options.sampling, model_->device());
    double last_publish = 0;
    at::Tensor logits = model_->prefill(conv->cache, 0, feed, /*last_only=*/true);
    conv->tokens.insert(conv->tokens.end(), feed.begin(), feed.end());
    conv->exchanges = index;
    std::vector<int> reply, offsets;
    std::string reply_text;
    int prev = conv->tokens.back();
    const int max_new = int(std::min<int64_t>(options.max_new_tokens, room));
    double decode_start = now_seconds();
    int decoded = 0;
    bool cancelled = false;
    for (int n = 0; n < max_new; ++n) {
      if (cancel_) {
        cancelled = true;
        break;
      }
      const int token = int(sampler.sample(logits).item<int64_t>());
      if (token == tokenizer_->eos_id() || token == tokenizer_->bos_id()) break;
      reply.push_back(token);
      offsets.push_back(int(reply_text.size()));
      reply_text += tokenizer_->decode_token(prev, token);
      prev = token;
      if (n + 1 < max_new && int64_t(conv->tokens.size()) + 1 < conv->cache.capacity()) {
        const int64_t pos = int64_t(conv->tokens.size());
        logits = model_->decode(conv->cache, at::full({1}, int64_t(token), at::TensorOptions().dtype(at::kLong).device(model_->device())),
                                at::full({1}, pos, at::TensorOptions().dtype(at::kLong).device(model_->device())));
        conv->tokens.push_back(token);
        ++decoded;
      }
      const double t = now_seconds();
      if (t - last_publish >= kPublishInterval || n + 1 == max_new) {
        last_publish = t;
        const double rate = decoded > 0 ? decoded / std::max(1e-9, t - decode_start) : 0;
        LiveStats live{rate, conv->cache.length(0), conv->cache.bytes(), fp16_bytes(model_->config(), conv->cache.length(0))};
        publish([&](SessionState& s) {
          Exchange& e = s.chat[index];
          e.reply[side] = reply_text;
          e.reply_tokens[side] = reply;
          e.token_offsets[side] = offsets;
          s.live[side] = live;
          StatPoint p;
          p.seconds = t - t0_;
          p.tokens_per_s[side] = rate;
          p.tokens_per_s[1 - side] = s.history.empty() ? 0 : s.history.back().tokens_per_s[1 - side];
          p.ratio_vs_fp16 = s.live[kCompressed].ratio_vs_fp16();
          s.history.push_back(p);
          if (s.history.size() > kHistoryPoints) s.history.erase(s.history.begin());
        });
      }
    }
    conv->exchanges = index + 1;
    // The last sampled token is shown but not yet in the cache: feed it now, so the cache holds
    // exactly the conversation as shown.
    const size_t fed = size_t(decoded);
    if (fed < reply.size()) {
      std::vector<int> tail(reply.begin() + long(fed), reply.end());
      if (int64_t(conv->tokens.size() + tail.size()) <= conv->cache.capacity()) {
        model_->prefill(conv->cache, 0, tail, true);
        conv->tokens.insert(conv->tokens.end(), tail.begin(), tail.end());
      }
    }
    const LiveStats live{decoded > 0 ? decoded / std::max(1e-9, now_seconds() - decode_start) : 0, conv->cache.length(0),
                         conv->cache.bytes(), fp16_bytes(model_->config(), conv->cache.length(0))};
    publish([&](SessionState& s) {
      Exchange& e = s.chat[index];
      e.reply[side] = reply_text;
      e.reply_tokens[side] = reply;
      e.token_offsets[side] = offsets;
      e.answered[side] = true;
      e.cancelled = e.cancelled || cancelled;
      s.live[side] = live;
    });
    if (cancelled) break;
  }
  publish([&](SessionState& s) {
    Exchange& e = s.chat[index];
    if (e.answered[0] && e.answered[1]) {
      const auto& a = e.reply_tokens[0];
      const auto& b = e.reply_tokens[1];
      size_t i = 0;
      while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
      e.first_divergence = i == a.size() && i == b.size() ? -1 : int(i);
      for (int side : {0, 1}) {
        const auto& off = e.token_offsets[side];
        if (e.first_divergence >= 0)
          e.divergence_char[side] = size_t(e.first_divergence) < off.size() ? off[size_t(e.first_divergence)]
                                                                            : int(e.reply[side].size());
      }
    }
    e.done = true;
    s.busy = false, s.busy_what.clear();
  });
}

// The analysis reads the exact K/V of the conversation: the reference side's full cache, brought up
// to date with the shown replies when it sat turns out.
void Session::refresh_snapshot() {
  const auto st = state();
  if (!model_ || st->chat.empty()) return;
  auto& ref = sides_[kReference];
  if (!ref) ref = std::make_unique<Conversation>(Conversation{model_->make_full_cache(1, st->model.context), preset("full"), {}, 0, 0});
  std::vector<int> catch_up;
  for (size_t i = ref->exchanges; i < st->chat.size(); ++i) {
    const Exchange& e = st->chat[i];
    if (!e.done) break;
    const auto& p = prompt_tokens_.at(i);  // the tokens the turn was sent with (template included)
    catch_up.insert(catch_up.end(), p.begin(), p.end());
    const auto& reply = e.answered[kReference] ? e.reply_tokens[kReference] : e.reply_tokens[kCompressed];
    catch_up.insert(catch_up.end(), reply.begin(), reply.end());
  }
  if (!catch_up.empty() && int64_t(ref->tokens.size() + catch_up.size()) <= ref->cache.capacity()) {
    if (ref->tokens.empty()) ref->first_prompt = int64_t(catch_up.size());
    model_->prefill(ref->cache, 0, catch_up, true);
    ref->tokens.insert(ref->tokens.end(), catch_up.begin(), catch_up.end());
    ref->exchanges = st->chat.size();
  }
  if (ref->tokens.empty()) return;
  auto snap = std::make_shared<CacheSnapshot>(capture_snapshot(ref->cache, model_->config(), 0, ref->first_prompt));
  publish([&](SessionState& s) { s.snapshot = snap; });
  request_analysis();
}

// ---- analysis ------------------------------------------------------------------------------------

void Session::analyze() { request_analysis(); }

void Session::request_analysis() {
  {
    std::lock_guard<std::mutex> lock(analysis_mutex_);
    analysis_wanted_ = true;
  }
  analysis_cv_.notify_all();
}

// Latest request wins: a burst of slider moves costs one analysis after the one in flight.
void Session::analysis_worker() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(analysis_mutex_);
      analysis_cv_.wait(lock, [&] { return analysis_wanted_ || stopping_; });
      if (stopping_) return;
      analysis_wanted_ = false;
      analysis_running_ = true;
    }
    const auto st = state();
    std::shared_ptr<const Analysis> result;
    std::string error;
    if (st->snapshot && st->cache.quantized()) {
      publish([](SessionState& s) { s.analyzing = true; });
      try {
        result = std::make_shared<Analysis>(gear::analyze(*st->snapshot, st->cache));
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    publish([&](SessionState& s) {
      s.analysis = result;
      s.analyzing = false;
      if (!error.empty()) s.error = error, ++s.error_count;
    });
    {
      std::lock_guard<std::mutex> lock(analysis_mutex_);
      analysis_running_ = false;
    }
    analysis_cv_.notify_all();
  }
}

// ---- export --------------------------------------------------------------------------------------

std::vector<std::string> Session::export_report(const std::string& dir) const {
  const auto s = state();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  require(!ec, dir + ": cannot create the report folder (" + ec.message() + ")");
  nlohmann::json j;
  j["kind"] = "session";
  j["model"] = {{"path", s->model.path}, {"description", s->model.description}, {"device", s->model.device},
                {"dtype", s->model.dtype}, {"generated_weights", s->model.config.generated}};
  j["cache"] = to_json(s->cache);
  j["cache_text"] = describe(s->cache);
  j["gear_on"] = s->gear_on;
  j["compare"] = s->compare;
  nlohmann::json chat = nlohmann::json::array();
  for (const Exchange& e : s->chat)
    chat.push_back({{"user", e.user}, {"reference", e.reply[0]}, {"compressed", e.reply[1]},
                    {"first_divergence", e.first_divergence}, {"cancelled", e.cancelled}});
  j["chat"] = chat;
  for (int side : {0, 1}) {
    const LiveStats& l = s->live[side];
    j[side == 0 ? "reference_stats" : "compressed_stats"] = {
        {"tokens_per_s", l.tokens_per_s}, {"tokens", l.tokens}, {"bytes_in_use", l.bytes.in_use()},
        {"fp16_bytes", l.fp16_bytes}, {"ratio_vs_fp16", l.ratio_vs_fp16()}};
  }
  if (s->analysis) j["analysis"] = to_json(*s->analysis, /*with_spectra=*/true, /*with_outliers=*/false);
  const std::string path = (std::filesystem::path(dir) / "session.json").string();
  std::ofstream out(path);
  require(bool(out), path + ": cannot write");
  out << j.dump(1) << "\n";
  out.close();
  require(bool(out), path + ": write failed");
  std::vector<std::string> written{path};
  if (s->analysis) {
    const std::string apath = (std::filesystem::path(dir) / "analysis.json").string();
    nlohmann::json a = to_json(*s->analysis, /*with_spectra=*/true, /*with_outliers=*/true);
    a["model"] = s->model.path;
    std::ofstream aout(apath);
    aout << a.dump(1) << "\n";
    aout.close();
    require(bool(aout), apath + ": write failed");
    written.push_back(apath);
  }
  ReportWriter writer;
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    writer = report_writer_;
  }
  if (writer) {
    auto more = writer(written, dir);
    written.insert(written.end(), more.begin(), more.end());
  }
  return written;
}

}  // namespace gear
