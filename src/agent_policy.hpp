// What fener answers HAProxy's agent-check with: a pure decision from what the daemon
// knows in memory (the latest patroni_node result, Patroni's leader key in etcd, a remedy
// in progress), with hysteresis so a replica catching up does not flap.
//
// Answers (HAProxy agent words, one line ending in "\n"):
//   "up ready"            may serve: the backend role matches and PostgreSQL runs
//   "down ready #reason"  must not serve: wrong role, PostgreSQL not running, no leader
//                         (ready: what the agent put in MAINT/DRAIN comes out of it)
//   "drain #reason"       a replica lagging past lag_drain (until back under lag_ready)
//   "maint #reason"       a remedy works on this node (or "drain", agent.during_remedy)
//   "" (no line at all)   cannot tell yet: HAProxy keeps what it had. "Could not check"
//                         is never turned into "down": a hung Patroni API must not take a
//                         healthy primary out of the pool; the leader key decides then.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "src/result.hpp"

namespace fener {

// What the backend asks for, from HAProxy's `agent-send` line.
enum class AgentRole { primary, replica, read_only, any };
std::string_view to_string(AgentRole r);
// "primary", "master", "leader", "read-write" -> primary; "replica", "standby" ->
// replica; "read-only" -> read_only; "any" -> any. Case-insensitive, surrounding blanks
// and a trailing "\r\n" ignored; nullopt otherwise.
std::optional<AgentRole> agent_role_from_string(std::string_view text);

enum class AgentVerdict { up, down, drain, maint, none };
std::string_view to_string(AgentVerdict v);

struct AgentAnswer {
  AgentVerdict verdict = AgentVerdict::none;
  std::string reason;  // free text (sanitised: no newline, no '#')
  // The wire line: "up ready\n", "down ready #not the leader (leader: kaptan1)\n", or ""
  // for none.
  std::string line() const;
};

struct AgentPolicyOptions {
  std::int64_t lag_drain = std::int64_t{16} << 20;  // drain a replica lagging more
  std::int64_t lag_ready = std::int64_t{4} << 20;   // ...until it is back under this
  bool maint_during_remedy = true;                  // false: drain instead
};

// What the daemon knows at the moment of a request.
struct AgentFacts {
  std::string node;  // this node's Patroni member name
  // The latest patroni_node result (raw, not debounced: routing wants the newest
  // truth); nullptr before the first one.
  const CheckResult* patroni = nullptr;
  // Holder of Patroni's leader key: a name, "" when there is no leader, nullopt when
  // etcd could not be read.
  std::optional<std::string> leader_key;
  // A remedy acting on this node now ("" when none): "patroni_restart (rule postgres_down)".
  std::string remedy;
};

// Keeps, per role, the last definite answer and whether a replica is drained for lag.
class AgentPolicy {
 public:
  explicit AgentPolicy(AgentPolicyOptions o = {}) : opt_(o) {}
  AgentAnswer answer(AgentRole role, const AgentFacts& facts);
  const AgentPolicyOptions& options() const { return opt_; }
  // New thresholds (a reload); what it remembers stays, so a replica drained for lag is not
  // put back in the pool by a reload while its lag is still above lag_ready.
  void set_options(const AgentPolicyOptions& o) { opt_ = o; }

 private:
  AgentAnswer decide(AgentRole role, const AgentFacts& facts);
  AgentPolicyOptions opt_;
  bool lag_drained_ = false;
  std::optional<AgentAnswer> last_[4];
};

}  // namespace fener
