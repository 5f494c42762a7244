#include "checks/patroni_node.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <exception>
#include <limits>
#include <utility>
#include <vector>

#include "src/cluster_http.hpp"

namespace fener {

// ---- sizes -------------------------------------------------------------------------------

namespace {

struct SizeUnit {
  std::string_view name;  // lower case
  int shift;
};
constexpr std::array<SizeUnit, 6> kSizeUnits = {
    {{"", 0}, {"b", 0}, {"kb", 10}, {"mb", 20}, {"gb", 30}, {"tb", 40}}};

}  // namespace

std::optional<std::int64_t> parse_size(std::string_view text) {
  auto is_space = [](char c) { return c == ' ' || c == '\t'; };
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  std::size_t i = 0;
  std::int64_t n = 0;
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const int digit = text[i] - '0';
    if (n > (kMax - digit) / 10) return std::nullopt;
    n = n * 10 + digit;
    ++i;
  }
  if (i == 0) return std::nullopt;
  while (i < text.size() && is_space(text[i])) ++i;
  std::string unit;
  for (; i < text.size(); ++i)
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[i]))));
  for (const auto& u : kSizeUnits) {
    if (unit != u.name) continue;
    if (n > (kMax >> u.shift)) return std::nullopt;
    return n << u.shift;
  }
  return std::nullopt;
}

std::string format_size(std::int64_t bytes) {
  static constexpr std::array<const char*, 5> kNames = {"B", "kB", "MB", "GB", "TB"};
  const bool negative = bytes < 0;
  const double magnitude = negative ? -static_cast<double>(bytes) : static_cast<double>(bytes);
  std::size_t unit = 0;
  double value = magnitude;
  while (value >= 1024.0 && unit + 1 < kNames.size()) {
    value /= 1024.0;
    ++unit;
  }
  char buf[64];
  if (unit == 0 || value == static_cast<double>(static_cast<std::int64_t>(value)))
    std::snprintf(buf, sizeof buf, "%s%.0f %s", negative ? "-" : "", value, kNames[unit]);
  else
    std::snprintf(buf, sizeof buf, "%s%.1f %s", negative ? "-" : "", value, kNames[unit]);
  return buf;
}

std::optional<std::int64_t> read_size_param(YamlMap& params, const std::string& key) {
  if (!params.has(key)) {
    params.raw(key);  // an explicit null is read too
    return std::nullopt;
  }
  const YAML::Node n = params.raw(key);
  const std::string expected = "expected a size such as 16MB, 1GB, 512kB or a number of bytes";
  if (!n.IsScalar()) params.fail(key, expected);
  auto v = parse_size(n.Scalar());
  if (!v) params.fail(key, expected + ", got \"" + n.Scalar() + "\"");
  return v;
}

std::string read_patroni_url(YamlMap& params, const std::string& key, std::string url) {
  if (auto given = params.str(key)) url = *given;
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.empty())
    params.fail(key, "no Patroni REST API URL: patroni_url is not known on this node; set " + key +
                         " (e.g. http://127.0.0.1:8008)");
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
    params.fail(key, "expected an http:// or https:// URL, got \"" + url + "\"");
  return url;
}

// ---- reading Patroni JSON without throwing -----------------------------------------------

const json* patroni_field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::optional<std::string> patroni_str(const json& obj, const char* key) {
  const json* v = patroni_field(obj, key);
  if (!v || !v->is_string()) return std::nullopt;
  return v->get<std::string>();
}

std::optional<std::int64_t> patroni_int(const json& obj, const char* key) {
  const json* v = patroni_field(obj, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) {
    const auto u = v->get<std::uint64_t>();
    return u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
               ? std::numeric_limits<std::int64_t>::max()
               : static_cast<std::int64_t>(u);
  }
  if (v->is_number_integer()) return v->get<std::int64_t>();
  return std::nullopt;
}

bool patroni_flag(const json& obj, const char* key) {
  const json* v = patroni_field(obj, key);
  return v && v->is_boolean() && v->get<bool>();
}

json patroni_copy(const json& obj, const char* key) {
  const json* v = patroni_field(obj, key);
  return v ? *v : json();
}

PatroniLag patroni_member_lag(const json& member) {
  // 4.1+ adds receive_lag/replay_lag next to lag; older 4.x may carry only those.
  for (const char* key : {"lag", "replay_lag", "receive_lag"}) {
    const json* v = patroni_field(member, key);
    if (!v) continue;
    if (v->is_number_integer()) return {PatroniLag::Kind::bytes, *patroni_int(member, key)};
    if (v->is_number_float()) {
      const double d = v->get<double>();
      const double top = static_cast<double>(std::numeric_limits<std::int64_t>::max());
      return {PatroniLag::Kind::bytes, d >= top ? std::numeric_limits<std::int64_t>::max()
                                       : d <= 0 ? 0
                                                : static_cast<std::int64_t>(d)};
    }
    return {PatroniLag::Kind::unknown, 0};  // "unknown", null or anything unreadable
  }
  return {};
}

json to_json(const PatroniLag& lag) {
  switch (lag.kind) {
    case PatroniLag::Kind::absent:
      return nullptr;
    case PatroniLag::Kind::unknown:
      return "unknown";
    case PatroniLag::Kind::bytes:
      return lag.bytes;
  }
  return nullptr;
}

PatroniStateKind classify_patroni_state(std::string_view state) {
  static constexpr std::array<std::string_view, 8> kFailed = {"start failed",
                                                              "crashed",
                                                              "stopped",
                                                              "stop failed",
                                                              "restart failed",
                                                              "initdb failed",
                                                              "custom bootstrap failed",
                                                              "unknown"};
  static constexpr std::array<std::string_view, 7> kTransitional = {
      "starting",
      "restarting",
      "stopping",
      "creating replica",
      "initializing new cluster",
      "running custom bootstrap script",
      "starting after custom bootstrap"};
  // Patroni composes states after a failed action: "restart failed (start failed)".
  if (const auto paren = state.find(" ("); paren != std::string_view::npos && state.back() == ')')
    state = state.substr(0, paren);
  if (state == "running") return PatroniStateKind::running;
  if (std::find(kFailed.begin(), kFailed.end(), state) != kFailed.end())
    return PatroniStateKind::failed;
  if (std::find(kTransitional.begin(), kTransitional.end(), state) != kTransitional.end())
    return PatroniStateKind::transitional;
  return PatroniStateKind::unrecognised;
}

std::string body_excerpt(const std::string& body, std::size_t n) {
  std::string out = snippet(body, n);
  for (char& c : out)
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  return out;
}

std::string describe_unusable_answer(const HttpResult& r, const std::string& url,
                                     const char* expected) {
  if (!r.ok()) return url + " " + r.describe();
  if (r.status != 200 && r.status != 503)
    return url + " answered HTTP " + std::to_string(r.status) + ": '" + body_excerpt(r.body) + "'";
  auto body = parse_json(r.body);
  if (!body) return url + " answered non-JSON: '" + body_excerpt(r.body) + "'";
  if (!body->is_object())
    return url + " answered a JSON " + body->type_name() + ", not " + expected + ": '" +
           body_excerpt(r.body) + "'";
  return url + " answered JSON that is not " + expected + ": '" + body_excerpt(r.body) + "'";
}

void PatroniFindings::add(Status s, std::string text) {
  items_.emplace_back(s, std::move(text));
}

Status PatroniFindings::status() const {
  Status s = Status::passing;
  for (const auto& item : items_) s = worst(s, item.first);
  return s;
}

std::string PatroniFindings::text() const {
  auto sorted = items_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return severity(a.first) > severity(b.first);
  });
  std::string out;
  for (const auto& item : sorted) out += (out.empty() ? "" : "; ") + item.second;
  return out;
}

// ---- judging /patroni --------------------------------------------------------------------

namespace {

bool is_leader_role(std::string_view role) {
  return role == "master" || role == "primary" || role == "standby_leader";
}

// The SQL probe failed: Patroni sent only {state, role} and what it adds to every answer.
bool is_shrunken(const json& body) {
  return !patroni_field(body, "xlog") && !patroni_field(body, "timeline") &&
         !patroni_field(body, "server_version") && !patroni_field(body, "postmaster_start_time");
}

std::optional<json> patroni_document(const HttpResult& r) {
  if (!r.ok() || (r.status != 200 && r.status != 503)) return std::nullopt;
  auto body = parse_json(r.body);
  if (!body || !patroni_str(*body, "state") || !patroni_str(*body, "role")) return std::nullopt;
  return body;
}

// This member's lag as /cluster reports it, or why it is not known.
struct LagLookup {
  PatroniLag lag;
  std::string problem;  // non-empty when the lag could not be read
};

LagLookup lookup_lag(const HttpResult& r, const PatroniNodeParams& p, const std::string& name) {
  const std::string url = p.url + "/cluster";
  std::optional<json> body;
  if (r.ok() && (r.status == 200 || r.status == 503)) body = parse_json(r.body);
  const json* members = body ? patroni_field(*body, "members") : nullptr;
  if (!members || !members->is_array())
    return {{}, describe_unusable_answer(r, url, "a /cluster document")};
  const json* mine = nullptr;
  for (const auto& m : *members) {
    auto n = patroni_str(m, "name");
    if (!name.empty() && n == name) mine = &m;
  }
  if (!mine && name.empty()) {
    // 3.0.x /patroni does not say its own name: recognise ourselves by api_url.
    for (const auto& m : *members) {
      auto api = patroni_str(m, "api_url");
      if (api && (*api == p.url || api->rfind(p.url + "/", 0) == 0)) mine = &m;
    }
  }
  const std::string who = name.empty() ? "this member" : name;
  if (!mine) return {{}, who + " is not listed in " + url};
  PatroniLag lag = patroni_member_lag(*mine);
  if (lag.kind == PatroniLag::Kind::absent)
    return {lag, url + " gives no lag for " + who +
                     " (role there: " + patroni_str(*mine, "role").value_or("none") + ")"};
  return {lag, ""};
}

std::string ms(std::chrono::milliseconds d) {
  return std::to_string(d.count()) + " ms";
}

}  // namespace

bool patroni_node_wants_cluster(const HttpResult& patroni) {
  auto body = patroni_document(patroni);
  return body && patroni_str(*body, "role") == "replica" && !is_shrunken(*body);
}

CheckResult evaluate_patroni_node(const HttpResult& patroni,
                                  const std::optional<HttpResult>& cluster,
                                  const PatroniNodeParams& p) {
  const std::string url = p.url + "/patroni";
  json ev = {{"url", url}};

  // Not being able to ask is a finding of its own, apart from what Patroni would say.
  if (!patroni.ok()) {
    ev["error"] = std::string(to_string(patroni.error));
    switch (patroni.error) {
      case HttpError::refused:
        return CheckResult::make(
            Status::critical,
            "Patroni REST API at " + url + " refused the connection (Patroni not running?)",
            std::move(ev));
      case HttpError::timeout:
        return CheckResult::make(Status::unknown,
                                 "no answer from " + url + " within " + ms(patroni.elapsed),
                                 std::move(ev));
      default:
        ev["error_text"] = body_excerpt(patroni.error_text, 200);
        return CheckResult::make(Status::unknown,
                                 "Patroni REST API at " + url + ": " + patroni.describe(),
                                 std::move(ev));
    }
  }
  ev["http_status"] = patroni.status;
  const auto body = patroni_document(patroni);
  if (!body) {
    ev["body"] = body_excerpt(patroni.body);
    return CheckResult::make(Status::unknown,
                             describe_unusable_answer(patroni, url, "a /patroni document"),
                             std::move(ev));
  }

  const json& b = *body;
  const std::string state = *patroni_str(b, "state");
  const std::string role = *patroni_str(b, "role");
  const json* patroni_info = patroni_field(b, "patroni");
  const json no_info = json::object();
  const json& info = patroni_info ? *patroni_info : no_info;
  // 4.x names itself; 3.0.x does not, so fall back to the configured member name.
  const std::string name = patroni_str(info, "name").value_or(p.member);
  const bool shrunken = is_shrunken(b);
  const bool pending_restart = patroni_flag(b, "pending_restart");
  const bool pause = patroni_flag(b, "pause");

  ev["name"] = name.empty() ? json() : json(name);
  ev["state"] = state;
  // For rules: one word for the family of the state, whatever Patroni version wrote it.
  static constexpr std::array<const char*, 4> kKinds = {"running", "transitional", "failed",
                                                        "unrecognised"};
  ev["state_kind"] = kKinds[static_cast<std::size_t>(classify_patroni_state(state))];
  ev["role"] = role;
  ev["timeline"] = patroni_copy(b, "timeline");
  ev["server_version"] = patroni_copy(b, "server_version");
  ev["patroni_version"] = patroni_copy(info, "version");
  ev["scope"] = patroni_copy(info, "scope");
  ev["pending_restart"] = pending_restart;
  ev["pause"] = pause;
  ev["lag"] = nullptr;
  if (auto rs = patroni_str(b, "replication_state")) ev["replication_state"] = *rs;
  if (patroni_flag(b, "cluster_unlocked")) ev["cluster_unlocked"] = true;
  if (patroni_flag(b, "failsafe_mode_is_active")) ev["failsafe_mode_is_active"] = true;
  if (shrunken) ev["sql_probe_failed"] = true;

  PatroniFindings f;
  switch (classify_patroni_state(state)) {
    case PatroniStateKind::running:
      break;
    case PatroniStateKind::failed:
      f.add(Status::critical, state == "unknown" ? "PostgreSQL state unknown (role " + role +
                                                       "): Patroni's SQL probe got no answer"
                                                 : "PostgreSQL " + state + " (role " + role + ")");
      break;
    case PatroniStateKind::transitional:
      f.add(Status::warning, "PostgreSQL " + state + " (role " + role + ")");
      break;
    case PatroniStateKind::unrecognised:
      f.add(Status::warning,
            "PostgreSQL in unrecognised state \"" + state + "\" (role " + role + ")");
      break;
  }

  if (role == "demoted" || role == "promoted" || role == "uninitialized")
    f.add(Status::warning, "role " + role + " (in transition)");
  else if (!is_leader_role(role) && role != "replica")
    f.add(Status::warning, "unrecognised role \"" + role + "\"");

  std::string lag_text;
  if (role == "replica" && !shrunken) {
    auto rs = patroni_str(b, "replication_state");
    if (rs && *rs != "streaming") f.add(Status::warning, "replica is " + *rs + ", not streaming");
    if (cluster) {
      const LagLookup lk = lookup_lag(*cluster, p, name);
      ev["lag"] = to_json(lk.lag);
      if (!lk.problem.empty()) {
        f.add(Status::warning, "lag not known: " + lk.problem);
      } else if (lk.lag.kind == PatroniLag::Kind::unknown) {
        f.add(Status::warning, "replication lag unknown (the DCS holds no WAL position for it)");
      } else {
        lag_text = format_size(lk.lag.bytes);
        if (lk.lag.bytes > p.lag_critical)
          f.add(Status::critical,
                "replication lag " + lag_text + " over " + format_size(p.lag_critical));
        else if (lk.lag.bytes > p.lag_warning)
          f.add(Status::warning,
                "replication lag " + lag_text + " over " + format_size(p.lag_warning));
      }
    }
  }
  if (pending_restart) f.add(Status::warning, "pending restart");
  if (pause) f.add(Status::warning, "cluster is paused (maintenance mode)");

  const std::string who = (name.empty() ? url : name) + ": ";
  if (!f.empty()) return CheckResult::make(f.status(), who + f.text(), std::move(ev));

  std::string msg = who + "PostgreSQL running as " + role;
  if (auto tl = patroni_int(b, "timeline")) msg += " on timeline " + std::to_string(*tl);
  if (!lag_text.empty()) msg += ", lag " + lag_text;
  if (is_leader_role(role)) {
    const json* repl = patroni_field(b, "replication");
    const std::size_t n = repl && repl->is_array() ? repl->size() : 0;
    msg += ", " + std::to_string(n) +
           (n == 1 ? " replication connection" : " replication connections");
  }
  return CheckResult::make(Status::passing, msg, std::move(ev));
}

// ---- the check ---------------------------------------------------------------------------

namespace {

class PatroniNodeCheck final : public Check {
 public:
  PatroniNodeCheck(PatroniNodeParams p, TlsSettings tls) : p_(std::move(p)), tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    // Requests are named locals: GCC 12 destroys temporaries inside co_await twice.
    HttpRequest patroni_req = tls_request(tls_, p_.url + "/patroni", ctx.timeout);
    HttpResult patroni = co_await ctx.http.fetch(std::move(patroni_req));
    std::optional<HttpResult> cluster;
    if (patroni_node_wants_cluster(patroni)) {
      const auto spent =
          std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - start);
      const Duration left = std::max(ctx.timeout - spent, Duration{100});
      HttpRequest cluster_req = tls_request(tls_, p_.url + "/cluster", left);
      cluster = co_await ctx.http.fetch(std::move(cluster_req));
    }
    try {
      co_return evaluate_patroni_node(patroni, cluster, p_);
    } catch (const std::exception& e) {
      // The evaluator reads defensively; this only keeps a surprise from killing the loop.
      co_return CheckResult::make(Status::unknown,
                                  "could not judge " + p_.url + "/patroni: " + e.what());
    }
  }

 private:
  PatroniNodeParams p_;
  TlsSettings tls_;
};

}  // namespace

std::unique_ptr<Check> make_patroni_node_check(YamlMap& params, const Config& config) {
  PatroniNodeParams p;
  const bool url_given = params.has("url");
  p.url = read_patroni_url(params, "url", config.patroni_url);
  // The configured node name only describes the node at patroni_url, not an overridden url.
  p.member = params.str("member").value_or(url_given ? "" : config.node_name);
  p.lag_warning = read_size_param(params, "lag_warning").value_or(kDefaultLagWarning);
  p.lag_critical = read_size_param(params, "lag_critical").value_or(kDefaultLagCritical);
  if (p.lag_warning > p.lag_critical)
    params.fail("lag_warning", "lag_warning (" + format_size(p.lag_warning) +
                                   ") must not exceed lag_critical (" +
                                   format_size(p.lag_critical) + ")");
  return std::make_unique<PatroniNodeCheck>(std::move(p), config.patroni_tls);
}

}  // namespace fener
