// Rules map findings to remedies. This file holds their configuration and the policy
// state machine of one rule: when it triggers, which ladder step is next, settling after
// an action, the rate limit and giving up. Pure logic with the clock passed in, so every
// decision is unit-tested without sleeping; the engine (src/remedy_engine.*) does the I/O.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "remedies/remedy.hpp"
#include "src/config.hpp"
#include "src/result.hpp"

namespace fener {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// `path: value` on a result's evidence. Path segments are separated by '.'; a segment
// `key[field=value]` selects the elements of the array `key` whose `field` equals value.
// Matches when any selected value equals one of `values` (compared as text).
struct EvidenceMatch {
  std::string path;
  std::vector<std::string> values;
};
bool evidence_matches(const EvidenceMatch& m, const json& evidence);

// When a rule fires: results of one check with one of `statuses` (never unknown:
// "could not check" is not a fault), `consecutive` in a row (and, with `for`, for at
// least that long), or `within_count` of them within `within_window`; optionally also
// matching a message pattern and evidence.
struct Trigger {
  std::string check;
  std::vector<Status> statuses;
  int consecutive = 1;
  int within_count = 0;  // 0: use consecutive
  Duration within_window{0};
  Duration hold_for{0};         // `for:` the streak must also have lasted this long
  std::string message_pattern;  // ECMAScript regex searched in the message; "" = any
  std::optional<std::regex> message;
  std::vector<EvidenceMatch> evidence;  // all must match
};
bool trigger_matches(const Trigger& t, const CheckResult& r);

// A ladder step runs only while another check's latest result has one of these statuses.
struct StepCondition {
  std::string check;
  std::vector<Status> statuses;
};

struct LadderStep {
  std::string remedy;  // remedy type name
  int attempts = 1;
  Duration timeout{std::chrono::seconds(60)};
  std::optional<StepCondition> only_if;
  // Run the next step right after this one succeeds, without settling in between: fix
  // the cause, then ask Patroni to start PostgreSQL at once rather than at its next loop.
  bool chain = false;
  std::optional<Duration> settle;  // overrides the rule's settle after this step
  std::unique_ptr<Remedy> impl;
};

struct Rule {
  std::string name;
  std::string file, path;  // where it was configured, for messages
  Trigger when;
  std::vector<LadderStep> ladder;
  Duration settle{std::chrono::seconds(10)};  // after each action: results are not judged
  int max_actions = 3;                        // rate limit: at most this many actions ...
  Duration window{std::chrono::hours(1)};     // ... within this window, then give up
  int recover_after = 2;            // consecutive results not matching the trigger: fault gone
  std::vector<std::string> guards;  // extra named guards (see src/guards.hpp)
};

// Builds every configured rule whose trigger check exists in `config.checks`. A built-in
// rule whose check is not configured on this node is left out; a rule of the operator's
// naming an unknown check or remedy is a config error (throws ConfigError).
std::vector<Rule> build_rules(const Config& config);

enum class Phase { idle, settling, gave_up };
std::string_view to_string(Phase p);

// What the engine should do after a result, decided by RuleState::decide.
struct Verdict {
  enum Kind { none, act, give_up, recovered } kind = none;
  std::size_t step = 0;  // for act
  std::string reason;    // for give_up / recovered / none (why nothing happens)
};

class RuleState {
 public:
  // Counts a result of the rule's check. Results that arrive while settling are not
  // judged; unknown breaks a streak but never counts as a fault or a recovery; only
  // passing results count towards recovery.
  void observe(const Rule& rule, const CheckResult& r, TimePoint now);
  // The next thing to do, given what was observed. Pure: calling it twice without an
  // observe/acted/skip in between gives the same answer.
  Verdict decide(const Rule& rule, TimePoint now);

  // The engine ran (or in observe mode would have run) the step: one attempt used, the
  // action counted for the rate limit, settle starts at `now`.
  void acted(const Rule& rule, TimePoint now);
  // The step succeeded and chains to the next: one attempt used and counted, and the next
  // decide() acts on the next step at once.
  void chained(TimePoint now);
  // The step does not apply (its condition is false, or the mode forbids it): move on to
  // the next step at once, without using an attempt.
  void skip_step();
  // Nothing was done (a guard refused, the lock was held): wait `settle` before trying
  // again, without using an attempt.
  void hold(const Rule& rule, TimePoint now);
  // True between chained() and the next acted/hold/skip: the step running now was
  // reached by a chain, right after another step changed something.
  bool in_chain() const { return in_chain_; }
  // An operator's `fener rules reset`: forget attempts, actions and giving up.
  void reset();
  // At startup: the previous run was killed while step `step` (0-based) of this rule ran.
  // With `hold` (a destructive remedy) the rule gives up until the check recovers or an
  // operator resets it; otherwise the action counts as an attempt of that step and for
  // the rate limit, and the rule settles before acting again.
  void interrupted(const Rule& rule, TimePoint now, std::size_t step, bool hold);

  Phase phase(TimePoint now) const;
  std::size_t step() const { return step_; }
  int attempts_on_step() const { return attempts_; }
  std::size_t actions_in_window(const Rule& rule, TimePoint now) const;
  int streak() const { return match_streak_; }
  json to_json(const Rule& rule, TimePoint now) const;

 private:
  int match_streak_ = 0;
  TimePoint streak_since_{};
  int clear_streak_ = 0;
  std::deque<TimePoint> recent_matches_;
  std::deque<TimePoint> actions_;
  std::size_t step_ = 0;
  int attempts_ = 0;
  bool active_ = false;  // the fault was seen since the last recovery
  bool gave_up_ = false;
  bool recovered_pending_ = false;
  bool chained_ = false;
  bool in_chain_ = false;
  TimePoint settle_until_{};
};

}  // namespace fener
