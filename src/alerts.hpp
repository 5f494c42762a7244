// Alert delivery: fener's events (src/events.hpp) to webhooks, as fener's own signed JSON,
// as Slack messages or as Alertmanager alerts. Each webhook has a bounded queue and one
// delivery in flight (so order is kept), groups events that arrive close together,
// suppresses repeats of the same state, re-sends what still fires, and retries with
// exponential backoff and full jitter. Nothing here blocks the event loop: publish()
// only queues. The decisions (what to send, when, how long to back off) are pure
// functions below, tested without waiting. docs/alerts.md describes the formats.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "src/config.hpp"
#include "src/events.hpp"
#include "src/http_client.hpp"

namespace fener {

namespace alerting {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// What a webhook last accepted for one condition (Event::key()).
struct Memory {
  std::string state;  // "" after a failed delivery: the next event is not a duplicate
  SteadyTime sent_at{};
  bool open = false;  // an alert went out for it and no resolution yet
  // Alertmanager identifies an alert by its labels: resolving must repeat them exactly.
  std::string label_severity;
  WallTime starts_at{};
  Event last;  // re-sent while open
};

// Whether an event goes to a webhook. filtered: not its kind, or below min_severity and
// nothing open to update or resolve; duplicate: same state as the last one accepted for
// the key, less than `repeat` ago.
enum class Admit { send, filtered, duplicate };
Admit admit(const WebhookConfig& w, const Event& e, const Memory* last, SteadyTime now,
            Duration repeat);

// The wait before retry number `retry` (1 = the first retry): full jitter, uniform in
// [0, min(max, initial * 2^(retry-1))]. `unit` is a random number in [0, 1).
Duration backoff_delay(int retry, Duration initial, Duration max, double unit);

// Retry-After as delay-seconds or an HTTP date; nullopt when unreadable. Dates in the
// past give 0.
std::optional<Duration> parse_retry_after(std::string_view value, WallTime now);

// How a delivery attempt ended.
enum class Outcome { delivered, retry, permanent, cancelled };
struct Verdict {
  Outcome outcome;
  std::string why;  // "HTTP 503", "connection refused", ... (no URL, no secret)
};
Verdict judge(const HttpResult& r, WebhookFormat format);

// Grouping: the queue's arrival times, oldest first. Ready when the oldest has waited
// group_wait (or the queue holds max_batch); take is how many go out together: those that
// arrived within group_wait of the oldest, at most max_batch. When not ready, wake says
// when to look again.
struct BatchPlan {
  bool ready = false;
  SteadyTime wake{};
  std::size_t take = 0;
};
BatchPlan plan_batch(const std::vector<SteadyTime>& queued_at, SteadyTime now, Duration group_wait,
                     std::size_t max_batch);

// One event waiting for delivery, with what its format needs beyond the event.
struct Pending {
  Event event;
  bool repeat = false;  // a reminder that the condition still fires
  SteadyTime queued_at{};
  // alertmanager: the labels' severity, when the alert began, and (when the severity
  // changed while firing) the older alert to resolve in the same delivery.
  std::string label_severity;
  WallTime starts_at{};
  std::string resolve_severity;
  WallTime resolve_starts_at{};
};

// Delivery bodies; `sent` is the time of the attempt.
struct Origin {
  std::string node;
  std::string scope;
  std::string generator_url;  // alertmanager generatorURL; "" leaves it out
};
std::string json_body(const std::vector<Pending>& batch, const Origin& o, const std::string& id,
                      WallTime sent);
std::string slack_body(const std::vector<Pending>& batch, const Origin& o);
// Firing alerts end at sent + 4 * resend unless re-sent: a fener that died leaves no
// alert firing for ever, and Alertmanager's own resolve_timeout does not matter.
std::string alertmanager_body(const std::vector<Pending>& batch, const Origin& o, WallTime sent,
                              Duration resend);

std::string rfc3339_ms(WallTime t);  // "2026-11-28T08:13:45.123Z"
// "sha256=<lowercase hex HMAC-SHA256 of body under secret>"
std::string signature(const std::string& secret, const std::string& body);

}  // namespace alerting

// Counters of one webhook, for logs, /status and /metrics. Events unless said otherwise.
struct WebhookStats {
  std::string name;
  std::string format;
  std::string target;            // the URL without path, query or credentials
  std::uint64_t deliveries = 0;  // deliveries the receiver accepted
  std::uint64_t events_sent = 0;
  std::uint64_t failed_attempts = 0;  // attempts that did not deliver (timeouts included)
  std::uint64_t timeouts = 0;
  std::uint64_t retries = 0;
  std::uint64_t duplicates = 0;         // suppressed as the same state within repeat_interval
  std::uint64_t dropped_overflow = 0;   // oldest events dropped from a full queue
  std::uint64_t dropped_permanent = 0;  // refused for good (4xx other than 408/429, ...)
  std::uint64_t dropped_exhausted = 0;  // still failing after retry.attempts attempts
  std::uint64_t dropped_shutdown = 0;   // still queued when stop()'s grace ran out
  std::size_t queue_depth = 0;
  bool in_flight = false;
  std::string last_error;  // "" after a success
};
nlohmann::json to_json(const WebhookStats& s);

struct AlertOptions {
  alerting::Origin origin;
  // Random numbers in [0, 1) for backoff jitter; default a seeded generator.
  std::function<double()> random;
  std::size_t max_batch = 100;  // events in one delivery at most
  // Alertmanager expires an alert nobody re-sends; fener re-sends open ones at least this
  // often (and repeat_interval when shorter).
  Duration alertmanager_resend{std::chrono::minutes(1)};
};

class AlertDispatcher {
 public:
  AlertDispatcher(asio::io_context& io, HttpClient& http, AlertsConfig cfg, AlertOptions opts);
  ~AlertDispatcher();  // abandons whatever is left; call stop() first and wait for active()
  AlertDispatcher(const AlertDispatcher&) = delete;
  AlertDispatcher& operator=(const AlertDispatcher&) = delete;

  // Starts one delivery loop per webhook.
  void start();
  // Queues e for every webhook that wants it; returns at once.
  void publish(const Event& e);
  // Ends the loops: queued events get one prompt attempt (no group wait, no retries)
  // within `grace`; what is left then is dropped and logged. Returns at once.
  void stop(Duration grace = std::chrono::seconds(2));
  // Loops still running; after stop() the object may be destroyed once this is 0.
  std::size_t active() const;
  // Carries over what an earlier dispatcher (before a reload) knew about open alerts and
  // repeats, for webhooks with the same name and format.
  void adopt_state(const AlertDispatcher& old);

  std::vector<WebhookStats> stats() const;
  nlohmann::json stats_json() const;  // [{name, format, target, deliveries, ...}]

  struct Hook;
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace fener
