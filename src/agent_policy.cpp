#include "src/agent_policy.hpp"

#include <algorithm>
#include <cctype>

namespace fener {

namespace {

std::string lower_trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string size_text(std::int64_t bytes) {
  if (bytes >= (std::int64_t{1} << 20)) return std::to_string(bytes >> 20) + " MB";
  if (bytes >= 1024) return std::to_string(bytes >> 10) + " kB";
  return std::to_string(bytes) + " B";
}

AgentAnswer make(AgentVerdict v, std::string reason = "") {
  return AgentAnswer{v, std::move(reason)};
}

bool leader_role(const std::string& role) {
  return role == "master" || role == "primary";
}

}  // namespace

std::string_view to_string(AgentRole r) {
  switch (r) {
    case AgentRole::primary:
      return "primary";
    case AgentRole::replica:
      return "replica";
    case AgentRole::read_only:
      return "read-only";
    case AgentRole::any:
      return "any";
  }
  return "?";
}

std::optional<AgentRole> agent_role_from_string(std::string_view text) {
  const std::string w = lower_trim(text);
  if (w == "primary" || w == "master" || w == "leader" || w == "read-write")
    return AgentRole::primary;
  if (w == "replica" || w == "standby") return AgentRole::replica;
  if (w == "read-only") return AgentRole::read_only;
  if (w == "any") return AgentRole::any;
  return std::nullopt;
}

std::string_view to_string(AgentVerdict v) {
  switch (v) {
    case AgentVerdict::up:
      return "up";
    case AgentVerdict::down:
      return "down";
    case AgentVerdict::drain:
      return "drain";
    case AgentVerdict::maint:
      return "maint";
    case AgentVerdict::none:
      return "none";
  }
  return "?";
}

std::string AgentAnswer::line() const {
  std::string words;
  switch (verdict) {
    case AgentVerdict::none:
      return "";
    case AgentVerdict::up:
      // "ready" leaves a DRAIN or MAINT this agent set earlier: HAProxy keeps those until
      // told otherwise, also on a server that is down for other reasons (a replica that
      // was in MAINT in the primary backend during a remedy stays there until ready).
      words = "up ready";
      break;
    case AgentVerdict::down:
      words = "down ready";
      break;
    case AgentVerdict::drain:
      words = "drain";
      break;
    case AgentVerdict::maint:
      words = "maint";
      break;
  }
  if (!reason.empty()) {
    std::string r;
    for (char c : reason) r += (c == '\n' || c == '\r' || c == '#') ? ' ' : c;
    words += " #" + r.substr(0, 200);
  }
  return words + "\n";
}

AgentAnswer AgentPolicy::answer(AgentRole role, const AgentFacts& facts) {
  AgentAnswer a = decide(role, facts);
  auto& last = last_[static_cast<int>(role)];
  if (a.verdict == AgentVerdict::none) {
    // Cannot tell now: repeat the last definite answer rather than guess; with none yet,
    // say nothing and HAProxy keeps its current state.
    if (last) return *last;
    return a;
  }
  last = a;
  return a;
}

AgentAnswer AgentPolicy::decide(AgentRole role, const AgentFacts& f) {
  if (!f.remedy.empty())
    return make(opt_.maint_during_remedy ? AgentVerdict::maint : AgentVerdict::drain,
                "remedy in progress: " + f.remedy);

  // Patroni's leader key is the authority on who may take writes; it is read from etcd
  // and pushed by the watch, so it is usually newer than the last Patroni poll.
  const bool key_known = f.leader_key.has_value();
  const bool key_mine = key_known && *f.leader_key == f.node;
  if (role == AgentRole::primary && key_known && !key_mine) {
    if (f.leader_key->empty()) return make(AgentVerdict::down, "the cluster has no leader");
    return make(AgentVerdict::down, "not the leader (leader: " + *f.leader_key + ")");
  }

  if (!f.patroni) return make(AgentVerdict::none);
  const json& ev = f.patroni->evidence;
  const bool has_role = ev.contains("role") && ev["role"].is_string();
  if (!has_role) {
    // Refused: Patroni is not running here, so nothing keeps this node's role safe.
    if (f.patroni->status == Status::critical && ev.value("error", "") == "refused")
      return make(AgentVerdict::down, "Patroni is not running on " + f.node);
    return make(AgentVerdict::none);  // could not ask Patroni: keep what HAProxy has
  }
  const std::string patroni_role = ev["role"].get<std::string>();
  const std::string state = ev.value("state", "");
  const bool running = ev.value("state_kind", "") == "running";
  const bool is_leader = leader_role(patroni_role);

  if (!running) {
    if (state == "unknown" && is_leader && key_mine)
      return make(AgentVerdict::none);  // Patroni's own probe failed: not a verdict
    return make(AgentVerdict::down, "PostgreSQL " + state + " (role " + patroni_role + ")");
  }

  switch (role) {
    case AgentRole::primary:
      if (!is_leader) return make(AgentVerdict::down, "role " + patroni_role + ", not the leader");
      return make(AgentVerdict::up, "leader, PostgreSQL running");
    case AgentRole::any:
      return make(AgentVerdict::up, "PostgreSQL running (role " + patroni_role + ")");
    case AgentRole::read_only:
    case AgentRole::replica:
      if (is_leader) {
        lag_drained_ = false;  // a later demotion starts afresh
        if (role == AgentRole::read_only)
          return make(AgentVerdict::up, "leader, PostgreSQL running");
        return make(AgentVerdict::down, "this node is the leader");
      }
      if (patroni_role != "replica") {
        lag_drained_ = false;
        return make(AgentVerdict::down, "role " + patroni_role + ", not a replica");
      }
      break;
  }

  // A running replica: judge its lag with hysteresis (drain above lag_drain, ready again
  // only under lag_ready), so one catching up does not flap in and out of the pool.
  const json lag = ev.contains("lag") ? ev["lag"] : json();
  if (lag.is_number_integer()) {
    const std::int64_t bytes = lag.get<std::int64_t>();
    if (lag_drained_ ? bytes > opt_.lag_ready : bytes > opt_.lag_drain) {
      lag_drained_ = true;
      return make(AgentVerdict::drain, "replica lag " + size_text(bytes) + " (ready again under " +
                                           size_text(opt_.lag_ready) + ")");
    }
    lag_drained_ = false;
    return make(AgentVerdict::up, "replica streaming, lag " + size_text(bytes));
  }
  // Lag not known (Patroni gave none): keep the current lag verdict.
  if (lag_drained_) return make(AgentVerdict::drain, "replica lag not known, still drained");
  return make(AgentVerdict::up, "replica running, lag not known");
}

}  // namespace fener
