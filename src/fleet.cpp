#include "src/fleet.hpp"

#include <algorithm>
#include <cstdint>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "src/etcd_lock.hpp"
#include "src/http_client.hpp"

// GCC 12 at -O2 pairs Asio's coroutine-frame operator new/delete wrongly after inlining
// read_fleet's fetches and warns; the frames are allocated and freed by the same class.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace fener {

namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

// At most n bytes, not cutting a UTF-8 sequence in half.
std::string cut(const std::string& s, std::size_t n) {
  if (s.size() <= n) return s;
  std::size_t end = n;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end) + "...";
}

std::string last_segment(const std::string& key) {
  const auto slash = key.rfind('/');
  return slash == std::string::npos ? key : key.substr(slash + 1);
}

std::string pad(std::string s, std::size_t w) {
  s.resize(std::max(s.size(), w), ' ');
  return s;
}

}  // namespace

NodeSummary make_summary(const StatusSnapshot& s, Duration interval) {
  NodeSummary out;
  out.node = s.node;
  out.scope = s.scope;
  out.mode = std::string(to_string(s.mode));
  out.version = s.version;
  out.status = overall_status(s.checks);
  for (const auto& c : s.checks)
    out.checks.push_back({c.name, c.published.value_or(Status::unknown), c.last.message});
  out.published_at = s.now;
  out.interval = interval;
  return out;
}

json summary_to_json(const NodeSummary& s) {
  auto build = [&](bool with_messages) {
    json checks = json::array();
    for (std::size_t i = 0; i < s.checks.size() && i < kFleetMaxChecks; ++i) {
      const auto& c = s.checks[i];
      json j = {{"name", cut(c.name, kFleetMaxMessage)}, {"status", to_string(c.status)}};
      if (with_messages) j["message"] = cut(c.message, kFleetMaxMessage);
      checks.push_back(std::move(j));
    }
    json j = {{"node", s.node},
              {"scope", s.scope},
              {"mode", s.mode},
              {"version", s.version},
              {"status", to_string(s.status)},
              {"published_at", format_timestamp(s.published_at)},
              {"interval_seconds", static_cast<double>(s.interval.count()) / 1000.0},
              {"ttl_seconds", fleet_ttl_seconds(s.interval)},
              {"checks", std::move(checks)}};
    if (s.checks.size() > kFleetMaxChecks) j["checks_omitted"] = s.checks.size() - kFleetMaxChecks;
    return j;
  };
  json j = build(true);
  if (j.dump(-1, ' ', false, json::error_handler_t::replace).size() > kFleetMaxValue)
    j = build(false);
  return j;
}

std::optional<NodeSummary> summary_from_json(const json& j, std::string* why) {
  auto fail = [&](const std::string& reason) -> std::optional<NodeSummary> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (!j.is_object()) return fail("not a JSON object");
  NodeSummary s;
  for (const char* key : {"node", "status", "published_at"})
    if (!j.contains(key) || !j[key].is_string()) return fail(std::string("no \"") + key + "\"");
  // Optional fields of the wrong type read as absent: value() would throw on them.
  auto text = [](const json& o, const char* key) {
    return o.contains(key) && o[key].is_string() ? o[key].get<std::string>() : std::string();
  };
  s.node = j["node"].get<std::string>();
  s.scope = text(j, "scope");
  s.mode = text(j, "mode");
  s.version = text(j, "version");
  auto st = status_from_string(j["status"].get<std::string>());
  if (!st) return fail("unknown status \"" + j["status"].get<std::string>() + "\"");
  s.status = *st;
  auto at = parse_timestamp(j["published_at"].get<std::string>());
  if (!at) return fail("published_at is not a timestamp");
  s.published_at = *at;
  if (!j.contains("interval_seconds") || !j["interval_seconds"].is_number())
    return fail("no \"interval_seconds\"");
  // Bounded before the conversion: a double beyond long long's range does not convert.
  const double interval = j["interval_seconds"].get<double>();
  if (!(interval >= 0.001 && interval <= kFleetMaxIntervalSeconds))
    return fail("interval_seconds out of range");
  s.interval = Duration(static_cast<long long>(interval * 1000));
  if (j.contains("checks") && j["checks"].is_array()) {
    for (const auto& c : j["checks"]) {
      if (!c.is_object() || !c.contains("name") || !c["name"].is_string()) continue;
      FleetCheck fc;
      fc.name = c["name"].get<std::string>();
      fc.status = status_from_string(text(c, "status")).value_or(Status::unknown);
      fc.message = text(c, "message");
      s.checks.push_back(std::move(fc));
    }
  }
  return s;
}

long long fleet_ttl_seconds(Duration interval) {
  return std::max<long long>(1, duration_cast<seconds>(kFleetTtlIntervals * interval).count());
}

std::string fleet_dir(const std::string& scope) {
  return "/fener/" + url_encode(scope) + "/nodes";
}

std::string fleet_key(const std::string& scope, const std::string& node) {
  return fleet_dir(scope) + "/" + url_encode(node);
}

std::string fleet_put_form(const NodeSummary& s) {
  const std::string value = summary_to_json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return "value=" + url_encode(value) + "&ttl=" + std::to_string(fleet_ttl_seconds(s.interval));
}

std::optional<std::vector<FleetKey>> parse_fleet_listing(long http_status, const std::string& body,
                                                         std::string* why) {
  auto fail = [&](const std::string& reason) -> std::optional<std::vector<FleetKey>> {
    if (why) *why = reason;
    return std::nullopt;
  };
  auto j = parse_json(body);
  if (http_status == 404 && j && j->is_object() && j->contains("errorCode") &&
      (*j)["errorCode"].is_number_integer() && (*j)["errorCode"].get<long long>() == 100)
    return std::vector<FleetKey>{};  // nobody has published yet
  if (http_status != 200) return fail("HTTP " + std::to_string(http_status) + ": " + snippet(body));
  if (!j || !j->is_object() || !j->contains("node") || !(*j)["node"].is_object())
    return fail("not an etcd v2 listing: " + snippet(body));
  std::vector<FleetKey> out;
  const json& dir = (*j)["node"];
  if (!dir.contains("nodes")) return out;  // an empty directory
  if (!dir["nodes"].is_array()) return fail("not an etcd v2 listing: \"nodes\" is not a list");
  for (const auto& n : dir["nodes"]) {
    if (!n.is_object() || !n.contains("key") || !n["key"].is_string()) continue;
    if (n.contains("dir") && n["dir"].is_boolean() && n["dir"].get<bool>()) continue;
    FleetKey k;
    k.node = last_segment(n["key"].get<std::string>());
    k.value = n.contains("value") && n["value"].is_string() ? n["value"].get<std::string>() : "";
    // etcd's TTLs are positive seconds; anything else would only upset the age arithmetic.
    if (n.contains("ttl") && n["ttl"].is_number_unsigned() &&
        n["ttl"].get<std::uint64_t>() <= kFleetMaxTtlSeconds)
      k.ttl_left = n["ttl"].get<long long>();
    out.push_back(std::move(k));
  }
  return out;
}

std::vector<std::string> parse_member_names(const std::string& body) {
  std::vector<std::string> out;
  auto j = parse_json(body);
  if (!j || !j->is_object() || !j->contains("node") || !(*j)["node"].is_object()) return out;
  const json& dir = (*j)["node"];
  if (!dir.contains("nodes") || !dir["nodes"].is_array()) return out;
  for (const auto& n : dir["nodes"])
    if (n.is_object() && n.contains("key") && n["key"].is_string())
      out.push_back(last_segment(n["key"].get<std::string>()));
  return out;
}

std::string_view to_string(FleetState s) {
  switch (s) {
    case FleetState::fresh:
      return "fresh";
    case FleetState::stale:
      return "stale";
    case FleetState::missing:
      return "missing";
    case FleetState::invalid:
      return "invalid";
  }
  return "?";
}

Status FleetEntry::status() const {
  return state == FleetState::fresh && summary ? summary->status : Status::unknown;
}

FleetView judge_fleet(const std::string& scope, const std::vector<FleetKey>& keys,
                      const std::vector<std::string>& expected, SystemTime now) {
  FleetView v;
  v.scope = scope;
  std::set<std::string> seen;
  for (const auto& k : keys) {
    FleetEntry e;
    e.node = k.node;
    seen.insert(k.node);
    std::string why;
    auto doc = parse_json(k.value);
    auto summary = doc ? summary_from_json(*doc, &why) : std::nullopt;
    if (!doc) why = "not JSON: " + snippet(k.value);
    if (!summary) {
      e.state = FleetState::invalid;
      e.problem = why;
      v.nodes.push_back(std::move(e));
      continue;
    }
    const long long ttl = fleet_ttl_seconds(summary->interval);
    if (k.ttl_left && *k.ttl_left <= ttl)
      e.age = seconds(ttl - *k.ttl_left);
    else
      e.age = duration_cast<seconds>(now - summary->published_at);
    if (e.age < seconds(0)) e.age = seconds(0);  // the publisher's clock is ahead of ours
    e.state =
        e.age > kFleetStaleIntervals * summary->interval ? FleetState::stale : FleetState::fresh;
    e.summary = std::move(summary);
    v.nodes.push_back(std::move(e));
  }
  for (const auto& name : expected) {
    if (name.empty() || !seen.insert(name).second) continue;
    FleetEntry e;
    e.node = name;
    e.state = FleetState::missing;
    e.problem = "no summary in etcd";
    v.nodes.push_back(std::move(e));
  }
  std::sort(v.nodes.begin(), v.nodes.end(),
            [](const FleetEntry& a, const FleetEntry& b) { return a.node < b.node; });
  v.status = v.nodes.empty() ? Status::unknown : Status::passing;
  for (const auto& e : v.nodes) v.status = worst(v.status, e.status());
  return v;
}

json fleet_json(const FleetView& v) {
  json nodes = json::array();
  for (const auto& e : v.nodes) {
    json j = {{"node", e.node}, {"state", to_string(e.state)}, {"status", to_string(e.status())}};
    if (e.summary) {
      j["age_seconds"] = e.age.count();
      j["summary"] = summary_to_json(*e.summary);
    }
    if (!e.problem.empty()) j["problem"] = e.problem;
    nodes.push_back(std::move(j));
  }
  return {{"scope", v.scope}, {"status", to_string(v.status)}, {"nodes", std::move(nodes)}};
}

std::string fleet_table(const FleetView& v) {
  std::size_t wn = 4;
  for (const auto& e : v.nodes) wn = std::max(wn, e.node.size());
  std::string out = "scope " + v.scope + ": " + std::string(to_string(v.status)) + " (" +
                    std::to_string(v.nodes.size()) +
                    (v.nodes.size() == 1 ? " node)\n" : " nodes)\n");
  out += pad("NODE", wn) + "  STATUS    AGE     CHECKS\n";
  for (const auto& e : v.nodes) {
    std::string status, age = "-", checks;
    switch (e.state) {
      case FleetState::fresh:
        status = std::string(to_string(e.summary->status));
        break;
      case FleetState::stale:
        status = "STALE";
        break;
      case FleetState::missing:
        status = "MISSING";
        break;
      case FleetState::invalid:
        status = "INVALID";
        break;
    }
    if (e.summary) {
      age = format_age(e.age);
      std::size_t passing = 0;
      for (const auto& c : e.summary->checks) {
        if (c.status == Status::passing) {
          ++passing;
          continue;
        }
        checks += (checks.empty() ? "" : ", ") + c.name + " " + std::string(to_string(c.status));
      }
      if (checks.empty())
        checks =
            std::to_string(passing) + "/" + std::to_string(e.summary->checks.size()) + " passing";
      if (e.state == FleetState::stale)
        checks = "no update for " + format_age(e.age) +
                 "; last: " + std::string(to_string(e.summary->status)) + ", " + checks;
    } else {
      checks = e.problem;
    }
    out += pad(e.node, wn) + "  " + pad(status, 8) + "  " + pad(age, 6) + "  " + checks + "\n";
  }
  return out;
}

asio::awaitable<FleetRead> read_fleet(HttpClient& http, std::vector<std::string> endpoints,
                                      std::string scope, Duration timeout, TlsSettings tls) {
  FleetRead out;
  out.error = "no etcd endpoints configured (etcd.endpoints)";
  for (const auto& ep : endpoints) {
    HttpRequest req;
    req.tls = tls;
    req.url = ep + "/v2/keys" + fleet_dir(scope) + "?recursive=true";
    req.timeout = timeout;
    req.max_body = 4 << 20;
    HttpResult r = co_await http.fetch(std::move(req));
    if (!r.ok()) {
      out.error = ep + ": " + r.describe();
      continue;
    }
    std::string why;
    auto keys = parse_fleet_listing(r.status, r.body, &why);
    if (!keys) {
      out.error = ep + ": " + why;
      continue;
    }
    out.keys = std::move(keys);
    out.endpoint = ep;
    out.error.clear();
    HttpRequest members;
    members.tls = tls;
    members.url = ep + "/v2/keys/service/" + url_encode(scope) + "/members";
    members.timeout = timeout;
    HttpResult m = co_await http.fetch(std::move(members));
    if (m.ok() && m.status == 200) out.patroni_members = parse_member_names(m.body);
    break;
  }
  co_return out;
}

FleetPublisher::FleetPublisher(asio::io_context& io, HttpClient& http,
                               std::vector<std::string> endpoints, std::string scope,
                               std::string node, Duration interval, SummaryFn summary,
                               Duration debounce, TlsSettings tls)
    : io_(io),
      http_(http),
      endpoints_(std::move(endpoints)),
      tls_(std::move(tls)),
      scope_(std::move(scope)),
      node_(std::move(node)),
      interval_(interval),
      debounce_(debounce),
      summary_(std::move(summary)),
      timer_(io) {}

FleetPublisher::~FleetPublisher() {
  stop();
}

void FleetPublisher::start() {
  if (running_) return;
  running_ = true;
  asio::co_spawn(io_, loop(), asio::bind_cancellation_slot(stop_signal_.slot(), asio::detached));
}

void FleetPublisher::poke() {
  if (!running_) return;
  if (!poked_) {
    poked_ = true;
    poke_at_ = std::chrono::steady_clock::now() + debounce_;
  }
  timer_.cancel();  // the loop recomputes when to write
}

void FleetPublisher::stop() {
  if (!running_) return;
  running_ = false;
  stop_signal_.emit(asio::cancellation_type::terminal);
  timer_.cancel();
}

asio::awaitable<bool> FleetPublisher::publish_once() {
  const NodeSummary summary = summary_();
  const std::string form = fleet_put_form(summary);
  const std::string key = fleet_key(scope_, node_);
  std::string error = "no etcd endpoints configured";
  for (std::size_t tried = 0; tried < endpoints_.size(); ++tried) {
    const std::size_t i = (next_endpoint_ + tried) % endpoints_.size();
    HttpRequest req;
    req.tls = tls_;
    req.method = "PUT";
    req.url = endpoints_[i] + "/v2/keys" + key;
    req.body = form;
    req.headers = {"Content-Type: application/x-www-form-urlencoded"};
    req.timeout = std::min<Duration>(std::chrono::seconds(2), interval_);
    HttpResult r = co_await http_.fetch(std::move(req));
    if (r.ok() && (r.status == 200 || r.status == 201)) {
      next_endpoint_ = i;
      if (!stats_.last_error.empty())
        spdlog::info("fleet: publishing to etcd again ({})", endpoints_[i]);
      ++stats_.ok;
      stats_.last_ok = std::chrono::system_clock::now();
      stats_.last_error.clear();
      co_return true;
    }
    if (r.error == HttpError::cancelled) co_return false;
    error = endpoints_[i] + ": " +
            (r.ok() ? "HTTP " + std::to_string(r.status) + " " + snippet(r.body) : r.describe());
  }
  if (stats_.last_error.empty())
    spdlog::warn("fleet: cannot publish this node's summary to etcd: {}", error);
  ++stats_.failed;
  stats_.last_error = error;
  co_return false;
}

asio::awaitable<void> FleetPublisher::loop() {
  using Clock = std::chrono::steady_clock;
  ++active_;
  struct Leave {
    std::size_t& n;
    ~Leave() { --n; }
  } leave{active_};
  try {
    while (running_) {
      poked_ = false;  // a change during the write below asks for one more
      co_await publish_once();
      last_publish_ = Clock::now();
      const auto next = last_publish_ + interval_;
      while (running_) {
        const auto due =
            poked_ ? std::min(next, std::max(poke_at_, last_publish_ + debounce_)) : next;
        if (Clock::now() >= due) break;
        timer_.expires_at(due);
        boost::system::error_code ec;
        co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
    }
  } catch (const boost::system::system_error&) {
    // Cancelled by stop().
  }
}

void FleetPublisher::contribute(MetricsRegistry& m) const {
  m.declare("fener_fleet_publications_total", MetricType::counter,
            "Writes of this node's summary to etcd, by outcome (ok, failed).");
  m.set("fener_fleet_publications_total", {{"outcome", "ok"}}, static_cast<double>(stats_.ok));
  m.set("fener_fleet_publications_total", {{"outcome", "failed"}},
        static_cast<double>(stats_.failed));
  m.declare("fener_fleet_last_publication_timestamp_seconds", MetricType::gauge,
            "When etcd last took this node's summary, in seconds since the epoch.");
  if (stats_.last_ok != SystemTime{})
    m.set("fener_fleet_last_publication_timestamp_seconds", {},
          static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  stats_.last_ok.time_since_epoch())
                                  .count()) /
              1000.0);
}

}  // namespace fener
