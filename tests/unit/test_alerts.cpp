// Alert webhooks: the pure decisions (admission, backoff, Retry-After, verdicts, grouping,
// payloads) without waiting, then real deliveries to receivers on 127.0.0.1 (fener's own
// API server with a recording route), and the alerts: configuration's errors word for word.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "src/alerts.hpp"
#include "src/sha256.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace fener::alerting;
using namespace std::chrono_literals;
using fener::test::TempDir;

namespace {

Event check_event(const std::string& subject, Status now, std::string previous = "passing") {
  Event e;
  e.kind = Event::Kind::check;
  e.node = "kaptan1";
  e.scope = "liman";
  e.subject = subject;
  e.state = std::string(to_string(now));
  e.previous = std::move(previous);
  e.severity = now;
  e.summary = "check " + subject + ": " + e.previous + " -> " + e.state + ": something";
  e.details = {{"message", "something"}, {"check_type", subject}};
  e.at = std::chrono::system_clock::now();
  return e;
}

Event remedy_event(const std::string& rule, const std::string& state, Status sev) {
  Event e;
  e.kind = Event::Kind::remedy;
  e.node = "kaptan1";
  e.scope = "liman";
  e.subject = rule;
  e.state = state;
  e.severity = sev;
  e.summary = "rule " + rule + ": " + state;
  e.details = {{"remedy", "service_restart"}, {"reason", "patroni is not running"}};
  e.at = std::chrono::system_clock::now();
  return e;
}

// A receiver on 127.0.0.1: records every request; the first `fail_first` answers are
// `fail_status` (with Retry-After when set), the rest 200 with `answer`.
struct Receiver {
  explicit Receiver(asio::io_context& io) : server(io, fener::test::local_options()) {
    server.add_route("POST", "/", true, false,
                     [this](const ApiRequest& r) -> asio::awaitable<ApiResponse> {
                       requests.push_back(r);
                       arrived.push_back(std::chrono::steady_clock::now());
                       ApiResponse resp;
                       resp.content_type = "text/plain";
                       if (fail_first > 0) {
                         --fail_first;
                         resp.status = fail_status;
                         resp.body = "try later";
                         if (!retry_after.empty())
                           resp.headers.push_back({"Retry-After", retry_after});
                         co_return resp;
                       }
                       resp.status = 200;
                       resp.body = answer;
                       co_return resp;
                     });
    server.start();
  }
  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(server.port()) + path;
  }
  nlohmann::json body(std::size_t i) const { return nlohmann::json::parse(requests.at(i).body); }

  ApiServer server;
  std::vector<ApiRequest> requests;
  std::vector<std::chrono::steady_clock::time_point> arrived;
  int fail_first = 0;
  int fail_status = 500;
  std::string retry_after;
  std::string answer = "ok";
};

// Runs the loop until pred() holds or `limit` passes; false when it never held.
template <class P>
bool run_until(asio::io_context& io, P pred, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    io.restart();
    io.run_for(5ms);
  }
  return true;
}

WebhookConfig hook(const std::string& name, const std::string& url,
                   WebhookFormat f = WebhookFormat::fener) {
  WebhookConfig w;
  w.name = name;
  w.url = url;
  w.format = f;
  w.timeout = 2000ms;
  return w;
}

AlertsConfig fast_config() {
  AlertsConfig c;
  c.group_wait = 0ms;
  c.retry = {.initial = 10ms, .max = 50ms, .attempts = 4};
  c.repeat_interval = 1h;
  return c;
}

AlertOptions options() {
  AlertOptions o;
  o.origin = {"kaptan1", "liman", ""};
  o.random = [] { return 0.5; };
  return o;
}

// Stops the dispatcher and runs the loop until its loops have ended.
void stop_and_drain(asio::io_context& io, AlertDispatcher& d, Duration grace = 500ms) {
  d.stop(grace);
  CHECK(run_until(io, [&] { return d.active() == 0; }));
}

}  // namespace

TEST_CASE("backoff: full jitter under an exponential ceiling capped at max") {
  CHECK(backoff_delay(1, 1000ms, 60000ms, 0.0) == 0ms);
  CHECK(backoff_delay(1, 1000ms, 60000ms, 0.5) == 500ms);
  CHECK(backoff_delay(3, 1000ms, 60000ms, 0.5) == 2000ms);  // ceiling 4 s
  CHECK(backoff_delay(4, 1000ms, 60000ms, 0.999) == 7992ms);
  CHECK(backoff_delay(10, 1000ms, 60000ms, 0.5) == 30000ms);  // 512 s capped at 60 s
  CHECK(backoff_delay(500, 1000ms, 60000ms, 0.999) == 59940ms);
  CHECK(backoff_delay(0, 1000ms, 60000ms, 1.0) == 1000ms);  // nonsense in, sane out
}

TEST_CASE("Retry-After: seconds or an HTTP date") {
  const auto now = std::chrono::system_clock::from_time_t(784111777);  // 1994-11-06 08:49:37
  CHECK(parse_retry_after("120", now) == Duration{120000});
  CHECK(parse_retry_after(" 0 ", now) == Duration{0});
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now) == Duration{30000});
  CHECK(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now) == Duration{0});
  CHECK_FALSE(parse_retry_after("soon", now).has_value());
  CHECK_FALSE(parse_retry_after("-5", now).has_value());
  CHECK_FALSE(parse_retry_after("", now).has_value());
}

TEST_CASE("verdicts: what is retried and what is dropped for good") {
  auto with = [](long status, std::string body = "") {
    HttpResult r;
    r.status = status;
    r.body = std::move(body);
    return r;
  };
  CHECK(judge(with(200), WebhookFormat::fener).outcome == Outcome::delivered);
  CHECK(judge(with(204), WebhookFormat::alertmanager).outcome == Outcome::delivered);
  CHECK(judge(with(200, "ok\n"), WebhookFormat::slack).outcome == Outcome::delivered);
  const auto not_ok = judge(with(200, "no_text"), WebhookFormat::slack);
  CHECK(not_ok.outcome == Outcome::permanent);
  CHECK(not_ok.why == "HTTP 200 without \"ok\": no_text");
  for (long s : {408L, 429L, 500L, 502L, 503L}) {
    CAPTURE(s);
    CHECK(judge(with(s), WebhookFormat::fener).outcome == Outcome::retry);
  }
  for (long s : {400L, 401L, 403L, 404L, 410L}) {
    CAPTURE(s);
    CHECK(judge(with(s), WebhookFormat::fener).outcome == Outcome::permanent);
  }
  CHECK(judge(with(400, "invalid_payload"), WebhookFormat::slack).why ==
        "HTTP 400: invalid_payload");
  CHECK(judge(with(301), WebhookFormat::fener).why ==
        "HTTP 301 (redirects are not followed: fix the url)");
  HttpResult refused;
  refused.error = HttpError::refused;
  CHECK(judge(refused, WebhookFormat::fener).outcome == Outcome::retry);
  CHECK(judge(refused, WebhookFormat::fener).why == "connection refused");
  HttpResult timeout;
  timeout.error = HttpError::timeout;
  CHECK(judge(timeout, WebhookFormat::fener).outcome == Outcome::retry);
  HttpResult cancelled;
  cancelled.error = HttpError::cancelled;
  CHECK(judge(cancelled, WebhookFormat::fener).outcome == Outcome::cancelled);
}

TEST_CASE("grouping: everything within group_wait of the oldest goes together") {
  const SteadyTime t0{std::chrono::seconds(1000)};
  auto plan = plan_batch({}, t0, 2000ms, 100);
  CHECK_FALSE(plan.ready);
  CHECK(plan.wake == SteadyTime::max());

  const std::vector<SteadyTime> q = {t0, t0 + 500ms, t0 + 1999ms, t0 + 2500ms};
  plan = plan_batch(q, t0 + 1000ms, 2000ms, 100);
  CHECK_FALSE(plan.ready);
  CHECK(plan.wake == t0 + 2000ms);
  plan = plan_batch(q, t0 + 3000ms, 2000ms, 100);
  CHECK(plan.ready);
  CHECK(plan.take == 3);                        // the fourth came after the window: next delivery
  plan = plan_batch(q, t0 + 100ms, 2000ms, 2);  // a full batch does not wait
  CHECK(plan.ready);
  CHECK(plan.take == 2);
  plan = plan_batch({t0}, t0, 0ms, 100);  // no grouping
  CHECK(plan.ready);
  CHECK(plan.take == 1);
}

TEST_CASE("admission: kinds, min_severity, resolutions of what fired, duplicates") {
  const SteadyTime t0{std::chrono::seconds(1000)};
  WebhookConfig w = hook("ops", "http://127.0.0.1:1/");
  w.min_severity = Status::critical;
  const Event warn = check_event("patroni_node", Status::warning);
  const Event crit = check_event("patroni_node", Status::critical);
  const Event pass = check_event("patroni_node", Status::passing, "critical");

  CHECK(admit(w, warn, nullptr, t0, 1h) == Admit::filtered);  // below min_severity
  CHECK(admit(w, crit, nullptr, t0, 1h) == Admit::send);
  CHECK(admit(w, pass, nullptr, t0, 1h) == Admit::filtered);  // nothing fired: nothing to resolve

  Memory open{.state = "critical", .sent_at = t0, .open = true};
  CHECK(admit(w, crit, &open, t0 + 10min, 1h) == Admit::duplicate);
  CHECK(admit(w, crit, &open, t0 + 61min, 1h) == Admit::send);  // repeat_interval passed
  CHECK(admit(w, warn, &open, t0 + 1min, 1h) == Admit::send);   // an open alert's change
  CHECK(admit(w, pass, &open, t0 + 1min, 1h) == Admit::send);   // its resolution

  Memory failed = open;
  failed.state.clear();  // the last delivery failed
  CHECK(admit(w, crit, &failed, t0 + 1min, 1h) == Admit::send);

  w.check_events = false;
  CHECK(admit(w, crit, nullptr, t0, 1h) == Admit::filtered);
  CHECK(admit(w, remedy_event("postgres_down", "failed", Status::critical), nullptr, t0, 1h) ==
        Admit::send);

  WebhookConfig all = hook("all", "http://127.0.0.1:1/");
  all.min_severity = Status::passing;
  CHECK(admit(all, pass, nullptr, t0, 1h) == Admit::send);
  all.format = WebhookFormat::alertmanager;  // Alertmanager has nothing to resolve
  CHECK(admit(all, pass, nullptr, t0, 1h) == Admit::filtered);
}

TEST_CASE("HMAC-SHA256 matches RFC 4231 and signs the exact body") {
  CHECK(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(signature("Jefe", "what do ya want for nothing?") ==
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(rfc3339_ms(std::chrono::system_clock::from_time_t(784111777) + 42ms) ==
        "1994-11-06T08:49:37.042Z");
}

TEST_CASE("URLs in messages lose credentials, path and query") {
  CHECK(redact_url("https://hooks.slack.com/services/T0/B1/secret") ==
        "https://hooks.slack.com/...");
  CHECK(redact_url("http://user:pw@127.0.0.1:9093") == "http://127.0.0.1:9093");
  CHECK(redact_url("http://am:9093/?token=x") == "http://am:9093/...");
  CHECK(redact_url("nonsense") == "(not a URL)");
}

TEST_CASE("json deliveries: schema, grouping, signature, headers, resolution, dedup") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  AlertsConfig cfg = fast_config();
  cfg.group_wait = 300ms;
  WebhookConfig w = hook("ops", rx.url("/hook?k=v"));
  w.secret = "0123456789abcdef-secret";
  w.headers = {{"X-Team", "db"}};
  cfg.webhooks.push_back(w);
  AlertDispatcher d(io, http, cfg, options());
  d.start();

  // Three events in a burst: one delivery.
  d.publish(check_event("patroni_node", Status::critical));
  d.publish(remedy_event("postgres_down", "started", Status::warning));
  d.publish(check_event("datadir", Status::warning));
  d.publish(check_event("etcd_health", Status::passing, ""));  // nothing fired: not sent
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 1; }));
  const ApiRequest& r = rx.requests[0];
  CHECK(r.method == "POST");
  CHECK(r.target == "/hook?k=v");
  CHECK(r.header("content-type") == "application/json");
  CHECK(r.header("x-team") == "db");
  const auto id = r.header("x-fener-delivery");
  REQUIRE(id.has_value());
  CHECK(id->size() == 32);
  const auto ts = r.header("x-fener-timestamp");
  REQUIRE(ts.has_value());
  CHECK(std::stoll(*ts) > 1'700'000'000);
  // A receiver verifies: HMAC-SHA256 of the exact body bytes under the shared secret.
  CHECK(r.header("x-fener-signature") ==
        "sha256=" + to_hex(hmac_sha256("0123456789abcdef-secret", r.body)));

  const auto b = rx.body(0);
  CHECK(b["version"] == 1);
  CHECK(b["node"] == "kaptan1");
  CHECK(b["scope"] == "liman");
  CHECK(b["delivery"] == *id);
  REQUIRE(b["events"].size() == 3);
  const auto& e0 = b["events"][0];
  CHECK(e0["kind"] == "check");
  CHECK(e0["subject"] == "patroni_node");
  CHECK(e0["state"] == "critical");
  CHECK(e0["previous"] == "passing");
  CHECK(e0["severity"] == "critical");
  CHECK(e0["summary"] == "check patroni_node: passing -> critical: something");
  CHECK(e0["details"]["message"] == "something");
  CHECK(e0["key"] == "kaptan1/check/patroni_node");
  CHECK(e0["firing"] == true);
  CHECK(e0["repeat"] == false);
  const std::string time = e0["time"];
  CHECK(time.size() == 24);
  CHECK(time.back() == 'Z');
  CHECK(b["events"][1]["kind"] == "remedy");
  CHECK(b["events"][1]["key"] == "kaptan1/rule/postgres_down");
  CHECK(b["events"][2]["subject"] == "datadir");

  // The condition that fired resolves; a repeat of the same state is suppressed.
  d.publish(check_event("patroni_node", Status::passing, "critical"));
  d.publish(check_event("patroni_node", Status::passing, "critical"));
  CHECK(d.stats()[0].duplicates == 1);
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 2; }));
  const auto b2 = rx.body(1);
  REQUIRE(b2["events"].size() == 1);
  CHECK(b2["events"][0]["state"] == "passing");
  CHECK(b2["events"][0]["firing"] == false);
  CHECK(b2["delivery"] != *id);

  stop_and_drain(io, d);
  const auto st = d.stats()[0];
  CHECK(st.deliveries == 2);
  CHECK(st.events_sent == 4);
  CHECK(st.failed_attempts == 0);
  CHECK(st.queue_depth == 0);
  // Counters for /metrics carry no secret.
  const std::string js = d.stats_json().dump();
  CHECK(js.find("0123456789abcdef-secret") == std::string::npos);
  CHECK(js.find("\"target\":\"http://127.0.0.1:" + std::to_string(rx.server.port()) + "/...\"") !=
        std::string::npos);
}

TEST_CASE("slack deliveries: one readable line per event, success is 200 ok") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  AlertsConfig cfg = fast_config();
  cfg.group_wait = 200ms;
  cfg.webhooks.push_back(hook("chat", rx.url("/services/T0/B1/x"), WebhookFormat::slack));
  AlertDispatcher d(io, http, cfg, options());
  d.start();
  Event e = check_event("patroni_node", Status::critical);
  e.summary = "check patroni_node: passing -> critical: lag > 128MB & <rising>";
  d.publish(e);
  d.publish(remedy_event("postgres_down", "started", Status::warning));
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 1; }));
  CHECK(
      rx.body(0) ==
      nlohmann::json{{"text",
                      "[CRITICAL] kaptan1 (liman): check patroni_node: passing -&gt; critical: lag "
                      "&gt; 128MB &amp; &lt;rising&gt;\n"
                      "[WARNING] kaptan1 (liman): rule postgres_down: started"}});
  d.publish(check_event("patroni_node", Status::passing, "critical"));
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 2; }));
  CHECK(rx.body(1)["text"] ==
        "[RESOLVED] kaptan1 (liman): check patroni_node: critical -&gt; passing: something");
  REQUIRE(run_until(io, [&] { return d.stats()[0].deliveries == 2; }));

  // 200 without "ok" is not Slack accepting it; retrying will not help.
  rx.answer = "no_text";
  d.publish(check_event("datadir", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].dropped_permanent == 1; }));
  CHECK(rx.requests.size() == 3);
  CHECK(d.stats()[0].last_error == "HTTP 200 without \"ok\": no_text");
  stop_and_drain(io, d);
}

TEST_CASE("alertmanager deliveries: alerts, re-sent while firing, resolved with endsAt") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  AlertsConfig cfg = fast_config();
  cfg.webhooks.push_back(hook("am", rx.url("/am/"), WebhookFormat::alertmanager));
  AlertOptions o = options();
  o.origin.generator_url = "http://10.0.0.2:8009/v1/rules";
  o.alertmanager_resend = 300ms;  // re-sent this often while firing
  AlertDispatcher d(io, http, cfg, o);
  d.start();
  auto parse_time = [](const std::string& s) {
    std::tm tm{};
    REQUIRE(strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) != nullptr);
    return std::chrono::system_clock::from_time_t(timegm(&tm)) +
           std::chrono::milliseconds(std::stoi(s.substr(20, 3)));
  };

  d.publish(check_event("patroni_node", Status::warning));
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 1; }));
  CHECK(rx.requests[0].target == "/am/api/v2/alerts");
  auto a = rx.body(0);
  REQUIRE(a.is_array());
  REQUIRE(a.size() == 1);
  CHECK(a[0]["labels"] == nlohmann::json{{"alertname", "FenerCheck"},
                                         {"node", "kaptan1"},
                                         {"scope", "liman"},
                                         {"check", "patroni_node"},
                                         {"severity", "warning"}});
  CHECK(a[0]["annotations"]["summary"] == "check patroni_node: passing -> warning: something");
  CHECK(a[0]["annotations"]["description"] == "state warning (was passing): something");
  CHECK(a[0]["generatorURL"] == "http://10.0.0.2:8009/v1/rules");
  const std::string starts = a[0]["startsAt"];
  // Firing: it ends by itself only if fener stops re-sending it (4 resend periods).
  CHECK(parse_time(a[0]["endsAt"]) - parse_time(starts) >= 1000ms);

  // Still firing: re-sent unchanged, same startsAt, before Alertmanager would expire it.
  REQUIRE(run_until(io, [&] { return rx.requests.size() == 2; }));
  auto again = rx.body(1);
  REQUIRE(again.size() == 1);
  CHECK(again[0]["startsAt"] == starts);
  CHECK(again[0]["labels"]["severity"] == "warning");

  // Worse: the warning alert (other labels) ends, a critical one starts.
  d.publish(check_event("patroni_node", Status::critical, "warning"));
  REQUIRE(run_until(io, [&] {
    for (std::size_t i = 2; i < rx.requests.size(); ++i)
      if (rx.body(i).size() == 2) return true;
    return false;
  }));
  nlohmann::json change;
  for (std::size_t i = 2; i < rx.requests.size(); ++i)
    if (rx.body(i).size() == 2) change = rx.body(i);
  CHECK(change[0]["labels"]["severity"] == "warning");
  CHECK(change[0]["startsAt"] == starts);
  CHECK(parse_time(change[0]["endsAt"]) <= std::chrono::system_clock::now());
  CHECK(change[1]["labels"]["severity"] == "critical");
  CHECK(parse_time(change[1]["endsAt"]) > std::chrono::system_clock::now());

  // Resolved: the critical alert again, with endsAt now; then no more re-sending.
  d.publish(check_event("patroni_node", Status::passing, "critical"));
  nlohmann::json resolved;
  REQUIRE(run_until(io, [&] {
    const auto last = rx.body(rx.requests.size() - 1);
    if (last.size() == 1 &&
        last[0]["annotations"]["description"] == "state passing (was critical): something")
      resolved = last;
    return !resolved.is_null();
  }));
  CHECK(resolved[0]["labels"]["severity"] == "critical");
  CHECK(parse_time(resolved[0]["endsAt"]) <= std::chrono::system_clock::now());
  CHECK(resolved[0]["startsAt"] != starts);
  stop_and_drain(io, d);
}

TEST_CASE("a receiver that fails with 500 twice gets retries with backoff, then delivery") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  rx.fail_first = 2;
  AlertsConfig cfg = fast_config();
  cfg.retry = {.initial = 40ms, .max = 1000ms, .attempts = 5};
  cfg.webhooks.push_back(hook("ops", rx.url()));
  AlertOptions o = options();
  o.random = [] { return 0.999; };  // the top of each jitter range: 40 ms, then 80 ms
  AlertDispatcher d(io, http, cfg, o);
  d.start();
  d.publish(check_event("patroni_node", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].deliveries == 1; }));
  REQUIRE(rx.requests.size() == 3);
  const auto st = d.stats()[0];
  CHECK(st.failed_attempts == 2);
  CHECK(st.retries == 2);
  CHECK(st.last_error.empty());
  // The same delivery each time, so a receiver can drop what it already has.
  CHECK(rx.requests[1].header("x-fener-delivery") == rx.requests[0].header("x-fener-delivery"));
  CHECK(rx.requests[2].header("x-fener-delivery") == rx.requests[0].header("x-fener-delivery"));
  // Waits grow: at least the backoff lay between the attempts.
  CHECK(rx.arrived[1] - rx.arrived[0] >= 39ms);
  CHECK(rx.arrived[2] - rx.arrived[1] >= 79ms);
  stop_and_drain(io, d);
}

TEST_CASE("429 with Retry-After is honoured; a 4xx is dropped at once") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  rx.fail_first = 1;
  rx.fail_status = 429;
  rx.retry_after = "1";
  AlertsConfig cfg = fast_config();
  cfg.retry = {.initial = 10ms, .max = 5000ms, .attempts = 3};
  cfg.webhooks.push_back(hook("ops", rx.url()));
  AlertOptions o = options();
  o.random = [] { return 0.0; };  // backoff alone would retry at once
  AlertDispatcher d(io, http, cfg, o);
  d.start();
  d.publish(check_event("patroni_node", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].deliveries == 1; }));
  REQUIRE(rx.requests.size() == 2);
  CHECK(rx.arrived[1] - rx.arrived[0] >= 950ms);

  rx.fail_first = 1;
  rx.fail_status = 400;
  rx.retry_after.clear();
  d.publish(check_event("datadir", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].dropped_permanent == 1; }));
  CHECK(rx.requests.size() == 3);  // no retry
  CHECK(d.stats()[0].retries == 1);
  CHECK(d.stats()[0].last_error == "HTTP 400: try later");
  // Not delivered, so not a duplicate: the same state goes out again when it comes.
  d.publish(check_event("datadir", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].deliveries == 2; }));
  stop_and_drain(io, d);
}

TEST_CASE("a receiver that never answers costs timeouts; the loop and other webhooks go on") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  // Listens, never accepts: connections complete in the backlog, no answer ever comes.
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string silent_url =
      "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/";
  AlertsConfig cfg = fast_config();
  cfg.retry = {.initial = 10ms, .max = 20ms, .attempts = 2};
  WebhookConfig slow = hook("silent", silent_url);
  slow.timeout = 200ms;
  cfg.webhooks.push_back(slow);
  cfg.webhooks.push_back(hook("ops", rx.url()));
  AlertDispatcher d(io, http, cfg, options());
  d.start();

  int ticks = 0;
  asio::steady_timer tick(io);
  std::function<void()> arm = [&] {
    tick.expires_after(5ms);
    tick.async_wait([&](boost::system::error_code ec) {
      if (ec) return;
      ++ticks;
      arm();
    });
  };
  arm();
  d.publish(check_event("patroni_node", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].dropped_exhausted == 1; }));
  tick.cancel();
  const auto s = d.stats();
  CHECK(s[0].timeouts == 2);
  CHECK(s[0].failed_attempts == 2);
  CHECK(s[0].retries == 1);
  CHECK(s[0].last_error.find("no answer within") == 0);
  CHECK(s[1].deliveries == 1);  // the other webhook was not held up
  CHECK(rx.requests.size() == 1);
  CHECK(ticks > 10);  // the loop kept running timers throughout (400 ms of timeouts)
  stop_and_drain(io, d);
}

TEST_CASE("a full queue drops the oldest and counts; stop() flushes what is left") {
  asio::io_context io;
  HttpClient http(io);
  Receiver rx(io);
  AlertsConfig cfg = fast_config();
  cfg.queue_size = 3;
  cfg.group_wait = 60000ms;  // nothing leaves on its own during the test
  cfg.webhooks.push_back(hook("ops", rx.url()));
  AlertDispatcher d(io, http, cfg, options());
  d.start();
  for (const char* name : {"a", "b", "c", "d", "e"}) d.publish(check_event(name, Status::critical));
  auto st = d.stats()[0];
  CHECK(st.queue_depth == 3);
  CHECK(st.dropped_overflow == 2);
  // Stopping skips the group wait: the survivors go out in one delivery.
  stop_and_drain(io, d, 2000ms);
  REQUIRE(rx.requests.size() == 1);
  const auto b = rx.body(0);
  REQUIRE(b["events"].size() == 3);
  CHECK(b["events"][0]["subject"] == "c");
  CHECK(b["events"][2]["subject"] == "e");
  CHECK(d.stats()[0].queue_depth == 0);
  CHECK(d.stats()[0].dropped_shutdown == 0);
}

TEST_CASE("stop() gives a hanging delivery its grace, then drops it and ends") {
  asio::io_context io;
  HttpClient http(io);
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  AlertsConfig cfg = fast_config();
  WebhookConfig w =
      hook("silent", "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/");
  w.timeout = 30000ms;
  cfg.webhooks.push_back(w);
  AlertDispatcher d(io, http, cfg, options());
  d.start();
  d.publish(check_event("patroni_node", Status::critical));
  REQUIRE(run_until(io, [&] { return d.stats()[0].in_flight; }));
  d.publish(check_event("datadir", Status::critical));  // queued behind it
  const auto t0 = std::chrono::steady_clock::now();
  d.stop(200ms);
  REQUIRE(run_until(io, [&] { return d.active() == 0; }));
  CHECK(std::chrono::steady_clock::now() - t0 < 5000ms);  // not the 30 s request timeout
  CHECK(d.stats()[0].dropped_shutdown == 2);
  CHECK(http.in_flight() == 0);
  d.publish(check_event("etcd_health", Status::critical));  // after stop: ignored
  CHECK(d.stats()[0].queue_depth == 0);
}

// ---- configuration ----

namespace {

struct ConfigFiles {
  TempDir dir;
  LoadOptions opts;
  std::string file;
  ConfigFiles() {
    dir.write("patroni.yml", "scope: liman\nname: kaptan1\n");
    opts.patroni_config = dir.file("patroni.yml");
    file = dir.file("fener.yaml");
    opts.config_file = file;
  }
  // The file's text: the etcd line keeps the machine's own files out; alerts start at line 3.
  std::string error_of(const std::string& alerts) {
    dir.write("fener.yaml", "etcd:\n  env_files: []\n" + alerts);
    try {
      load_config(opts);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

}  // namespace

TEST_CASE("alerts configuration: every key read, defaults, secret from a private file") {
  ConfigFiles f;
  f.dir.write("secret", "0123456789abcdef-secret\n", 0600);
  CHECK(f.error_of("alerts:\n"
                   "  webhooks:\n"
                   "    - name: ops\n"
                   "      url: https://hooks.example/x\n"
                   "      secret_file: " +
                   f.dir.file("secret") +
                   "\n"
                   "      events: [remedy]\n"
                   "      min_severity: critical\n"
                   "      timeout: 3s\n"
                   "      headers: {X-Team: db}\n"
                   "    - name: chat\n"
                   "      url: https://hooks.slack.com/services/T0/B1/abc\n"
                   "      format: slack\n"
                   "    - name: am\n"
                   "      url: http://127.0.0.1:9093\n"
                   "      format: alertmanager\n"
                   "  queue_size: 64\n"
                   "  retry: {initial: 500ms, max: 30s, attempts: 4}\n"
                   "  group_wait: 1s\n"
                   "  repeat_interval: 1h\n") == "(no error)");
  const Config c = load_config(f.opts);
  const auto& a = c.alerts;
  REQUIRE(a.webhooks.size() == 3);
  CHECK(a.webhooks[0].name == "ops");
  CHECK(a.webhooks[0].format == WebhookFormat::fener);
  CHECK(a.webhooks[0].secret == "0123456789abcdef-secret");
  CHECK(a.webhooks[0].secret_source == f.dir.file("secret"));
  CHECK_FALSE(a.webhooks[0].check_events);
  CHECK(a.webhooks[0].remedy_events);
  CHECK(a.webhooks[0].min_severity == Status::critical);
  CHECK(a.webhooks[0].timeout == 3000ms);
  CHECK(a.webhooks[0].headers ==
        std::vector<std::pair<std::string, std::string>>{{"X-Team", "db"}});
  CHECK(a.webhooks[1].format == WebhookFormat::slack);
  CHECK(a.webhooks[1].check_events);
  CHECK(a.webhooks[1].min_severity == Status::warning);
  CHECK(a.webhooks[2].format == WebhookFormat::alertmanager);
  CHECK(a.queue_size == 64);
  CHECK(a.retry.initial == 500ms);
  CHECK(a.retry.max == 30000ms);
  CHECK(a.retry.attempts == 4);
  CHECK(a.group_wait == 1000ms);
  CHECK(a.repeat_interval == std::chrono::hours(1));

  CHECK(f.error_of("") == "(no error)");
  CHECK(load_config(f.opts).alerts.webhooks.empty());
}

TEST_CASE("alerts configuration errors name file, line, column and key") {
  ConfigFiles f;
  const std::string p = f.file;
  const std::string head = "alerts:\n  webhooks:\n    - name: ops\n";  // lines 3-5
  CHECK(f.error_of(head + "      url: https://x/\n      secrt_file: /x\n") ==
        p + ":7:7: alerts.webhooks[0].secrt_file: unknown key (did you mean \"secret_file\"?); "
            "expected one of: events, format, headers, min_severity, name, secret_file, timeout, "
            "url");
  CHECK(f.error_of(head + "      url: ftp://x/secret-path\n") ==
        p + ":6:12: alerts.webhooks[0].url: expected an http:// or https:// URL, got "
            "\"ftp://x/...\"");
  CHECK(f.error_of(head) ==
        p + ":5:7: alerts.webhooks[0].url: expected an http:// or https:// URL");
  CHECK(f.error_of(head + "      url: https://x/\n      format: xml\n") ==
        p + ":7:15: alerts.webhooks[0].format: expected json, slack or alertmanager, got \"xml\"");
  CHECK(f.error_of("alerts:\n  webhooks:\n    - name: Ops!\n      url: https://x/\n") ==
        p + ":5:13: alerts.webhooks[0].name: expected a name of lowercase letters, digits, _ or - "
            "(used in logs and metrics)");
  CHECK(f.error_of(head + "      url: https://x/\n    - name: ops\n      url: https://y/\n") ==
        p + ":7:13: alerts.webhooks[1].name: \"ops\" is used twice");
  CHECK(f.error_of(head + "      url: https://x/\n      events: [check, alarm]\n") ==
        p + ":7:15: alerts.webhooks[0].events: expected a list of check and remedy, got \"alarm\"");
  CHECK(f.error_of(head + "      url: https://x/\n      min_severity: high\n") ==
        p + ":7:21: alerts.webhooks[0].min_severity: expected passing, warning, unknown or "
            "critical, got \"high\"");
  CHECK(f.error_of(head + "      url: https://x/\n      headers: {Content-Type: text/plain}\n") ==
        p + ":7:31: alerts.webhooks[0].headers.Content-Type: fener sets this header itself");
  CHECK(f.error_of("alerts:\n  retry: {initial: 5s, max: 1s}\n") ==
        p + ":4:29: alerts.retry.max: must be at least initial (5s), got 1s");
  CHECK(f.error_of("alerts:\n  queue_size: 0\n") ==
        p + ":4:15: alerts.queue_size: expected a whole number from 1 to 100000, got 0");
  CHECK(f.error_of("alerts:\n  group_wiat: 1s\n") ==
        p + ":4:3: alerts.group_wiat: unknown key (did you mean \"group_wait\"?); expected one of: "
            "group_wait, queue_size, repeat_interval, retry, webhooks");

  // Secrets: signing is for json only, and the file must be private.
  f.dir.write("open", "0123456789abcdef-secret\n", 0644);
  f.dir.write("short", "tiny\n", 0600);
  CHECK(f.error_of(head + "      url: https://x/\n      format: slack\n      secret_file: " +
                   f.dir.file("short") + "\n") ==
        p + ":8:20: alerts.webhooks[0].secret_file: signatures are for format json only, this "
            "webhook is slack");
  CHECK(f.error_of(head + "      url: https://x/\n      secret_file: " + f.dir.file("open") +
                   "\n") == p + ":7:20: alerts.webhooks[0].secret_file: " + f.dir.file("open") +
                                " holds a shared secret and is readable by everyone (mode 0644): "
                                "chmod 600 " +
                                f.dir.file("open") + " (or 640 with a group)");
  const std::string short_error =
      f.error_of(head + "      url: https://x/\n      secret_file: " + f.dir.file("short") + "\n");
  CHECK(short_error == p + ":7:20: alerts.webhooks[0].secret_file: " + f.dir.file("short") +
                           " must hold a secret of at least 16 characters on its first line");
  CHECK(short_error.find("tiny") == std::string::npos);
}
