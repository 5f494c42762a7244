// What fener tells about itself over HTTP: GET /status (JSON), GET /metrics (Prometheus)
// and GET /healthz (is the daemon itself working). The documents are built by pure
// functions from a StatusSnapshot the daemon takes on the loop for each request; recent
// events and the counts derived from them live in RecentEvents, fed by the daemon.
// These routes need no token: they are read-only, and every piece of evidence passes
// through redact_secrets first (see docs/api.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "src/config.hpp"
#include "src/events.hpp"
#include "src/metrics.hpp"
#include "src/scheduler.hpp"

namespace fener {

class ApiServer;

using SystemTime = std::chrono::system_clock::time_point;

// "2026-11-28T08:13:45.123Z" (UTC, milliseconds).
std::string format_timestamp(SystemTime t);
// Reads what format_timestamp writes (the fraction is optional); nullopt otherwise.
std::optional<SystemTime> parse_timestamp(std::string_view text);
// "45s", "3m12s", "2h5m", "3d4h": a short age for tables.
std::string format_age(std::chrono::seconds age);

// A copy of `j` where the values of keys that name secrets (password, passwd, secret,
// token, authorization, cookie, any case, anywhere in the key) are "(redacted)" and the
// password in URLs with user info ("http://u:p@h") is too. Evidence comes from peers'
// answers and local files: this keeps it fit for the unauthenticated /status.
nlohmann::json redact_secrets(const nlohmann::json& j);

json event_to_json(const Event& e);

// The last `capacity` events (check changes and remedy decisions), and counts over every
// event since start (the ring forgets; counters must not).
class RecentEvents {
 public:
  explicit RecentEvents(std::size_t capacity = 50) : capacity_(capacity ? capacity : 1) {}

  void add(const Event& e);
  // Newest first.
  nlohmann::json to_json() const;
  const std::deque<Event>& events() const { return ring_; }  // oldest first

  // check -> new published status -> count; only changes from a previous status.
  using TransitionKey = std::pair<std::string, std::string>;
  const std::map<TransitionKey, std::uint64_t>& transitions() const { return transitions_; }
  // (rule, remedy, outcome) -> count, for the outcomes of an action or a would-be one:
  // succeeded, nothing_to_do, failed, would_run, refused, skipped.
  using ActionKey = std::tuple<std::string, std::string, std::string>;
  const std::map<ActionKey, std::uint64_t>& actions() const { return actions_; }
  // rule -> when its remedy last succeeded.
  const std::map<std::string, SystemTime>& last_success() const { return last_success_; }

 private:
  std::size_t capacity_;
  std::deque<Event> ring_;
  std::map<TransitionKey, std::uint64_t> transitions_;
  std::map<ActionKey, std::uint64_t> actions_;
  std::map<std::string, SystemTime> last_success_;
};

// Other modules add their own metrics (declare, then set) with one of these.
using MetricsContributor = std::function<void(MetricsRegistry&)>;

// Everything the three documents are built from, taken on the loop per request.
struct StatusSnapshot {
  std::string node;
  std::string scope;
  Mode mode = Mode::safe;
  std::string version;
  SystemTime started_at{};         // the daemon's start
  SystemTime checks_started_at{};  // the running scheduler's start (a reload restarts it)
  SystemTime now{};
  std::vector<CheckState> checks;  // Scheduler::states()
  // Per check name: how old its newest result may be before /healthz fails (see
  // result_bounds). A check missing here gets kDefaultResultBound.
  std::map<std::string, Duration> result_bounds;
  nlohmann::json rules = nlohmann::json::array();  // RemedyEngine::rules_json()
  const RecentEvents* events = nullptr;
  // More top-level sections of /status from other modules ({"agent": {...}}); they never
  // replace the built-in keys.
  nlohmann::json extra = nlohmann::json::object();
  std::vector<MetricsContributor> metrics;
};

inline constexpr Duration kDefaultResultBound{std::chrono::seconds(30)};

// 3 x (interval + timeout) + jitter per configured check: a loop that runs on time
// produces a result at least once per interval + timeout; three of those missed in a row
// is not a slow peer any more but a stuck daemon.
std::map<std::string, Duration> result_bounds(const Config& config);

// The worst published status; a check with no result yet counts as unknown.
Status overall_status(const std::vector<CheckState>& checks);

nlohmann::json status_json(const StatusSnapshot& s);
std::string metrics_text(const StatusSnapshot& s);

struct Health {
  bool ok = true;
  std::vector<std::string> problems;  // why not
  nlohmann::json to_json() const;
};
Health judge_health(const StatusSnapshot& s);

// `fener status`: a header line (node, scope, mode, version, uptime, overall status) and
// CHECK, STATUS, SINCE, MESSAGE for each check, from a /status document. Tolerates missing
// fields (a daemon of another version): they print as "-".
std::string status_table(const nlohmann::json& status);

// GET /status, GET /metrics and GET /healthz, without a token. `snapshot` is called on
// the loop once per request and must not block; what it captures must outlive `api`.
void add_status_routes(ApiServer& api, std::function<StatusSnapshot()> snapshot);

}  // namespace fener
