// What fener announces: a check's published status changed, or the remedy engine took a
// decision. The scheduler and the engine produce events; alert webhooks, the journal,
// metrics and /status consume them. Plain data, no I/O.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "src/result.hpp"

namespace fener {

struct Event {
  enum class Kind { check, remedy };
  Kind kind = Kind::check;
  std::string node;     // this node's name
  std::string scope;    // the Patroni cluster scope ("" when unknown)
  std::string subject;  // the check's name (check) or the rule's name (remedy)
  // check: the new published status: passing, warning, critical or unknown.
  // remedy: started, succeeded, nothing_to_do, failed, would_run, refused, skipped,
  //         gave_up, recovered (a rule that gave up saw its check pass again), reset.
  std::string state;
  std::string previous;  // check: the status before ("" for the first result)
  // How bad it is, for routing and for firing/resolved: a check's own status; for a
  // remedy: started/would_run/refused/skipped warning, succeeded/nothing_to_do/recovered/
  // reset passing, failed/gave_up critical.
  Status severity = Status::unknown;
  std::string summary;  // one line for humans: "check patroni_node: passing -> critical: ..."
  // check: {message, evidence, check_type}; remedy: {remedy, risk, mode, attempt, plan,
  // outcome, reason, duration_ms} as known.
  nlohmann::json details = nlohmann::json::object();
  std::chrono::system_clock::time_point at{};

  // The condition an alert tracks: "NODE/check/NAME" or "NODE/rule/NAME". A condition
  // fires while its latest event is not passing and resolves with a passing one.
  std::string key() const { return node + (kind == Kind::check ? "/check/" : "/rule/") + subject; }
  bool firing() const { return severity != Status::passing; }
};

using EventSink = std::function<void(const Event&)>;

}  // namespace fener
