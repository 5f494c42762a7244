#include "src/status.hpp"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>

#include "src/api_server.hpp"

namespace fener {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

double unix_seconds(SystemTime t) {
  return static_cast<double>(duration_cast<milliseconds>(t.time_since_epoch()).count()) / 1000.0;
}

double as_seconds(Duration d) {
  return static_cast<double>(d.count()) / 1000.0;
}

json timestamp_or_null(SystemTime t) {
  return t == SystemTime{} ? json(nullptr) : json(format_timestamp(t));
}

bool secret_key(std::string key) {
  std::transform(key.begin(), key.end(), key.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* word : {"password", "passwd", "secret", "token", "authorization", "cookie"})
    if (key.find(word) != std::string::npos) return true;
  return false;
}

// "scheme://user:password@host..." -> "scheme://user:(redacted)@host...".
std::string redact_url_password(const std::string& s) {
  const auto scheme = s.find("://");
  if (scheme == std::string::npos) return s;
  const auto start = scheme + 3;
  const auto at = s.find('@', start);
  const auto slash = s.find('/', start);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) return s;
  const auto colon = s.find(':', start);
  if (colon == std::string::npos || colon > at) return s;
  return s.substr(0, colon + 1) + "(redacted)" + s.substr(at);
}

}  // namespace

std::string format_timestamp(SystemTime t) {
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const time_t secs = static_cast<time_t>(ms / 1000 - (ms % 1000 < 0 ? 1 : 0));
  const int frac = static_cast<int>(((ms % 1000) + 1000) % 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  char buf[80];  // room for any int GCC imagines, not only four-digit years
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return buf;
}

std::optional<SystemTime> parse_timestamp(std::string_view text) {
  const std::string s(text);
  struct tm tm {};
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &consumed) != 6 ||
      consumed != 19)
    return std::nullopt;
  // Years outside 1970-2200 are refused: SystemTime counts nanoseconds, which reach only
  // about 292 years either side of 1970, and fener never wrote such a time.
  if (tm.tm_year < 1970 || tm.tm_year > 2200 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
      tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
    return std::nullopt;
  std::size_t i = 19;
  long ms = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      if (digits < 3) ms = ms * 10 + (s[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) ms *= 10;
  }
  if (i + 1 != s.size() || s[i] != 'Z') return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  const time_t secs = timegm(&tm);
  return SystemTime{} + seconds(secs) + milliseconds(ms);
}

std::string format_age(std::chrono::seconds age) {
  long long s = std::max<long long>(0, age.count());
  const long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60;
  s %= 60;
  if (d > 0) return std::to_string(d) + "d" + std::to_string(h) + "h";
  if (h > 0) return std::to_string(h) + "h" + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m" + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

json redact_secrets(const json& j) {
  if (j.is_object()) {
    json out = json::object();
    for (auto it = j.begin(); it != j.end(); ++it)
      out[it.key()] = secret_key(it.key()) && !it.value().is_null() ? json("(redacted)")
                                                                    : redact_secrets(it.value());
    return out;
  }
  if (j.is_array()) {
    json out = json::array();
    for (const auto& v : j) out.push_back(redact_secrets(v));
    return out;
  }
  if (j.is_string()) return redact_url_password(j.get<std::string>());
  return j;
}

json event_to_json(const Event& e) {
  return {{"kind", e.kind == Event::Kind::check ? "check" : "remedy"},
          {"node", e.node},
          {"scope", e.scope},
          {"subject", e.subject},
          {"state", e.state},
          {"previous", e.previous},
          {"severity", to_string(e.severity)},
          {"summary", e.summary},
          {"details", redact_secrets(e.details)},
          {"at", timestamp_or_null(e.at)}};
}

void RecentEvents::add(const Event& e) {
  ring_.push_back(e);
  while (ring_.size() > capacity_) ring_.pop_front();
  if (e.kind == Event::Kind::check) {
    if (!e.previous.empty()) ++transitions_[{e.subject, e.state}];
    return;
  }
  static const std::vector<std::string> outcomes = {"succeeded", "nothing_to_do", "failed",
                                                    "would_run", "refused",       "skipped"};
  if (std::find(outcomes.begin(), outcomes.end(), e.state) == outcomes.end()) return;
  std::string remedy;
  if (auto it = e.details.find("remedy"); it != e.details.end() && it->is_string())
    remedy = it->get<std::string>();
  ++actions_[{e.subject, remedy, e.state}];
  if (e.state == "succeeded") last_success_[e.subject] = e.at;
}

json RecentEvents::to_json() const {
  json out = json::array();
  for (auto it = ring_.rbegin(); it != ring_.rend(); ++it) out.push_back(event_to_json(*it));
  return out;
}

std::map<std::string, Duration> result_bounds(const Config& config) {
  std::map<std::string, Duration> out;
  for (const auto& c : config.checks)
    out[c.name] = 3 * (c.timing.interval + c.timing.timeout) + c.timing.jitter;
  return out;
}

Status overall_status(const std::vector<CheckState>& checks) {
  Status w = Status::passing;
  for (const auto& c : checks) w = worst(w, c.published.value_or(Status::unknown));
  return w;
}

json status_json(const StatusSnapshot& s) {
  json checks = json::array();
  for (const auto& c : s.checks) {
    const bool ran = c.last.at != SystemTime{};
    checks.push_back({{"name", c.name},
                      {"type", c.type},
                      {"status", c.published ? json(to_string(*c.published)) : json(nullptr)},
                      {"last_status", ran ? json(to_string(c.last.status)) : json(nullptr)},
                      {"message", c.last.message},
                      {"evidence", redact_secrets(c.last.evidence)},
                      {"since", c.published ? timestamp_or_null(c.since) : json(nullptr)},
                      {"last_run", ran ? json(format_timestamp(c.last.at)) : json(nullptr)},
                      {"duration_ms", c.last.duration.count()},
                      {"streak", c.streak}});
  }
  json out = json::object();
  for (auto it = s.extra.begin(); it != s.extra.end(); ++it) out[it.key()] = it.value();
  out["node"] = s.node;
  out["scope"] = s.scope;
  out["mode"] = to_string(s.mode);
  out["version"] = s.version;
  out["started_at"] = format_timestamp(s.started_at);
  out["now"] = format_timestamp(s.now);
  out["uptime_seconds"] = duration_cast<seconds>(s.now - s.started_at).count();
  out["status"] = to_string(overall_status(s.checks));
  out["checks"] = std::move(checks);
  out["rules"] = s.rules;
  out["events"] = s.events ? s.events->to_json() : json::array();
  return out;
}

std::string metrics_text(const StatusSnapshot& s) {
  MetricsRegistry m;
  const auto g = MetricType::gauge;
  const auto c = MetricType::counter;
  m.declare("fener_build_info", g, "fener's version; always 1.");
  m.set("fener_build_info", {{"version", s.version}}, 1);
  m.declare("fener_start_time_seconds", g, "When the daemon started, in seconds since the epoch.");
  m.set("fener_start_time_seconds", {}, unix_seconds(s.started_at));
  m.declare("fener_mode", g, "How far remedies may go: 1 for the mode in force, 0 for the others.");
  for (Mode mode : {Mode::observe, Mode::safe, Mode::full})
    m.set("fener_mode", {{"mode", std::string(to_string(mode))}}, mode == s.mode ? 1 : 0);

  const Status statuses[] = {Status::passing, Status::warning, Status::critical, Status::unknown};
  m.declare("fener_status", g,
            "This node's overall status (the worst check): 1 for it, 0 for the others.");
  const Status overall = overall_status(s.checks);
  for (Status st : statuses)
    m.set("fener_status", {{"status", std::string(to_string(st))}}, st == overall ? 1 : 0);
  m.declare("fener_check_status", g,
            "A check's published status (after rise/fall): 1 for it, 0 for the others; all 0 "
            "before its first result.");
  m.declare("fener_check_duration_seconds", g, "How long the check's latest run took.");
  m.declare("fener_check_last_run_timestamp_seconds", g,
            "When the check's latest run finished, in seconds since the epoch.");
  m.declare("fener_check_transitions_total", c,
            "Changes of a check's published status, by the status it changed to.");
  for (const auto& ch : s.checks) {
    for (Status st : statuses)
      m.set("fener_check_status",
            {{"check", ch.name}, {"type", ch.type}, {"status", std::string(to_string(st))}},
            ch.published == st ? 1 : 0);
    if (ch.last.at == SystemTime{}) continue;
    m.set("fener_check_duration_seconds", {{"check", ch.name}}, as_seconds(ch.last.duration));
    m.set("fener_check_last_run_timestamp_seconds", {{"check", ch.name}}, unix_seconds(ch.last.at));
  }

  m.declare("fener_remedy_actions_total", c,
            "Remedy decisions by rule, remedy and outcome (succeeded, nothing_to_do, failed, "
            "would_run, refused, skipped).");
  m.declare("fener_remedy_last_success_timestamp_seconds", g,
            "When the rule's remedy last succeeded, in seconds since the epoch.");
  if (s.events) {
    for (const auto& [key, n] : s.events->transitions())
      m.set("fener_check_transitions_total", {{"check", key.first}, {"to", key.second}},
            static_cast<double>(n));
    for (const auto& [key, n] : s.events->actions())
      m.set(
          "fener_remedy_actions_total",
          {{"rule", std::get<0>(key)}, {"remedy", std::get<1>(key)}, {"outcome", std::get<2>(key)}},
          static_cast<double>(n));
    for (const auto& [rule, at] : s.events->last_success())
      m.set("fener_remedy_last_success_timestamp_seconds", {{"rule", rule}}, unix_seconds(at));
  }
  m.declare("fener_rule_gave_up", g,
            "1 while the rule has given up (until its check recovers or `fener rules reset`).");
  for (const auto& r : s.rules) {
    if (!r.is_object() || !r.contains("rule") || !r["rule"].is_string()) continue;
    const bool gave_up = r.value("phase", std::string()) == "gave_up";
    m.set("fener_rule_gave_up", {{"rule", r["rule"].get<std::string>()}}, gave_up ? 1 : 0);
  }
  for (const auto& contribute : s.metrics)
    if (contribute) contribute(m);
  return m.render();
}

json Health::to_json() const {
  if (ok) return {{"status", "ok"}};
  return {{"status", "failing"}, {"problems", problems}};
}

Health judge_health(const StatusSnapshot& s) {
  Health h;
  if (s.checks.empty()) {
    h.ok = false;
    h.problems.push_back("no checks are running");
    return h;
  }
  const SystemTime since_start = std::max(s.started_at, s.checks_started_at);
  for (const auto& c : s.checks) {
    auto it = s.result_bounds.find(c.name);
    const Duration bound = it == s.result_bounds.end() ? kDefaultResultBound : it->second;
    const bool ran = c.last.at != SystemTime{};
    const SystemTime reference = ran ? c.last.at : since_start;
    const auto late = duration_cast<milliseconds>(s.now - reference);
    if (late <= bound) continue;
    h.ok = false;
    h.problems.push_back(
        "check " + c.name + ": " +
        (ran ? "latest result " + format_age(duration_cast<seconds>(late)) + " ago"
             : "no result in " + format_age(duration_cast<seconds>(late)) + " since start") +
        " (expected within " + format_duration(bound) + ")");
  }
  return h;
}

std::string status_table(const json& st) {
  auto text = [](const json& j, const char* key) {
    return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>()
                                                                  : std::string("-");
  };
  std::string out = "node " + text(st, "node") + ", scope " + text(st, "scope") + ", mode " +
                    text(st, "mode") + ", fener " + text(st, "version");
  if (st.contains("uptime_seconds") && st["uptime_seconds"].is_number_integer())
    out += ", up " + format_age(seconds(st["uptime_seconds"].get<long long>()));
  out += ": " + text(st, "status") + "\n";
  const auto now = parse_timestamp(text(st, "now"));
  const json checks =
      st.contains("checks") && st["checks"].is_array() ? st["checks"] : json::array();
  std::size_t wc = 5, ws = 8;  // "critical"
  for (const auto& c : checks) wc = std::max(wc, text(c, "name").size());
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(s.size(), w), ' ');
    return s;
  };
  out += pad("CHECK", wc) + "  " + pad("STATUS", ws) + "  " + pad("SINCE", 6) + "  MESSAGE\n";
  for (const auto& c : checks) {
    const bool published = c.is_object() && c.contains("status") && c["status"].is_string();
    const auto since = parse_timestamp(text(c, "since"));
    const std::string age = now && since ? format_age(duration_cast<seconds>(*now - *since)) : "-";
    out += pad(text(c, "name"), wc) + "  " + pad(published ? text(c, "status") : "pending", ws) +
           "  " + pad(age, 6) + "  " + text(c, "message") + "\n";
  }
  return out;
}

namespace {

enum class Document { status, metrics, health };

// A coroutine function with its own copy of the snapshot source, not a capturing lambda:
// the closure that calls it need not outlive the request.
asio::awaitable<ApiResponse> serve(std::shared_ptr<std::function<StatusSnapshot()>> take,
                                   Document doc) {
  const StatusSnapshot s = (*take)();
  ApiResponse r;
  switch (doc) {
    case Document::status:
      // Evidence holds peers' bytes: invalid UTF-8 must not fail the answer.
      r.body = status_json(s).dump(-1, ' ', false, json::error_handler_t::replace);
      break;
    case Document::metrics:
      r.content_type = kMetricsContentType;
      r.body = metrics_text(s);
      break;
    case Document::health: {
      const Health h = judge_health(s);
      r = ApiResponse::json_body(h.ok ? 200 : 503, h.to_json());
      break;
    }
  }
  co_return r;
}

}  // namespace

void add_status_routes(ApiServer& api, std::function<StatusSnapshot()> snapshot) {
  auto take = std::make_shared<std::function<StatusSnapshot()>>(std::move(snapshot));
  api.add_route("GET", "/status", false, false,
                [take](const ApiRequest&) { return serve(take, Document::status); });
  api.add_route("GET", "/metrics", false, false,
                [take](const ApiRequest&) { return serve(take, Document::metrics); });
  api.add_route("GET", "/healthz", false, false,
                [take](const ApiRequest&) { return serve(take, Document::health); });
}

}  // namespace fener
