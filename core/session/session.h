#pragma once
// The one small API the GUI and the CLI drive the engine through.
//
// Commands return at once; the work runs on the session's worker threads (one for the model:
// loading, chat turns; one for analysis, so moving a slider never waits behind a generation). After
// every change the session publishes a new immutable SessionState; the UI reads state() and renders
// it, and may ask to be told (set_listener) -- the callback runs on a worker thread, so a UI only
// posts a repaint from it. Errors (bad model file, invalid settings, out of memory, a prompt longer
// than the context) never throw out of a command: they land in SessionState::error as one line and
// the session keeps going.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/cache/kv_cache.h"
#include "core/compression/analysis.h"
#include "core/compression/cache_config.h"
#include "core/model/config.h"
#include "core/model/sampler.h"

namespace gear {

struct ModelRequest {
  std::string model_path;      // llama2.c .bin, Hugging Face directory, or gen:<shape>
  std::string tokenizer_path;  // "" = found beside the model
  std::string device = "cpu";  // cpu | cuda | cuda:N
  std::string dtype = "auto";  // auto (f32 on cpu, f16 on cuda) | f32 | f16 | bf16
  int64_t context = 0;         // KV capacity in tokens; 0 = the model's context
};

struct ModelInfo {
  std::string path, tokenizer_path, device, dtype, description;
  ModelConfig config;
  int64_t weight_bytes = 0;
  int64_t context = 0;
};

struct TurnOptions {
  int max_new_tokens = 128;
  SamplingParams sampling;  // both sides use the same seed: any difference comes from the cache
  bool chat_template = false;  // Llama-2-chat [INST] format (else the text is continued)
  std::string system;          // system prompt for the chat template
};

// The two sides of a comparison: the FP16 reference and the cache being studied.
enum Side { kReference = 0, kCompressed = 1 };

struct Exchange {
  std::string user;
  std::string reply[2];             // text per side ("" for a side that did not answer)
  std::vector<int> reply_tokens[2];
  std::vector<int> token_offsets[2];  // where each reply token's text starts in reply[side]
  bool answered[2] = {false, false};
  int first_divergence = -1;        // token index where the two replies first differ (-1: same or n/a)
  int divergence_char[2] = {-1, -1};  // that token's offset in each reply's text (-1: none)
  bool done = false;
  bool cancelled = false;
};

struct LiveStats {
  double tokens_per_s = 0;   // decode rate of the current/last turn
  int64_t tokens = 0;        // tokens held in the cache
  ByteBreakdown bytes;       // what the cache holds
  int64_t fp16_bytes = 0;    // the same tokens in an FP16 cache
  double ratio_vs_fp16() const { return bytes.in_use() > 0 ? double(fp16_bytes) / double(bytes.in_use()) : 0; }
};

struct StatPoint {
  double seconds = 0;            // since the session started
  double tokens_per_s[2] = {0, 0};
  double ratio_vs_fp16 = 0;      // compressed side
};

struct SessionState {
  uint64_t version = 0;
  bool model_loaded = false;
  ModelInfo model;
  CacheConfig cache;          // the settings of the compressed side
  bool gear_on = true;        // off: the compressed side runs the full cache too
  bool compare = true;        // answer with both sides
  bool busy = false;          // the model worker is loading or generating
  std::string busy_what;
  std::vector<Exchange> chat;
  LiveStats live[2];
  std::vector<StatPoint> history;  // the last few hundred points
  std::shared_ptr<const CacheSnapshot> snapshot;  // exact K/V of the reference side's conversation
  std::shared_ptr<const Analysis> analysis;       // of `snapshot` with `cache` (may lag one request)
  bool analyzing = false;
  std::string error;          // the last error, one line ("" = none)
  uint64_t error_count = 0;   // increments with every error (a UI shows each once)
};

class LlamaModel;
class Tokenizer;

class Session {
 public:
  Session();
  ~Session();  // cancels and joins the workers
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void load_model(const ModelRequest& request);
  // Validated against the loaded model (else the error is reported and the old settings stay);
  // the next turn uses it; the analysis is recomputed.
  void set_cache(const CacheConfig& config);
  void set_gear(bool on);
  void set_compare(bool on);
  void send(const std::string& user_text, const TurnOptions& options);
  void cancel();     // stops the turn in progress at the next token
  void new_chat();   // forgets the conversation (caches emptied)
  void analyze();    // recompute the analysis now (set_cache does it too)
  // Writes session.json (settings, model, transcript, live stats, the analysis) and, when there is an
  // analysis, analysis.json (the `gearlab analyze` format) into `dir`; the report writer hook
  // (set_report_writer) turns the latter into the HTML/CSV/PDF report. Runs on the caller's thread.
  std::vector<std::string> export_report(const std::string& dir) const;
  // (report inputs: the JSON files written, session.json first; the folder) -> files it wrote.
  using ReportWriter = std::function<std::vector<std::string>(const std::vector<std::string>& json, const std::string& dir)>;
  void set_report_writer(ReportWriter writer);

  std::shared_ptr<const SessionState> state() const;
  void set_listener(std::function<void()> on_change);
  void wait_idle();  // until both workers have nothing queued (tests, the CLI)

 private:
  struct Conversation;  // one side's KV cache and token history
  void model_worker();
  void analysis_worker();
  void post(std::function<void()> job);
  void publish(const std::function<void(SessionState&)>& edit);
  void report_error(const std::string& message);
  void run_turn(const std::string& text, const TurnOptions& options);
  void answer(size_t index, const std::vector<int>& prompt, const TurnOptions& options, const CacheConfig side_config[2],
              const std::vector<int>& run);
  void do_load(const ModelRequest& request);
  void reset_conversations();
  void refresh_snapshot();
  void request_analysis();

  mutable std::mutex state_mutex_;
  std::shared_ptr<const SessionState> state_;
  std::function<void()> listener_;
  ReportWriter report_writer_;

  std::mutex queue_mutex_;
  std::condition_variable queue_cv_, idle_cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false, running_job_ = false;
  std::atomic<bool> cancel_{false};

  std::mutex analysis_mutex_;
  std::condition_variable analysis_cv_;
  bool analysis_wanted_ = false, analysis_running_ = false;

  // Owned by the model worker.
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Conversation> sides_[2];
  std::vector<std::vector<int>> prompt_tokens_;  // each exchange's prompt tokens as sent (catch-up replays them)
  double t0_ = 0;

  std::thread model_thread_, analysis_thread_;
};

}  // namespace gear
