#include "checks/etcd_health.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "src/cluster_http.hpp"

namespace fener {

namespace {

// /health answers are a few dozen bytes; anything large is not etcd.
constexpr std::size_t kMaxHealthBody = 64 * 1024;

int default_port(const std::string& url) {
  return url.rfind("https://", 0) == 0 ? 443 : 80;
}

bool is_http_url(const std::string& s) {
  for (const char* scheme : {"http://", "https://"}) {
    const std::string p = scheme;
    if (s.size() > p.size() && s.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

std::string quoted_snippet(const std::string& body) {
  if (body.empty()) return "an empty body";
  return "\"" + snippet(body, 60) + "\"";
}

// For messages: the evidence word, except that garbage reads better as a phrase.
std::string_view state_phrase(EtcdMemberState s) {
  return s == EtcdMemberState::garbage ? "answered garbage" : to_string(s);
}

json member_evidence(const EtcdMemberHealth& m) {
  json e = {{"endpoint", m.endpoint},
            {"state", to_string(m.state)},
            {"reason", m.reason},
            {"http_status", m.http_status == 0 ? json(nullptr) : json(m.http_status)},
            {"elapsed_ms", m.elapsed.count()}};
  if (!m.name.empty()) e["name"] = m.name;
  return e;
}

class EtcdHealthCheck final : public Check {
 public:
  EtcdHealthCheck(std::vector<std::string> endpoints, std::vector<EtcdMember> members,
                  TlsSettings tls)
      : endpoints_(std::move(endpoints)), members_(std::move(members)), tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    std::vector<HttpRequest> reqs;
    reqs.reserve(endpoints_.size());
    for (const auto& e : endpoints_) {
      HttpRequest req = tls_request(tls_, e + "/health", ctx.timeout);
      req.max_body = kMaxHealthBody;
      reqs.push_back(std::move(req));
    }
    auto results = co_await fetch_all(ctx.http, std::move(reqs));
    co_return evaluate_etcd_health(endpoints_, results, members_);
  }

 private:
  std::vector<std::string> endpoints_;
  std::vector<EtcdMember> members_;
  TlsSettings tls_;
};

}  // namespace

std::string_view to_string(EtcdMemberState s) {
  switch (s) {
    case EtcdMemberState::healthy:
      return "healthy";
    case EtcdMemberState::unhealthy:
      return "unhealthy";
    case EtcdMemberState::down:
      return "down";
    case EtcdMemberState::unreachable:
      return "unreachable";
    case EtcdMemberState::garbage:
      return "garbage";
  }
  return "unreachable";
}

std::string etcd_trim_url(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

std::string etcd_member_name(const std::string& endpoint, const std::vector<EtcdMember>& members) {
  const std::string e = etcd_trim_url(endpoint);
  for (const auto& m : members) {
    for (const auto& u : m.client_urls) {
      if (etcd_trim_url(u) == e) return m.name;
    }
  }
  const std::string host = host_of(e);
  if (host.empty()) return "";
  const int port = port_of(e, default_port(e));
  for (const auto& m : members) {
    for (const auto& u : m.client_urls) {
      if (host_of(u) == host && port_of(u, default_port(u)) == port) return m.name;
    }
  }
  // Host alone is only good enough when exactly one member lives there.
  const EtcdMember* found = nullptr;
  for (const auto& m : members) {
    // Peer URLs count too: the env file names every member's peer URL, but only its own
    // client URL.
    auto on_host = [&](const std::string& u) { return host_of(u) == host; };
    bool here = std::any_of(m.client_urls.begin(), m.client_urls.end(), on_host) ||
                std::any_of(m.peer_urls.begin(), m.peer_urls.end(), on_host);
    if (!here) continue;
    if (found != nullptr) return "";
    found = &m;
  }
  return found != nullptr ? found->name : "";
}

std::string etcd_member_label(const std::string& name, const std::string& endpoint) {
  return name.empty() ? endpoint : name + " (" + endpoint + ")";
}

EtcdMemberHealth classify_etcd_health(const std::string& endpoint, const HttpResult& r,
                                      const std::vector<EtcdMember>& members) {
  EtcdMemberHealth m;
  m.endpoint = endpoint;
  m.name = etcd_member_name(endpoint, members);
  m.elapsed = r.elapsed;
  if (!r.ok()) {
    // Refused is a definite "nothing runs there"; anything else means we could not tell.
    m.state = r.error == HttpError::refused     ? EtcdMemberState::down
              : r.error == HttpError::too_large ? EtcdMemberState::garbage
                                                : EtcdMemberState::unreachable;
    m.reason = r.describe();
    return m;
  }
  m.http_status = r.status;
  const std::string http = "HTTP " + std::to_string(r.status);
  auto garbage = [&](std::string why) {
    m.state = EtcdMemberState::garbage;
    m.reason = http + ", " + std::move(why);
    return m;
  };
  auto doc = parse_json(r.body);
  if (!doc) return garbage("not JSON: " + quoted_snippet(r.body));
  if (!doc->is_object()) return garbage("not an etcd health answer: " + quoted_snippet(r.body));
  auto h = doc->find("health");
  if (h == doc->end()) return garbage("no \"health\" field: " + quoted_snippet(r.body));
  std::optional<bool> says_healthy;
  if (h->is_string() && *h == "true") says_healthy = true;
  if (h->is_string() && *h == "false") says_healthy = false;
  if (h->is_boolean()) says_healthy = h->get<bool>();
  if (!says_healthy) return garbage("\"health\" is " + snippet(h->dump(), 40));

  if (*says_healthy && r.status == 200) {
    m.state = EtcdMemberState::healthy;
    return m;
  }
  m.state = EtcdMemberState::unhealthy;
  std::string reason;
  if (auto it = doc->find("reason"); it != doc->end() && it->is_string()) {
    reason = it->get<std::string>();
  }
  if (!reason.empty()) {
    m.reason = snippet(reason, 120) + " (" + http + ")";
  } else if (*says_healthy) {
    m.reason = http + " although \"health\" is true";
  } else {
    m.reason = "\"health\":\"false\" (" + http + ")";
  }
  return m;
}

CheckResult judge_etcd_health(const std::vector<EtcdMemberHealth>& members) {
  json evidence = {{"members", json::array()}};
  for (const auto& m : members) evidence["members"].push_back(member_evidence(m));
  const int n = static_cast<int>(members.size());
  if (n == 0) return CheckResult::make(Status::unknown, "no etcd endpoints to check", evidence);

  const int quorum = etcd_quorum(n);
  int healthy = 0;
  int unsure = 0;  // could not be checked: might be healthy
  std::string problems;
  std::string healthy_names;
  for (const auto& m : members) {
    const std::string label = etcd_member_label(m.name, m.endpoint);
    if (m.state == EtcdMemberState::healthy) {
      ++healthy;
      healthy_names += (healthy_names.empty() ? "" : ", ") + (m.name.empty() ? m.endpoint : m.name);
      continue;
    }
    if (m.state == EtcdMemberState::unreachable || m.state == EtcdMemberState::garbage) ++unsure;
    problems += "; " + label + " " + std::string(state_phrase(m.state)) + ": " + m.reason;
  }
  evidence["healthy"] = healthy;
  evidence["quorum"] = quorum;
  evidence["total"] = n;
  evidence["unchecked"] = unsure;

  const std::string count =
      std::to_string(healthy) + "/" + std::to_string(n) + " etcd members healthy";
  const std::string q = std::to_string(quorum);
  if (healthy == n) {
    return CheckResult::make(Status::passing, count + " (" + healthy_names + ")", evidence);
  }
  if (healthy >= quorum) {
    return CheckResult::make(Status::warning, count + ", quorum kept" + problems, evidence);
  }
  if (healthy + unsure < quorum) {
    return CheckResult::make(Status::critical, count + ", quorum of " + q + " lost" + problems,
                             evidence);
  }
  return CheckResult::make(Status::unknown,
                           count + ", quorum of " + q + " may be lost: " + std::to_string(unsure) +
                               " could not be checked" + problems,
                           evidence);
}

CheckResult evaluate_etcd_health(const std::vector<std::string>& endpoints,
                                 const std::vector<HttpResult>& results,
                                 const std::vector<EtcdMember>& members) {
  std::vector<EtcdMemberHealth> classified;
  classified.reserve(endpoints.size());
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    if (i < results.size()) {
      classified.push_back(classify_etcd_health(endpoints[i], results[i], members));
    } else {
      EtcdMemberHealth m;
      m.endpoint = endpoints[i];
      m.name = etcd_member_name(endpoints[i], members);
      m.reason = "no answer recorded";
      classified.push_back(std::move(m));
    }
  }
  return judge_etcd_health(classified);
}

std::vector<std::string> read_etcd_endpoints(YamlMap& params, const Config& config) {
  std::vector<std::string> out;
  if (auto list = params.str_list("endpoints", true)) {
    if (list->empty()) {
      params.fail("endpoints", "expected at least one etcd client URL, e.g. http://10.0.0.1:2379");
    }
    for (const auto& u : *list) {
      if (!is_http_url(u)) {
        params.fail("endpoints",
                    "\"" + u + "\" is not an http(s) URL; expected e.g. http://10.0.0.1:2379");
      }
      std::string t = etcd_trim_url(u);
      if (std::find(out.begin(), out.end(), t) != out.end()) {
        params.fail("endpoints", "lists " + t + " twice; each member counts once for quorum");
      }
      out.push_back(std::move(t));
    }
    return out;
  }
  for (const auto& u : config.etcd_endpoints) {
    std::string t = etcd_trim_url(u);
    if (!t.empty() && std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  if (out.empty()) {
    params.fail_here(
        "no etcd endpoints known (none configured or discovered); list them under "
        "`endpoints:`, e.g. [http://10.0.0.1:2379]");
  }
  return out;
}

std::unique_ptr<Check> make_etcd_health_check(YamlMap& params, const Config& config) {
  return std::make_unique<EtcdHealthCheck>(read_etcd_endpoints(params, config), config.etcd_members,
                                           config.etcd_tls);
}

}  // namespace fener
