// /status, /metrics and /healthz: the pure builders on a fixed snapshot, the event ring
// and its counters, secret redaction, and the three routes on a real loopback server.
#include "src/status.hpp"

#include <chrono>
#include <string>

#include <doctest/doctest.h>

#include "src/api_server.hpp"
#include "src/http_client.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using fener::test::local_options;
using fener::test::run_co;

namespace {

SystemTime at(const char* iso) {
  auto t = parse_timestamp(iso);
  REQUIRE_MESSAGE(t.has_value(), iso);
  return *t;
}

CheckState check(std::string name, std::string type, std::optional<Status> published, Status last,
                 std::string message, const char* when) {
  CheckState s;
  s.name = std::move(name);
  s.type = std::move(type);
  s.published = published;
  s.last = CheckResult::make(last, std::move(message));
  s.last.duration = 250ms;
  if (when) s.last.at = at(when);
  if (published) s.since = at("2026-11-28T08:00:02.000Z");
  s.streak = 3;
  return s;
}

Event remedy_event(std::string rule, std::string remedy, std::string state, const char* when) {
  Event e;
  e.kind = Event::Kind::remedy;
  e.node = "kaptan1";
  e.scope = "liman";
  e.subject = std::move(rule);
  e.state = std::move(state);
  e.severity = e.state == "succeeded" ? Status::passing : Status::critical;
  e.summary = "rule " + e.subject + ": " + e.state;
  e.details = {{"remedy", remedy}};
  e.at = at(when);
  return e;
}

Event check_event(std::string name, std::string previous, Status now, const char* when) {
  Event e;
  e.kind = Event::Kind::check;
  e.node = "kaptan1";
  e.scope = "liman";
  e.subject = std::move(name);
  e.state = std::string(to_string(now));
  e.previous = std::move(previous);
  e.severity = now;
  e.summary = "check " + e.subject + ": " + e.state;
  e.at = at(when);
  return e;
}

StatusSnapshot snapshot(const RecentEvents* events) {
  StatusSnapshot s;
  s.node = "kaptan1";
  s.scope = "liman";
  s.mode = Mode::safe;
  s.version = "0.1.0";
  s.started_at = at("2026-11-28T08:00:00.000Z");
  s.checks_started_at = s.started_at;
  s.now = at("2026-11-28T08:01:30.000Z");
  s.checks.push_back(check("etcd_health", "etcd_health", Status::passing, Status::passing,
                           "3/3 etcd members healthy", "2026-11-28T08:01:29.500Z"));
  auto dd = check("datadir", "datadir", Status::critical, Status::critical,
                  "data directory /data/patroni has mode 0755", "2026-11-28T08:01:28.000Z");
  dd.last.evidence = {{"mode", "0755"}, {"url", "http://fener:hunter2@127.0.1.2:8008/patroni"}};
  s.checks.push_back(std::move(dd));
  s.result_bounds = {{"etcd_health", 20s}, {"datadir", 20s}};
  s.rules =
      json::array({{{"rule", "datadir_perms"}, {"check", "datadir"}, {"phase", "gave_up"}},
                   {{"rule", "postgres_down"}, {"check", "patroni_node"}, {"phase", "idle"}}});
  s.events = events;
  return s;
}

}  // namespace

TEST_CASE("timestamps: format, parse back, and refuse anything else") {
  const auto t = at("2026-11-28T08:13:45.123Z");
  CHECK(format_timestamp(t) == "2026-11-28T08:13:45.123Z");
  CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() ==
        1795853625123);
  CHECK(parse_timestamp("2026-11-28T08:13:45Z") == t - 123ms);
  CHECK(parse_timestamp("2026-11-28T08:13:45.5Z") == t + 377ms);
  CHECK_FALSE(parse_timestamp("2026-11-28 08:13:45Z"));
  CHECK_FALSE(parse_timestamp("2026-11-28T08:13:45"));
  CHECK_FALSE(parse_timestamp("2026-11-28T08:13:45.Z"));
  CHECK_FALSE(parse_timestamp("2026-13-28T08:13:45Z"));
  CHECK_FALSE(parse_timestamp(""));
  CHECK(format_age(0s) == "0s");
  CHECK(format_age(75s) == "1m15s");
  CHECK(format_age(7500s) == "2h5m");
  CHECK(format_age(100000s) == "1d3h");
}

TEST_CASE("redact_secrets hides secret-named keys and URL passwords, keeps the rest") {
  const json in = {{"Password", "p"},
                   {"api_token", "t"},
                   {"nested", {{"authorization", "Basic x"}, {"fine", "ok"}}},
                   {"list", {"http://u:pw@h:1/x", "http://h/a@b", "plain"}},
                   {"count", 3},
                   {"token_source", nullptr}};
  const json out = redact_secrets(in);
  CHECK(out["Password"] == "(redacted)");
  CHECK(out["api_token"] == "(redacted)");
  CHECK(out["nested"]["authorization"] == "(redacted)");
  CHECK(out["nested"]["fine"] == "ok");
  CHECK(out["list"][0] == "http://u:(redacted)@h:1/x");
  CHECK(out["list"][1] == "http://h/a@b");
  CHECK(out["list"][2] == "plain");
  CHECK(out["count"] == 3);
  CHECK(out["token_source"].is_null());
}

TEST_CASE("RecentEvents keeps the newest, counts every event") {
  RecentEvents ev(2);
  ev.add(check_event("datadir", "", Status::passing, "2026-11-28T08:00:01.000Z"));
  ev.add(check_event("datadir", "passing", Status::critical, "2026-11-28T08:00:02.000Z"));
  ev.add(remedy_event("datadir_perms", "fix_permissions", "started", "2026-11-28T08:00:03.000Z"));
  ev.add(remedy_event("datadir_perms", "fix_permissions", "failed", "2026-11-28T08:00:04.000Z"));
  ev.add(remedy_event("datadir_perms", "fix_permissions", "succeeded", "2026-11-28T08:00:05.000Z"));
  CHECK(ev.events().size() == 2);
  const json j = ev.to_json();
  REQUIRE(j.size() == 2);
  CHECK(j[0]["state"] == "succeeded");  // newest first
  CHECK(j[0]["at"] == "2026-11-28T08:00:05.000Z");
  CHECK(j[0]["kind"] == "remedy");
  CHECK(j[0]["details"]["remedy"] == "fix_permissions");
  CHECK(j[1]["state"] == "failed");
  // The first result is not a transition; "started" is not an outcome.
  CHECK(ev.transitions().size() == 1);
  CHECK(ev.transitions().at({"datadir", "critical"}) == 1);
  CHECK(ev.actions().size() == 2);
  CHECK(ev.actions().at({"datadir_perms", "fix_permissions", "failed"}) == 1);
  CHECK(ev.last_success().at("datadir_perms") == at("2026-11-28T08:00:05.000Z"));
}

TEST_CASE("status_json: node, worst status, every check with its details, rules, events") {
  RecentEvents ev;
  ev.add(check_event("datadir", "passing", Status::critical, "2026-11-28T08:00:02.000Z"));
  auto s = snapshot(&ev);
  s.extra = {{"agent", {{"answers", 7}}}, {"node", "must not win"}};
  const json j = status_json(s);
  CHECK(j["node"] == "kaptan1");
  CHECK(j["scope"] == "liman");
  CHECK(j["mode"] == "safe");
  CHECK(j["version"] == "0.1.0");
  CHECK(j["started_at"] == "2026-11-28T08:00:00.000Z");
  CHECK(j["now"] == "2026-11-28T08:01:30.000Z");
  CHECK(j["uptime_seconds"] == 90);
  CHECK(j["status"] == "critical");
  CHECK(j["agent"]["answers"] == 7);
  REQUIRE(j["checks"].size() == 2);
  const json& dd = j["checks"][1];
  CHECK(dd == json{{"name", "datadir"},
                   {"type", "datadir"},
                   {"status", "critical"},
                   {"last_status", "critical"},
                   {"message", "data directory /data/patroni has mode 0755"},
                   {"evidence",
                    {{"mode", "0755"}, {"url", "http://fener:(redacted)@127.0.1.2:8008/patroni"}}},
                   {"since", "2026-11-28T08:00:02.000Z"},
                   {"last_run", "2026-11-28T08:01:28.000Z"},
                   {"duration_ms", 250},
                   {"streak", 3}});
  CHECK(j["rules"].size() == 2);
  REQUIRE(j["events"].size() == 1);
  CHECK(j["events"][0]["summary"] == "check datadir: critical");

  // A check with no result yet: nulls, and the node counts as unknown.
  s.checks = {check("patroni_node", "patroni_node", std::nullopt, Status::unknown, "", nullptr)};
  const json k = status_json(s);
  CHECK(k["status"] == "unknown");
  CHECK(k["checks"][0]["status"].is_null());
  CHECK(k["checks"][0]["last_status"].is_null());
  CHECK(k["checks"][0]["since"].is_null());
  CHECK(k["checks"][0]["last_run"].is_null());
}

TEST_CASE("metrics_text: the exact exposition for a snapshot") {
  RecentEvents ev;
  ev.add(check_event("datadir", "passing", Status::critical, "2026-11-28T08:00:02.000Z"));
  ev.add(remedy_event("datadir_perms", "fix_permissions", "failed", "2026-11-28T08:00:04.000Z"));
  ev.add(remedy_event("datadir_perms", "fix_permissions", "succeeded", "2026-11-28T08:00:05.000Z"));
  auto s = snapshot(&ev);
  s.checks.push_back(
      check("patroni_node", "patroni_node", std::nullopt, Status::unknown, "", nullptr));
  s.metrics.push_back([](MetricsRegistry& m) {
    m.declare("fener_agent_answers_total", MetricType::counter, "Agent answers.");
    m.set("fener_agent_answers_total", {{"answer", "up"}}, 4);
  });
  const std::string expected = R"(# HELP fener_agent_answers_total Agent answers.
# TYPE fener_agent_answers_total counter
fener_agent_answers_total{answer="up"} 4
# HELP fener_build_info fener's version; always 1.
# TYPE fener_build_info gauge
fener_build_info{version="0.1.0"} 1
# HELP fener_check_duration_seconds How long the check's latest run took.
# TYPE fener_check_duration_seconds gauge
fener_check_duration_seconds{check="datadir"} 0.25
fener_check_duration_seconds{check="etcd_health"} 0.25
# HELP fener_check_last_run_timestamp_seconds When the check's latest run finished, in seconds since the epoch.
# TYPE fener_check_last_run_timestamp_seconds gauge
fener_check_last_run_timestamp_seconds{check="datadir"} 1795852888
fener_check_last_run_timestamp_seconds{check="etcd_health"} 1795852889.5
# HELP fener_check_status A check's published status (after rise/fall): 1 for it, 0 for the others; all 0 before its first result.
# TYPE fener_check_status gauge
fener_check_status{check="datadir",status="critical",type="datadir"} 1
fener_check_status{check="datadir",status="passing",type="datadir"} 0
fener_check_status{check="datadir",status="unknown",type="datadir"} 0
fener_check_status{check="datadir",status="warning",type="datadir"} 0
fener_check_status{check="etcd_health",status="critical",type="etcd_health"} 0
fener_check_status{check="etcd_health",status="passing",type="etcd_health"} 1
fener_check_status{check="etcd_health",status="unknown",type="etcd_health"} 0
fener_check_status{check="etcd_health",status="warning",type="etcd_health"} 0
fener_check_status{check="patroni_node",status="critical",type="patroni_node"} 0
fener_check_status{check="patroni_node",status="passing",type="patroni_node"} 0
fener_check_status{check="patroni_node",status="unknown",type="patroni_node"} 0
fener_check_status{check="patroni_node",status="warning",type="patroni_node"} 0
# HELP fener_check_transitions_total Changes of a check's published status, by the status it changed to.
# TYPE fener_check_transitions_total counter
fener_check_transitions_total{check="datadir",to="critical"} 1
# HELP fener_mode How far remedies may go: 1 for the mode in force, 0 for the others.
# TYPE fener_mode gauge
fener_mode{mode="full"} 0
fener_mode{mode="observe"} 0
fener_mode{mode="safe"} 1
# HELP fener_remedy_actions_total Remedy decisions by rule, remedy and outcome (succeeded, nothing_to_do, failed, would_run, refused, skipped).
# TYPE fener_remedy_actions_total counter
fener_remedy_actions_total{outcome="failed",remedy="fix_permissions",rule="datadir_perms"} 1
fener_remedy_actions_total{outcome="succeeded",remedy="fix_permissions",rule="datadir_perms"} 1
# HELP fener_remedy_last_success_timestamp_seconds When the rule's remedy last succeeded, in seconds since the epoch.
# TYPE fener_remedy_last_success_timestamp_seconds gauge
fener_remedy_last_success_timestamp_seconds{rule="datadir_perms"} 1795852805
# HELP fener_rule_gave_up 1 while the rule has given up (until its check recovers or `fener rules reset`).
# TYPE fener_rule_gave_up gauge
fener_rule_gave_up{rule="datadir_perms"} 1
fener_rule_gave_up{rule="postgres_down"} 0
# HELP fener_start_time_seconds When the daemon started, in seconds since the epoch.
# TYPE fener_start_time_seconds gauge
fener_start_time_seconds 1795852800
# HELP fener_status This node's overall status (the worst check): 1 for it, 0 for the others.
# TYPE fener_status gauge
fener_status{status="critical"} 1
fener_status{status="passing"} 0
fener_status{status="unknown"} 0
fener_status{status="warning"} 0
)";
  CHECK(metrics_text(s) == expected);
}

TEST_CASE("judge_health: fresh results are ok; a late or never-run check is named") {
  auto s = snapshot(nullptr);
  CHECK(judge_health(s).ok);
  CHECK(judge_health(s).to_json() == json{{"status", "ok"}});

  s.now = at("2026-11-28T08:01:49.000Z");  // datadir's result is 21 s old, bound 20 s
  Health h = judge_health(s);
  CHECK_FALSE(h.ok);
  REQUIRE(h.problems.size() == 1);
  CHECK(h.problems[0] == "check datadir: latest result 21s ago (expected within 20s)");
  CHECK(h.to_json()["status"] == "failing");

  // No result yet: judged from the scheduler's start (a reload restarts the clock).
  s = snapshot(nullptr);
  s.checks = {check("patroni_node", "patroni_node", std::nullopt, Status::unknown, "", nullptr)};
  s.result_bounds = {{"patroni_node", 60s}};
  s.now = s.started_at + 59s;
  CHECK(judge_health(s).ok);
  s.now = s.started_at + 61s;
  s.checks_started_at = s.started_at + 30s;
  CHECK(judge_health(s).ok);
  s.now = s.started_at + 91s;
  h = judge_health(s);
  REQUIRE(h.problems.size() == 1);
  CHECK(h.problems[0] == "check patroni_node: no result in 1m1s since start (expected within 1m)");

  s.checks.clear();
  CHECK(judge_health(s).problems == std::vector<std::string>{"no checks are running"});
}

TEST_CASE("result_bounds: three rounds of interval and timeout, plus the start jitter") {
  Config c;
  CheckSpec a;
  a.name = "a";
  a.timing.interval = 5s;
  a.timing.timeout = 3s;
  a.timing.jitter = 1s;
  c.checks.push_back(a);
  CHECK(result_bounds(c).at("a") == Duration(25s));
}

TEST_CASE("status routes: /status, /metrics and /healthz over HTTP, without a token") {
  asio::io_context io;
  ApiServer server(io, local_options("0123456789abcdef-secret"));
  RecentEvents ev;
  bool late = false;
  add_status_routes(server, [&] {
    auto s = snapshot(&ev);
    if (late) s.now += 1h;
    return s;
  });
  server.start();
  HttpClient http(io);
  std::vector<HttpResult> r;
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {{.url = base + "/status"},
                                     {.url = base + "/metrics"},
                                     {.url = base + "/healthz"},
                                     {.method = "POST", .url = base + "/status"}};
    r = co_await fetch_all(http, std::move(reqs));
    late = true;
    HttpRequest again{.url = base + "/healthz"};
    r.push_back(co_await http.fetch(std::move(again)));
  });
  REQUIRE(r.size() == 5);
  CHECK(r[0].status == 200);
  CHECK(r[0].header("content-type") == "application/json");
  auto body = parse_json(r[0].body);
  REQUIRE(body.has_value());
  CHECK(*body == status_json(snapshot(&ev)));
  CHECK(r[1].status == 200);
  CHECK(r[1].header("content-type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(r[1].body == metrics_text(snapshot(&ev)));
  CHECK(r[2].status == 200);
  CHECK(r[2].body == R"({"status":"ok"})");
  CHECK(r[3].status == 405);
  CHECK(r[4].status == 503);
  auto why = parse_json(r[4].body);
  REQUIRE(why.has_value());
  CHECK((*why)["status"] == "failing");
  CHECK((*why)["problems"].size() == 2);
  CHECK((*why)["problems"][0] == "check etcd_health: latest result 1h0m ago (expected within 20s)");
}

TEST_CASE("status_table: header line and one line per check, from /status") {
  auto s = snapshot(nullptr);
  s.checks.push_back(
      check("patroni_node", "patroni_node", std::nullopt, Status::unknown, "", nullptr));
  CHECK(status_table(status_json(s)) ==
        "node kaptan1, scope liman, mode safe, fener 0.1.0, up 1m30s: critical\n"
        "CHECK         STATUS    SINCE   MESSAGE\n"
        "etcd_health   passing   1m28s   3/3 etcd members healthy\n"
        "datadir       critical  1m28s   data directory /data/patroni has mode 0755\n"
        "patroni_node  pending   -       \n");
  // Another version's document with fields missing still prints.
  CHECK(status_table(json{{"checks", {{{"name", "x"}}}}}) ==
        "node -, scope -, mode -, fener -: -\n"
        "CHECK  STATUS    SINCE   MESSAGE\n"
        "x      pending   -       -\n");
}
