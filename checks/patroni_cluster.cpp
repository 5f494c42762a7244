#include "checks/patroni_cluster.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <optional>
#include <utility>

#include "src/cluster_http.hpp"
#include "src/join.hpp"

namespace fener {

namespace {

bool is_leader(std::string_view role) {
  // /cluster says leader/standby_leader; master/primary are /patroni's words, accepted in case.
  return role == "leader" || role == "standby_leader" || role == "master" || role == "primary";
}

bool is_replica(std::string_view role) {
  return role == "replica" || role == "sync_standby" || role == "quorum_standby";
}

struct Member {
  std::string name, role, state, host;
  std::optional<std::int64_t> timeline;
  PatroniLag lag;
  bool pending_restart = false;
};

Member read_member(const json& m) {
  Member out;
  out.name = patroni_str(m, "name").value_or("");
  out.role = patroni_str(m, "role").value_or("");
  out.state = patroni_str(m, "state").value_or("");
  out.host = patroni_str(m, "host").value_or("");
  out.timeline = patroni_int(m, "timeline");
  out.lag = patroni_member_lag(m);
  out.pending_restart = patroni_flag(m, "pending_restart");
  return out;
}

json to_json(const Member& m) {
  json j = {{"name", m.name},        {"role", m.role},
            {"state", m.state},      {"timeline", m.timeline ? json(*m.timeline) : json()},
            {"lag", to_json(m.lag)}, {"host", m.host}};
  if (m.pending_restart) j["pending_restart"] = true;
  return j;
}

std::string state_text(const std::string& state) {
  return state.empty() ? "no state" : "state " + state;
}

std::string describe_attempt(const PatroniClusterAttempt& a) {
  return describe_unusable_answer(a.result, a.url, "a /cluster document");
}

json attempt_json(const PatroniClusterAttempt& a) {
  json j = {{"url", a.url}, {"elapsed_ms", a.result.elapsed.count()}};
  if (!a.result.ok()) {
    j["error"] = std::string(to_string(a.result.error));
  } else {
    j["http_status"] = a.result.status;
    j["body"] = body_excerpt(a.result.body);
  }
  return j;
}

}  // namespace

bool patroni_cluster_usable(const HttpResult& r) {
  if (!r.ok() || (r.status != 200 && r.status != 503)) return false;
  auto body = parse_json(r.body);
  const json* members = body ? patroni_field(*body, "members") : nullptr;
  if (!members || !members->is_array()) return false;
  return std::all_of(members->begin(), members->end(),
                     [](const json& m) { return patroni_str(m, "name").has_value(); });
}

CheckResult judge_patroni_cluster(const json& cluster, const PatroniClusterParams& p) {
  std::vector<Member> members;
  if (const json* ms = patroni_field(cluster, "members"); ms && ms->is_array())
    for (const auto& m : *ms) members.push_back(read_member(m));

  const std::string scope = patroni_str(cluster, "scope").value_or(p.scope);
  const bool pause = patroni_flag(cluster, "pause");
  const json* switchover = patroni_field(cluster, "scheduled_switchover");
  if (switchover && switchover->is_null()) switchover = nullptr;

  std::vector<const Member*> leaders, replicas;
  for (const auto& m : members) {
    if (is_leader(m.role))
      leaders.push_back(&m);
    else
      replicas.push_back(&m);  // other roles are judged as replicas, and named below
  }

  json ev = {{"scope", scope.empty() ? json() : json(scope)},
             {"leader", leaders.size() == 1 ? json(leaders[0]->name) : json()},
             {"pause", pause},
             {"members", json::array()}};
  for (const auto& m : members) ev["members"].push_back(to_json(m));
  if (switchover) ev["scheduled_switchover"] = *switchover;

  PatroniFindings f;
  if (leaders.empty()) {
    std::vector<std::string> seen;
    for (const auto& m : members) seen.push_back(m.name + " " + m.role + " " + m.state);
    f.add(Status::critical,
          "no leader (members: " + (seen.empty() ? std::string("none") : join(seen)) + ")");
  } else if (leaders.size() > 1) {
    std::vector<std::string> names;
    for (const auto* m : leaders) names.push_back(m->name);
    f.add(Status::critical, "more than one leader: " + join(names));
  } else if (leaders[0]->state != "running") {
    f.add(Status::critical,
          "leader " + leaders[0]->name + " not running (" + state_text(leaders[0]->state) + ")");
  }
  const Member* leader = leaders.size() == 1 ? leaders[0] : nullptr;

  std::vector<std::string> replica_text;  // "kaptan2 (streaming, lag 0 B)", for the passing message
  for (const Member* m : replicas) {
    if (!is_replica(m->role))
      f.add(Status::warning, "member " + m->name + " has unrecognised role \"" + m->role + "\"");
    const bool state_ok = m->state == "running" || m->state == "streaming";
    if (!state_ok)
      f.add(Status::warning, "replica " + m->name + " not running (" + state_text(m->state) + ")");
    if (leader && leader->timeline && m->timeline && *m->timeline != *leader->timeline)
      f.add(Status::warning, "replica " + m->name + " on timeline " + std::to_string(*m->timeline) +
                                 ", leader " + leader->name + " on " +
                                 std::to_string(*leader->timeline));
    std::string lag_text = "lag not reported";
    switch (m->lag.kind) {
      case PatroniLag::Kind::bytes:
        lag_text = "lag " + format_size(m->lag.bytes);
        if (m->lag.bytes > p.lag_critical)
          f.add(Status::critical, "replica " + m->name + " lag " + format_size(m->lag.bytes) +
                                      " over " + format_size(p.lag_critical));
        else if (m->lag.bytes > p.lag_warning)
          f.add(Status::warning, "replica " + m->name + " lag " + format_size(m->lag.bytes) +
                                     " over " + format_size(p.lag_warning));
        break;
      case PatroniLag::Kind::unknown:
        lag_text = "lag unknown";
        // A replica that is down has no position; its state already says so.
        if (state_ok) f.add(Status::warning, "replica " + m->name + " lag unknown");
        break;
      case PatroniLag::Kind::absent:
        break;
    }
    replica_text.push_back(m->name + " (" + m->state + ", " + lag_text + ")");
  }

  if (p.expected_members > 0 && static_cast<int>(members.size()) < p.expected_members)
    f.add(Status::warning, std::to_string(members.size()) + " of " +
                               std::to_string(p.expected_members) + " expected members");

  std::vector<std::string> pending;
  for (const auto& m : members)
    if (m.pending_restart) pending.push_back(m.name);
  if (!pending.empty()) f.add(Status::warning, "pending restart on " + join(pending));
  if (pause) f.add(Status::warning, "cluster is paused (maintenance mode)");
  if (switchover) {
    std::string text = "switchover scheduled";
    if (auto at = patroni_str(*switchover, "at")) text += " at " + *at;
    if (auto from = patroni_str(*switchover, "from")) text += " from " + *from;
    if (auto to = patroni_str(*switchover, "to")) text += " to " + *to;
    f.add(Status::warning, text);
  }

  const std::string who = "Patroni cluster" + (scope.empty() ? "" : " " + scope) + ": ";
  // No single leader always left a critical finding; the null test only keeps this safe.
  if (!f.empty() || !leader) return CheckResult::make(f.status(), who + f.text(), std::move(ev));

  std::string msg = who + "leader " + leader->name + " running";
  if (leader->timeline) msg += " on timeline " + std::to_string(*leader->timeline);
  msg += replica_text.empty()
             ? "; no replicas"
             : "; replica" + std::string(replica_text.size() > 1 ? "s " : " ") + join(replica_text);
  return CheckResult::make(Status::passing, msg, std::move(ev));
}

CheckResult evaluate_patroni_cluster(const std::vector<PatroniClusterAttempt>& attempts,
                                     const PatroniClusterParams& p) {
  std::vector<std::string> failures;
  json failed = json::array();
  for (const auto& a : attempts) {
    if (patroni_cluster_usable(a.result)) {
      CheckResult r = judge_patroni_cluster(*parse_json(a.result.body), p);
      r.evidence["url"] = a.url;
      if (!failed.empty()) r.evidence["failed_urls"] = std::move(failed);
      return r;
    }
    failures.push_back(describe_attempt(a));
    failed.push_back(attempt_json(a));
  }
  if (attempts.empty())
    return CheckResult::make(Status::unknown, "no Patroni REST URL to ask for /cluster");
  std::string msg = "no Patroni REST API gave /cluster: ";
  for (std::size_t i = 0; i < failures.size(); ++i) msg += (i ? "; " : "") + failures[i];
  return CheckResult::make(Status::unknown, msg, json{{"attempts", std::move(failed)}});
}

namespace {

class PatroniClusterCheck final : public Check {
 public:
  PatroniClusterCheck(PatroniClusterParams p, TlsSettings tls)
      : p_(std::move(p)), tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    std::vector<PatroniClusterAttempt> attempts;
    for (std::size_t i = 0; i < p_.urls.size(); ++i) {
      // Split what is left of the deadline so a silent first URL leaves time for the next.
      const auto spent =
          std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - start);
      const auto left = static_cast<Duration::rep>(p_.urls.size() - i);
      const Duration budget = std::max((ctx.timeout - spent) / left, Duration{100});
      const std::string url = p_.urls[i] + "/cluster";
      HttpRequest req = tls_request(tls_, url, budget);
      HttpResult r = co_await ctx.http.fetch(std::move(req));
      const bool usable = patroni_cluster_usable(r);
      attempts.push_back({url, std::move(r)});
      if (usable) break;
    }
    try {
      co_return evaluate_patroni_cluster(attempts, p_);
    } catch (const std::exception& e) {
      // The evaluator reads defensively; this only keeps a surprise from killing the loop.
      co_return CheckResult::make(Status::unknown,
                                  std::string("could not judge Patroni /cluster: ") + e.what());
    }
  }

 private:
  PatroniClusterParams p_;
  TlsSettings tls_;
};

}  // namespace

std::unique_ptr<Check> make_patroni_cluster_check(YamlMap& params, const Config& config) {
  PatroniClusterParams p;
  if (params.has("urls")) {
    auto urls =
        params.str_list("urls", /*allow_comma_string=*/true).value_or(std::vector<std::string>{});
    if (urls.empty()) params.fail("urls", "expected at least one Patroni REST API URL");
    for (auto& u : urls) {
      while (!u.empty() && u.back() == '/') u.pop_back();
      if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
        params.fail("urls", "expected http:// or https:// URLs, got \"" + u + "\"");
      p.urls.push_back(u);
    }
  } else {
    p.urls.push_back(read_patroni_url(params, "urls", config.patroni_url));
  }
  p.expected_members =
      static_cast<int>(params.integer("members", 0, 1000).value_or(config.expected_members));
  p.lag_warning = read_size_param(params, "lag_warning").value_or(kDefaultLagWarning);
  p.lag_critical = read_size_param(params, "lag_critical").value_or(kDefaultLagCritical);
  if (p.lag_warning > p.lag_critical)
    params.fail("lag_warning", "lag_warning (" + format_size(p.lag_warning) +
                                   ") must not exceed lag_critical (" +
                                   format_size(p.lag_critical) + ")");
  p.scope = config.scope;
  return std::make_unique<PatroniClusterCheck>(std::move(p), config.patroni_tls);
}

}  // namespace fener
