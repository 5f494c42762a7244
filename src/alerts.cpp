#include "src/alerts.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <iterator>
#include <random>
#include <utility>

#include <spdlog/spdlog.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "src/sha256.hpp"

namespace fener {

namespace alerting {

using SteadyClock = std::chrono::steady_clock;
using WallClock = std::chrono::system_clock;

Admit admit(const WebhookConfig& w, const Event& e, const Memory* last, SteadyTime now,
            Duration repeat) {
  const bool wanted = e.kind == Event::Kind::check ? w.check_events : w.remedy_events;
  if (!wanted) return Admit::filtered;
  if (last && !last->state.empty() && last->state == e.state && now - last->sent_at < repeat)
    return Admit::duplicate;
  const bool open = last && last->open;
  if (!e.firing()) {
    // A resolution matters to whoever heard the alert; Alertmanager has nothing to
    // resolve for a condition it never saw fire.
    if (open) return Admit::send;
    return w.format != WebhookFormat::alertmanager && w.min_severity == Status::passing
               ? Admit::send
               : Admit::filtered;
  }
  if (open || severity(e.severity) >= severity(w.min_severity)) return Admit::send;
  return Admit::filtered;
}

Duration backoff_delay(int retry, Duration initial, Duration max, double unit) {
  if (retry < 1) retry = 1;
  // In double: initial * 2^(retry-1) overflows integers long before max caps it.
  const double ceiling =
      std::min(static_cast<double>(max.count()),
               static_cast<double>(initial.count()) * std::pow(2.0, std::min(retry - 1, 62)));
  unit = std::clamp(unit, 0.0, 1.0);
  return Duration{static_cast<Duration::rep>(std::floor(unit * ceiling))};
}

std::optional<Duration> parse_retry_after(std::string_view value, WallTime now) {
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.front())))
    value.remove_prefix(1);
  while (!value.empty() && std::isspace(static_cast<unsigned char>(value.back())))
    value.remove_suffix(1);
  if (value.empty()) return std::nullopt;
  if (std::all_of(value.begin(), value.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    if (value.size() > 9) return std::chrono::hours(24 * 365);  // absurd, capped by caller
    return std::chrono::seconds(std::stoll(std::string(value)));
  }
  // IMF-fixdate, the form RFC 9110 requires senders to use: "Sun, 06 Nov 1994 08:49:37 GMT".
  std::tm tm{};
  const std::string text(value);
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') return std::nullopt;
  // In seconds: a far-off year does not fit the clock's nanoseconds (from_time_t would
  // overflow), and a wait that long is as absurd as a huge delay-seconds.
  const std::time_t at = timegm(&tm);
  const std::time_t from = WallClock::to_time_t(now);
  if (at <= from) return Duration{0};
  if (at - from > 365 * 24 * 3600) return std::chrono::hours(24 * 365);
  return std::chrono::seconds(at - from);
}

Verdict judge(const HttpResult& r, WebhookFormat format) {
  if (r.error == HttpError::cancelled) return {Outcome::cancelled, "cancelled"};
  if (!r.ok()) return {Outcome::retry, r.describe()};
  const std::string status = "HTTP " + std::to_string(r.status);
  if (r.status >= 200 && r.status < 300) {
    if (format == WebhookFormat::slack) {
      std::string body = r.body;
      while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back())))
        body.pop_back();
      if (body != "ok")
        return {Outcome::permanent, status + " without \"ok\": " + snippet(r.body, 80)};
    }
    return {Outcome::delivered, status};
  }
  if (r.status == 408 || r.status == 429 || r.status >= 500) return {Outcome::retry, status};
  if (r.status >= 300 && r.status < 400)
    return {Outcome::permanent, status + " (redirects are not followed: fix the url)"};
  std::string why = status;
  if (!r.body.empty()) why += ": " + snippet(r.body, 80);
  return {Outcome::permanent, why};
}

BatchPlan plan_batch(const std::vector<SteadyTime>& queued_at, SteadyTime now, Duration group_wait,
                     std::size_t max_batch) {
  BatchPlan plan;
  if (queued_at.empty()) {
    plan.wake = SteadyTime::max();
    return plan;
  }
  max_batch = std::max<std::size_t>(max_batch, 1);
  const SteadyTime window_end = queued_at.front() + group_wait;
  plan.wake = window_end;
  plan.ready = now >= window_end || queued_at.size() >= max_batch;
  if (!plan.ready) return plan;
  while (plan.take < queued_at.size() && plan.take < max_batch &&
         queued_at[plan.take] <= window_end)
    ++plan.take;
  plan.take = std::max<std::size_t>(plan.take, 1);
  return plan;
}

std::string rfc3339_ms(WallTime t) {
  const auto ms_total =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ms_total / 1000);
  auto ms = ms_total % 1000;
  if (ms < 0) ms += 1000, --secs;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

std::string signature(const std::string& secret, const std::string& body) {
  return "sha256=" + to_hex(hmac_sha256(secret, body));
}

namespace {

std::string dump(const nlohmann::json& j) {
  // Peers' bytes reach details; invalid UTF-8 must not abort a delivery.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string kind_name(const Event& e) {
  return e.kind == Event::Kind::check ? "check" : "remedy";
}

// The summary, or one made from the event when the producer left it empty.
std::string summary_of(const Event& e) {
  if (!e.summary.empty()) return e.summary;
  std::string s = (e.kind == Event::Kind::check ? "check " : "rule ") + e.subject + ": ";
  if (!e.previous.empty()) s += e.previous + " -> ";
  return s + e.state;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// Slack treats &, < and > as markup.
std::string slack_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&') {
      out += "&amp;";
    } else if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else {
      out += c;
    }
  }
  return out;
}

std::string description_of(const Event& e) {
  std::string d = "state " + e.state;
  if (!e.previous.empty()) d += " (was " + e.previous + ")";
  for (const char* field : {"message", "reason", "outcome"}) {
    auto it = e.details.find(field);
    if (it != e.details.end() && it->is_string() && !it->get<std::string>().empty()) {
      d += ": " + it->get<std::string>();
      break;
    }
  }
  return d;
}

nlohmann::json am_alert(const Event& e, const Origin& o, const std::string& severity_label,
                        WallTime starts, WallTime ends) {
  nlohmann::json labels = {
      {"alertname", e.kind == Event::Kind::check ? "FenerCheck" : "FenerRemedy"},
      {"node", e.node},
      {e.kind == Event::Kind::check ? "check" : "rule", e.subject},
      {"severity", severity_label}};
  if (!e.scope.empty()) labels["scope"] = e.scope;
  nlohmann::json a = {
      {"labels", std::move(labels)},
      {"annotations", {{"summary", summary_of(e)}, {"description", description_of(e)}}},
      {"startsAt", rfc3339_ms(starts)},
      {"endsAt", rfc3339_ms(ends)}};
  if (!o.generator_url.empty()) a["generatorURL"] = o.generator_url;
  return a;
}

}  // namespace

std::string json_body(const std::vector<Pending>& batch, const Origin& o, const std::string& id,
                      WallTime sent) {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& p : batch) {
    const Event& e = p.event;
    events.push_back({{"kind", kind_name(e)},
                      {"subject", e.subject},
                      {"state", e.state},
                      {"previous", e.previous},
                      {"severity", std::string(to_string(e.severity))},
                      {"summary", summary_of(e)},
                      {"details", e.details},
                      {"time", rfc3339_ms(e.at)},
                      {"key", e.key()},
                      {"firing", e.firing()},
                      {"repeat", p.repeat}});
  }
  return dump({{"version", 1},
               {"node", o.node},
               {"scope", o.scope},
               {"delivery", id},
               {"sent", rfc3339_ms(sent)},
               {"events", std::move(events)}});
}

std::string slack_body(const std::vector<Pending>& batch, const Origin& o) {
  std::string text;
  for (const auto& p : batch) {
    const Event& e = p.event;
    std::string tag = e.firing() ? upper(to_string(e.severity)) : "RESOLVED";
    if (p.repeat) tag += ", still";
    const std::string node = e.node.empty() ? o.node : e.node;
    const std::string scope = e.scope.empty() ? o.scope : e.scope;
    std::string line =
        "[" + tag + "] " + node + (scope.empty() ? "" : " (" + scope + ")") + ": " + summary_of(e);
    if (!text.empty()) text += "\n";
    text += slack_escape(line);
  }
  return dump({{"text", text}});
}

std::string alertmanager_body(const std::vector<Pending>& batch, const Origin& o, WallTime sent,
                              Duration resend) {
  nlohmann::json alerts = nlohmann::json::array();
  for (const auto& p : batch) {
    // The severity changed while firing: that is another alert to Alertmanager, and the
    // old one ends now.
    if (!p.resolve_severity.empty())
      alerts.push_back(am_alert(p.event, o, p.resolve_severity, p.resolve_starts_at, sent));
    const WallTime ends = p.event.firing() ? sent + 4 * resend : sent;
    const std::string label =
        p.label_severity.empty() ? std::string(to_string(p.event.severity)) : p.label_severity;
    alerts.push_back(am_alert(p.event, o, label, p.starts_at, ends));
  }
  return dump(alerts);
}

}  // namespace alerting

using namespace alerting;

nlohmann::json to_json(const WebhookStats& s) {
  return {{"name", s.name},
          {"format", s.format},
          {"target", s.target},
          {"deliveries", s.deliveries},
          {"events_sent", s.events_sent},
          {"failed_attempts", s.failed_attempts},
          {"timeouts", s.timeouts},
          {"retries", s.retries},
          {"duplicates", s.duplicates},
          {"dropped_overflow", s.dropped_overflow},
          {"dropped_permanent", s.dropped_permanent},
          {"dropped_exhausted", s.dropped_exhausted},
          {"dropped_shutdown", s.dropped_shutdown},
          {"queue_depth", s.queue_depth},
          {"in_flight", s.in_flight},
          {"last_error", s.last_error}};
}

struct AlertDispatcher::Hook {
  Hook(asio::io_context& io, WebhookConfig c, Duration r)
      : cfg(std::move(c)), repeat(r), wake(io) {}
  WebhookConfig cfg;
  Duration repeat;  // dedup window and reminder period
  std::deque<Pending> queue;
  std::map<std::string, Memory> memory;
  WebhookStats stats;
  asio::steady_timer wake;           // the loop sleeps on it; publish() and stop() cancel it
  asio::cancellation_signal cancel;  // aborts the request in flight when grace runs out
  bool overflowing = false;          // logged once per episode
  bool failing = false;              // the last delivery failed; say when it works again
};

struct AlertDispatcher::Shared {
  Shared(asio::io_context& i, HttpClient& h, AlertsConfig c, AlertOptions o)
      : io(i), http(h), cfg(std::move(c)), opts(std::move(o)), rng(std::random_device{}()) {}
  asio::io_context& io;
  HttpClient& http;
  AlertsConfig cfg;
  AlertOptions opts;
  std::vector<std::unique_ptr<Hook>> hooks;
  std::mt19937_64 rng;
  bool started = false;
  bool stopping = false;
  bool abandoned = false;
  SteadyTime stop_deadline{};
  std::unique_ptr<asio::steady_timer> grace;
  std::size_t active = 0;

  double random() {
    if (opts.random) return opts.random();
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }

  // Unique per delivery and kept across its retries, so receivers can drop repeats.
  std::string new_id() {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id;
    for (int i = 0; i < 2; ++i) {
      auto v = rng();
      for (int j = 0; j < 16; ++j, v >>= 4) id.push_back(kHex[v & 0xf]);
    }
    return id;
  }

  void abandon() {
    if (abandoned) return;
    abandoned = true;
    for (auto& h : hooks) {
      h->wake.cancel();
      h->cancel.emit(asio::cancellation_type::terminal);
    }
  }
};

namespace {

using Hook = AlertDispatcher::Hook;

// What a receiver (or a proxy in front of it) answers may echo the request: its URL, with
// credentials in the user info, path or query, and its headers. Such text goes to the log
// and to GET /status, so every secret of the webhook in it is replaced first.
std::string scrub_webhook_secrets(std::string text, const WebhookConfig& w) {
  std::vector<std::string> secrets;
  auto add = [&](std::string s, std::size_t min_size) {
    if (s.size() >= min_size) secrets.push_back(std::move(s));
  };
  add(w.url, 1);
  add(w.secret, 1);
  for (const auto& [name, value] : w.headers) {
    add(value, 1);
    const auto space = value.rfind(' ');  // "Bearer X": X alone too
    if (space != std::string::npos) add(value.substr(space + 1), 6);
  }
  if (const auto scheme = w.url.find("://"); scheme != std::string::npos) {
    const auto start = scheme + 3;
    const auto end = w.url.find_first_of("/?#", start);
    const std::string authority = w.url.substr(start, end == std::string::npos ? end : end - start);
    if (const auto at = authority.rfind('@'); at != std::string::npos) {
      const std::string userinfo = authority.substr(0, at);
      add(userinfo, 1);
      if (const auto colon = userinfo.find(':'); colon != std::string::npos)
        add(userinfo.substr(colon + 1), 1);
    }
    if (end != std::string::npos) {
      const std::string rest = w.url.substr(end);  // path, query: Slack's secret path
      add(rest, 6);
      std::size_t i = 0;
      while (i < rest.size()) {
        const auto j = rest.find_first_of("/?&=#", i);
        add(rest.substr(i, j == std::string::npos ? j : j - i), 6);
        if (j == std::string::npos) break;
        i = j + 1;
      }
    }
  }
  // Longest first, so that a secret inside another is not left half-replaced.
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& secret : secrets) {
    for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos + 10))
      text.replace(pos, secret.size(), "(redacted)");
  }
  return text;
}

void enqueue(Hook& h, std::size_t limit, Pending p) {
  if (h.queue.size() >= limit) {
    h.queue.pop_front();
    ++h.stats.dropped_overflow;
    if (!h.overflowing)
      spdlog::warn("alert webhook {}: queue full ({} events), dropping the oldest", h.cfg.name,
                   limit);
    h.overflowing = true;
  }
  h.queue.push_back(std::move(p));
}

// Reminders for conditions that still fire: Alertmanager forgets alerts nobody re-sends,
// and a chat channel should hear again about an outage that lasts.
void queue_repeats(Hook& h, std::size_t limit, SteadyTime now) {
  for (auto& [key, m] : h.memory) {
    if (!m.open || now - m.sent_at < h.repeat) continue;
    Pending p;
    p.event = m.last;
    p.repeat = true;
    p.queued_at = now;
    p.label_severity = m.label_severity;
    p.starts_at = m.starts_at;
    m.sent_at = now;
    enqueue(h, limit, std::move(p));
  }
}

SteadyTime next_repeat(const Hook& h) {
  SteadyTime next = SteadyTime::max();
  for (const auto& [key, m] : h.memory)
    if (m.open) next = std::min(next, m.sent_at + h.repeat);
  return next;
}

asio::awaitable<void> sleep_until(Hook& h, SteadyTime t) {
  h.wake.expires_at(t);
  boost::system::error_code ec;  // cancelled means "look again", not an error
  co_await h.wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

// Undelivered events do not count for deduplication: the next one like them goes out.
void forget(Hook& h, const std::vector<Pending>& batch) {
  for (const auto& p : batch) {
    auto it = h.memory.find(p.event.key());
    if (it != h.memory.end() && it->second.state == p.event.state) it->second.state.clear();
  }
}

HttpRequest build_request(AlertDispatcher::Shared& s, const Hook& h,
                          const std::vector<Pending>& batch, const std::string& id) {
  HttpRequest req;
  req.method = "POST";
  req.timeout = h.cfg.timeout;
  req.max_body = 64 * 1024;  // receivers answer briefly; we read only the status and "ok"
  req.url = h.cfg.url;
  const auto now = WallClock::now();
  switch (h.cfg.format) {
    case WebhookFormat::fener: {
      req.body = json_body(batch, s.opts.origin, id, now);
      req.headers.push_back("X-Fener-Delivery: " + id);
      req.headers.push_back(
          "X-Fener-Timestamp: " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count()));
      if (!h.cfg.secret.empty())
        req.headers.push_back("X-Fener-Signature: " + signature(h.cfg.secret, req.body));
      break;
    }
    case WebhookFormat::slack:
      req.body = slack_body(batch, s.opts.origin);
      break;
    case WebhookFormat::alertmanager: {
      std::string base = h.cfg.url;
      while (!base.empty() && base.back() == '/') base.pop_back();
      req.url = base + "/api/v2/alerts";
      req.body = alertmanager_body(batch, s.opts.origin, now, h.repeat);
      break;
    }
  }
  req.headers.push_back("Content-Type: application/json");
  // curl would otherwise wait for "100 Continue" before sending larger bodies.
  req.headers.push_back("Expect:");
  for (const auto& [name, value] : h.cfg.headers) req.headers.push_back(name + ": " + value);
  return req;
}

asio::awaitable<void> deliver(std::shared_ptr<AlertDispatcher::Shared> s, Hook& h,
                              std::vector<Pending> batch) {
  const std::string id = s->new_id();
  const auto n = batch.size();
  h.stats.in_flight = true;
  struct Done {
    Hook& hook;
    ~Done() { hook.stats.in_flight = false; }
  } done{h};
  try {
    for (int attempt = 1;; ++attempt) {
      if (s->abandoned) {
        h.stats.dropped_shutdown += n;
        co_return;
      }
      HttpRequest req = build_request(*s, h, batch, id);
      if (s->stopping) {
        const auto left =
            std::chrono::duration_cast<Duration>(s->stop_deadline - SteadyClock::now());
        req.timeout = std::clamp(left, Duration{1}, req.timeout);
      }
      const HttpResult r = co_await s->http.fetch(std::move(req));
      Verdict v = judge(r, h.cfg.format);
      v.why = scrub_webhook_secrets(std::move(v.why), h.cfg);
      if (v.outcome == Outcome::delivered) {
        ++h.stats.deliveries;
        h.stats.events_sent += n;
        h.stats.last_error.clear();
        if (h.failing) spdlog::info("alert webhook {}: delivering again", h.cfg.name);
        h.failing = false;
        co_return;
      }
      if (v.outcome == Outcome::cancelled || s->abandoned) {
        h.stats.dropped_shutdown += n;
        co_return;
      }
      ++h.stats.failed_attempts;
      if (r.error == HttpError::timeout) ++h.stats.timeouts;
      h.stats.last_error = v.why;
      h.failing = true;
      if (v.outcome == Outcome::permanent) {
        h.stats.dropped_permanent += n;
        spdlog::error("alert webhook {} ({}): {}; dropped {} event(s), not retrying", h.cfg.name,
                      h.stats.target, v.why, n);
        forget(h, batch);
        co_return;
      }
      if (attempt >= s->cfg.retry.attempts) {
        h.stats.dropped_exhausted += n;
        spdlog::error("alert webhook {} ({}): {}; dropped {} event(s) after {} attempts",
                      h.cfg.name, h.stats.target, v.why, n, attempt);
        forget(h, batch);
        co_return;
      }
      if (s->stopping) {
        h.stats.dropped_shutdown += n;
        spdlog::warn("alert webhook {} ({}): {}; stopping, dropped {} event(s)", h.cfg.name,
                     h.stats.target, v.why, n);
        co_return;
      }
      Duration delay = backoff_delay(attempt, s->cfg.retry.initial, s->cfg.retry.max, s->random());
      if (auto ra = r.header("retry-after")) {
        // The receiver knows best when to come back; retry.max stays the operator's limit.
        if (auto d = parse_retry_after(*ra, WallClock::now()))
          delay = std::min(*d, s->cfg.retry.max);
      }
      ++h.stats.retries;
      // The first failure is news; its retries are detail until the outcome is known.
      spdlog::log(attempt == 1 ? spdlog::level::warn : spdlog::level::debug,
                  "alert webhook {} ({}): {}; retry {} in {}", h.cfg.name, h.stats.target, v.why,
                  attempt, format_duration(delay));
      const auto until = SteadyClock::now() + delay;
      // New events wake the loop too; only stop() cuts the backoff short.
      while (!s->stopping && SteadyClock::now() < until) co_await sleep_until(h, until);
    }
  } catch (const boost::system::system_error&) {
    h.stats.dropped_shutdown += n;  // cancelled when the grace period ran out
    throw;
  }
}

// start() counted this loop in s->active before spawning it, so that a stop() before
// the loop first runs still waits for it.
asio::awaitable<void> run_hook(std::shared_ptr<AlertDispatcher::Shared> s, Hook& h) {
  struct Leave {
    AlertDispatcher::Shared& shared;
    ~Leave() {
      if (--shared.active == 0 && shared.grace) shared.grace->cancel();
    }
  } leave{*s};
  try {
    for (;;) {
      if (s->abandoned) break;
      const auto now = SteadyClock::now();
      if (!s->stopping) queue_repeats(h, s->cfg.queue_size, now);
      if (h.queue.empty()) {
        h.overflowing = false;
        if (s->stopping) break;
        co_await sleep_until(h, next_repeat(h));
        continue;
      }
      std::vector<SteadyTime> times;
      times.reserve(h.queue.size());
      for (const auto& p : h.queue) times.push_back(p.queued_at);
      auto plan =
          plan_batch(times, now, s->stopping ? Duration{0} : s->cfg.group_wait, s->opts.max_batch);
      // Stopping: no more waiting for a group to fill; what is queued leaves together.
      if (s->stopping)
        plan.take = std::min(h.queue.size(), std::max<std::size_t>(s->opts.max_batch, 1));
      if (!plan.ready) {
        co_await sleep_until(h, std::min(plan.wake, next_repeat(h)));
        continue;
      }
      std::vector<Pending> batch(std::make_move_iterator(h.queue.begin()),
                                 std::make_move_iterator(h.queue.begin() + plan.take));
      h.queue.erase(h.queue.begin(), h.queue.begin() + plan.take);
      co_await deliver(s, h, std::move(batch));
    }
  } catch (const boost::system::system_error&) {
    // Cancelled: stop()'s grace ran out.
  } catch (const std::exception& e) {
    spdlog::error("alert webhook {}: delivery loop failed: {}", h.cfg.name, e.what());
  }
  if (!h.queue.empty()) {
    spdlog::warn("alert webhook {}: dropped {} undelivered event(s) at shutdown", h.cfg.name,
                 h.queue.size());
    h.stats.dropped_shutdown += h.queue.size();
    h.queue.clear();
  }
}

}  // namespace

AlertDispatcher::AlertDispatcher(asio::io_context& io, HttpClient& http, AlertsConfig cfg,
                                 AlertOptions opts)
    : shared_(std::make_shared<Shared>(io, http, std::move(cfg), std::move(opts))) {
  for (const auto& w : shared_->cfg.webhooks) {
    Duration repeat = shared_->cfg.repeat_interval;
    if (w.format == WebhookFormat::alertmanager)
      repeat = std::min(repeat, shared_->opts.alertmanager_resend);
    auto h = std::make_unique<Hook>(io, w, repeat);
    h->stats.name = w.name;
    h->stats.format = std::string(to_string(w.format));
    h->stats.target = redact_url(w.url);
    shared_->hooks.push_back(std::move(h));
  }
}

AlertDispatcher::~AlertDispatcher() {
  shared_->stopping = true;
  shared_->abandon();
}

void AlertDispatcher::start() {
  if (shared_->started) return;
  shared_->started = true;
  for (auto& h : shared_->hooks) {
    ++shared_->active;
    asio::co_spawn(shared_->io, run_hook(shared_, *h),
                   asio::bind_cancellation_slot(h->cancel.slot(), asio::detached));
  }
}

void AlertDispatcher::publish(const Event& event) {
  auto& s = *shared_;
  if (s.stopping) return;
  const auto now = SteadyClock::now();
  Event e = event;
  if (e.at == WallTime{}) e.at = WallClock::now();
  const std::string key = e.key();
  for (auto& hp : s.hooks) {
    Hook& h = *hp;
    auto it = h.memory.find(key);
    const Memory* last = it == h.memory.end() ? nullptr : &it->second;
    switch (admit(h.cfg, e, last, now, h.repeat)) {
      case Admit::filtered:
        continue;
      case Admit::duplicate:
        ++h.stats.duplicates;
        continue;
      case Admit::send:
        break;
    }
    Memory& m = h.memory[key];
    Pending p;
    p.event = e;
    p.queued_at = now;
    if (e.firing()) {
      const std::string label(to_string(e.severity));
      if (!m.open) {
        m.starts_at = e.at;
      } else if (m.label_severity != label) {
        p.resolve_severity = m.label_severity;
        p.resolve_starts_at = m.starts_at;
        m.starts_at = e.at;
      }
      m.label_severity = label;
      m.open = true;
    } else {
      if (!m.open) {
        m.label_severity = to_string(e.severity);
        m.starts_at = e.at;
      }
      m.open = false;
    }
    p.label_severity = m.label_severity;
    p.starts_at = m.starts_at;
    m.state = e.state;
    m.sent_at = now;
    m.last = e;
    enqueue(h, s.cfg.queue_size, std::move(p));
    h.wake.cancel();
  }
}

void AlertDispatcher::stop(Duration grace) {
  auto& s = *shared_;
  if (s.stopping) return;
  s.stopping = true;
  s.stop_deadline = SteadyClock::now() + grace;
  for (auto& h : s.hooks) h->wake.cancel();
  if (!s.started) return;
  s.grace = std::make_unique<asio::steady_timer>(s.io, grace);
  s.grace->async_wait([weak = std::weak_ptr<Shared>(shared_)](boost::system::error_code ec) {
    auto me = weak.lock();
    if (ec || !me) return;
    me->abandon();
  });
}

std::size_t AlertDispatcher::active() const {
  return shared_->active;
}

void AlertDispatcher::adopt_state(const AlertDispatcher& old) {
  for (auto& h : shared_->hooks) {
    for (const auto& o : old.shared_->hooks) {
      if (o->cfg.name == h->cfg.name && o->cfg.format == h->cfg.format) h->memory = o->memory;
    }
  }
}

std::vector<WebhookStats> AlertDispatcher::stats() const {
  std::vector<WebhookStats> out;
  for (const auto& h : shared_->hooks) {
    out.push_back(h->stats);
    out.back().queue_depth = h->queue.size();
  }
  return out;
}

nlohmann::json AlertDispatcher::stats_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : stats()) out.push_back(to_json(s));
  return out;
}

}  // namespace fener
