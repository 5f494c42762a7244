#include "checks/etcd_members.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <map>
#include <utility>

#include "checks/etcd_health.hpp"
#include "src/cluster_http.hpp"
#include "src/join.hpp"

namespace fener {

namespace {

// Member lists of a handful of members are a few KiB.
constexpr std::size_t kMaxMembersBody = 256 * 1024;
constexpr int kClientPort = 2379;
constexpr int kPeerPort = 2380;

bool is_http_url(const std::string& s) {
  return (s.rfind("http://", 0) == 0 && s.size() > 7) ||
         (s.rfind("https://", 0) == 0 && s.size() > 8);
}

int default_port(const std::string& url) {
  return url.rfind("https://", 0) == 0 ? 443 : 80;
}

std::string quoted_snippet(const std::string& body) {
  if (body.empty()) return "an empty body";
  return "\"" + snippet(body, 60) + "\"";
}

std::vector<std::string> url_set(const std::vector<std::string>& urls) {
  std::vector<std::string> out;
  for (const auto& u : urls) out.push_back(etcd_trim_url(u));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

bool overlap(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (const auto& x : a) {
    for (const auto& y : b) {
      if (etcd_trim_url(x) == etcd_trim_url(y)) return true;
    }
  }
  return false;
}

std::optional<std::string> read_id(const json& v) {
  if (v.is_string() && !v.get<std::string>().empty()) return v.get<std::string>();
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
    return std::to_string(v.get<std::int64_t>());
  }
  return std::nullopt;
}

// v3 IDs are uint64, as decimal strings (the gateway's int64 form) or JSON numbers.
std::optional<std::uint64_t> read_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
    return static_cast<std::uint64_t>(v.get<std::int64_t>());
  }
  if (!v.is_string()) return std::nullopt;
  const auto& s = v.get_ref<const std::string&>();
  std::uint64_t out = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return out;
}

// Absent or null reads as empty: the v3 gateway omits empty fields.
bool read_string_list(const json& obj, const char* key, std::vector<std::string>& out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return true;
  if (!it->is_array()) return false;
  for (const auto& v : *it) {
    if (!v.is_string()) return false;
    out.push_back(v.get<std::string>());
  }
  return true;
}

EtcdMemberList parse_members(const HttpResult& r, const char* id_key, bool v3) {
  EtcdMemberList out;
  auto fail = [&](std::string why) {
    out.ok = false;
    out.members.clear();
    out.problem = std::move(why);
    return out;
  };
  if (!r.ok()) return fail(r.describe());
  const std::string http = "HTTP " + std::to_string(r.status);
  if (r.status != 200) return fail(http + ": " + quoted_snippet(r.body));
  auto doc = parse_json(r.body);
  if (!doc) return fail(http + ", not JSON: " + quoted_snippet(r.body));
  if (!doc->is_object()) return fail(http + ", not a member list: " + quoted_snippet(r.body));
  auto ms = doc->find("members");
  if (ms == doc->end() || !ms->is_array()) {
    return fail(http + ", no \"members\" list: " + quoted_snippet(r.body));
  }
  if (ms->empty()) return fail(http + ", an empty member list");
  for (const auto& m : *ms) {
    const std::string bad = http + ", malformed member: " + snippet(m.dump(), 60);
    if (!m.is_object()) return fail(bad);
    EtcdMemberInfo info;
    auto id = m.find(id_key);
    if (id == m.end()) return fail(bad);
    auto id_text = read_id(*id);
    if (!id_text) return fail(bad);
    info.id = *id_text;
    if (auto name = m.find("name"); name != m.end() && !name->is_null()) {
      if (!name->is_string()) return fail(bad);
      info.name = name->get<std::string>();
    }
    if (!read_string_list(m, "peerURLs", info.peer_urls)) return fail(bad);
    if (!read_string_list(m, "clientURLs", info.client_urls)) return fail(bad);
    if (auto l = m.find("isLearner"); v3 && l != m.end() && !l->is_null()) {
      if (!l->is_boolean()) return fail(bad);
      info.learner = l->get<bool>();
    }
    out.members.push_back(std::move(info));
  }
  out.ok = true;
  return out;
}

EtcdLeader leader_unknown(std::string detail) {
  EtcdLeader l;
  l.state = EtcdLeader::State::unknown;
  l.detail = std::move(detail);
  return l;
}

EtcdLeader leader_none(std::string detail) {
  EtcdLeader l;
  l.state = EtcdLeader::State::none;
  l.detail = std::move(detail);
  return l;
}

std::string member_label(const EtcdMemberInfo& m) {
  if (!m.name.empty()) return m.name;
  return "unnamed member " + (m.peer_urls.empty() ? "id " + m.id : m.peer_urls.front());
}

std::string peers_suffix(const std::vector<std::string>& peers) {
  return peers.empty() ? "" : " (peer " + join(peers) + ")";
}

json member_json(const EtcdMemberInfo& m) {
  return {{"id", m.id},
          {"name", m.name},
          {"peer_urls", m.peer_urls},
          {"client_urls", m.client_urls},
          {"is_learner", m.learner}};
}

std::string_view leader_state_name(EtcdLeader::State s) {
  switch (s) {
    case EtcdLeader::State::known:
      return "known";
    case EtcdLeader::State::none:
      return "none";
    case EtcdLeader::State::unknown:
      return "unknown";
  }
  return "unknown";
}

class EtcdMembersCheck final : public Check {
 public:
  EtcdMembersCheck(std::vector<std::string> endpoints, std::vector<EtcdMember> expected,
                   bool patroni_needs_v2, TlsSettings tls)
      : endpoints_(std::move(endpoints)),
        expected_(std::move(expected)),
        patroni_needs_v2_(patroni_needs_v2),
        tls_(std::move(tls)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    // All endpoints at once: one slow member costs one timeout, not one per member.
    std::vector<HttpRequest> reqs;
    for (const auto& e : endpoints_) {
      reqs.push_back(get(e + "/v2/members", ctx.timeout));
      reqs.push_back(get(e + "/v2/members/leader", ctx.timeout));
    }
    for (auto& r : reqs) r.tls = tls_;
    auto v2 = co_await fetch_all(ctx.http, std::move(reqs));

    std::vector<EtcdMembersAnswer> answers(endpoints_.size());
    std::vector<std::size_t> fallback;  // v2 disabled before the first usable v2 answer
    bool usable_seen = false;
    for (std::size_t i = 0; i < endpoints_.size(); ++i) {
      answers[i].endpoint = endpoints_[i];
      answers[i].v2_members = std::move(v2[2 * i]);
      answers[i].v2_leader = std::move(v2[2 * i + 1]);
      if (usable_seen) continue;
      if (parse_etcd_v2_members(answers[i].v2_members).ok) {
        usable_seen = true;
      } else if (etcd_v2_disabled(answers[i].v2_members)) {
        fallback.push_back(i);
      }
    }

    const auto left = ctx.timeout - std::chrono::duration_cast<Duration>(
                                        std::chrono::steady_clock::now() - start);
    if (!fallback.empty() && left > Duration{0}) {
      std::vector<HttpRequest> v3reqs;
      for (auto i : fallback) {
        v3reqs.push_back(post(endpoints_[i] + "/v3/cluster/member/list", left));
        v3reqs.push_back(post(endpoints_[i] + "/v3/maintenance/status", left));
      }
      for (auto& r : v3reqs) r.tls = tls_;
      auto v3 = co_await fetch_all(ctx.http, std::move(v3reqs));
      for (std::size_t k = 0; k < fallback.size(); ++k) {
        answers[fallback[k]].v3_members = std::move(v3[2 * k]);
        answers[fallback[k]].v3_status = std::move(v3[2 * k + 1]);
      }
    }
    co_return judge_etcd_members(answers, expected_, patroni_needs_v2_);
  }

 private:
  static HttpRequest get(std::string url, Duration timeout) {
    HttpRequest req;
    req.url = std::move(url);
    req.timeout = timeout;
    req.max_body = kMaxMembersBody;
    return req;
  }
  static HttpRequest post(std::string url, Duration timeout) {
    HttpRequest req = get(std::move(url), timeout);
    req.method = "POST";
    req.body = "{}";
    req.headers = {"Content-Type: application/json"};
    return req;
  }

  std::vector<std::string> endpoints_;
  std::vector<EtcdMember> expected_;
  bool patroni_needs_v2_;
  TlsSettings tls_;
};

}  // namespace

EtcdMemberList parse_etcd_v2_members(const HttpResult& r) {
  return parse_members(r, "id", false);
}

EtcdMemberList parse_etcd_v3_members(const HttpResult& r) {
  return parse_members(r, "ID", true);
}

bool etcd_v2_disabled(const HttpResult& v2_members) {
  return v2_members.ok() && v2_members.status == 404;
}

EtcdLeader parse_etcd_v2_leader(const HttpResult& r) {
  if (!r.ok()) return leader_unknown("/v2/members/leader: " + r.describe());
  auto doc = parse_json(r.body);
  const std::string http = "HTTP " + std::to_string(r.status);
  if (r.status == 503) {
    // etcd answers 503 {"message":"During election"} while no member leads.
    std::string why = http;
    if (doc && doc->is_object()) {
      if (auto m = doc->find("message"); m != doc->end() && m->is_string()) {
        why += " (" + snippet(m->get<std::string>(), 60) + ")";
      }
    }
    return leader_none("/v2/members/leader answered " + why);
  }
  if (r.status != 200) {
    return leader_unknown("/v2/members/leader answered " + http + ": " + quoted_snippet(r.body));
  }
  if (!doc || !doc->is_object()) {
    return leader_unknown("/v2/members/leader answered " + http +
                          ", not a member: " + quoted_snippet(r.body));
  }
  auto id = doc->find("id");
  std::optional<std::string> id_text;
  if (id != doc->end()) id_text = read_id(*id);
  if (!id_text) {
    return leader_unknown("/v2/members/leader answered " + http +
                          ", not a member: " + quoted_snippet(r.body));
  }
  EtcdLeader l;
  l.state = EtcdLeader::State::known;
  l.id = *id_text;
  if (auto n = doc->find("name"); n != doc->end() && n->is_string()) l.name = n->get<std::string>();
  return l;
}

EtcdLeader parse_etcd_v3_status(const HttpResult& r, const std::vector<EtcdMemberInfo>& members) {
  if (!r.ok()) return leader_unknown("/v3/maintenance/status: " + r.describe());
  const std::string http = "HTTP " + std::to_string(r.status);
  if (r.status != 200) {
    return leader_unknown("/v3/maintenance/status answered " + http + ": " +
                          quoted_snippet(r.body));
  }
  auto doc = parse_json(r.body);
  if (!doc || !doc->is_object()) {
    return leader_unknown("/v3/maintenance/status answered " + http +
                          ", not a status: " + quoted_snippet(r.body));
  }
  // The gateway omits zero values: no "leader" field means leader 0, none.
  auto it = doc->find("leader");
  if (it == doc->end() || it->is_null()) {
    return leader_none("/v3/maintenance/status names no leader");
  }
  auto id = read_u64(*it);
  if (!id) {
    return leader_unknown("/v3/maintenance/status \"leader\" is " + snippet(it->dump(), 40));
  }
  if (*id == 0) return leader_none("/v3/maintenance/status reports leader 0");
  EtcdLeader l;
  l.state = EtcdLeader::State::known;
  l.id = std::to_string(*id);
  for (const auto& m : members) {
    if (auto mid = read_u64(json(m.id)); mid && *mid == *id) l.name = m.name;
  }
  return l;
}

std::vector<EtcdFinding> compare_etcd_members(const std::vector<EtcdMemberInfo>& actual,
                                              const std::vector<EtcdMember>& expected) {
  std::vector<EtcdFinding> out;
  auto warn = [&](std::string m) { out.push_back({Status::warning, std::move(m)}); };
  auto crit = [&](std::string m) { out.push_back({Status::critical, std::move(m)}); };

  // Pair expected with actual members: name and peer URL together first, then the peer
  // URL alone (it says which machine; a wrong ETCD_NAME still shows), then the name alone.
  std::vector<int> exp_of(actual.size(), -1);
  std::vector<int> act_of(expected.size(), -1);
  auto pair_up = [&](auto&& fits) {
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (act_of[i] >= 0) continue;
      for (std::size_t j = 0; j < actual.size(); ++j) {
        if (exp_of[j] >= 0 || !fits(expected[i], actual[j])) continue;
        act_of[i] = static_cast<int>(j);
        exp_of[j] = static_cast<int>(i);
        break;
      }
    }
  };
  auto same_name = [](const EtcdMember& e, const EtcdMemberInfo& a) {
    return !a.name.empty() && a.name == e.name;
  };
  pair_up([&](const EtcdMember& e, const EtcdMemberInfo& a) {
    return same_name(e, a) && (e.peer_urls.empty() || overlap(e.peer_urls, a.peer_urls));
  });
  pair_up([&](const EtcdMember& e, const EtcdMemberInfo& a) {
    return overlap(e.peer_urls, a.peer_urls);
  });
  pair_up(same_name);

  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (act_of[i] < 0) {
      crit("expected etcd member " + expected[i].name + peers_suffix(expected[i].peer_urls) +
           " is missing from the member list");
    }
  }

  for (std::size_t j = 0; j < actual.size(); ++j) {
    const auto& a = actual[j];
    const std::string label = member_label(a);
    if (exp_of[j] < 0) {
      if (!expected.empty()) {
        warn("unexpected etcd member " + label +
             peers_suffix(a.name.empty() ? std::vector<std::string>{} : a.peer_urls) +
             (a.name.empty() ? ", added but not started yet" : ""));
      } else if (a.name.empty()) {
        warn("etcd " + label + " has an empty name: added but not started yet");
      }
    } else {
      const auto& e = expected[static_cast<std::size_t>(exp_of[j])];
      if (a.name.empty()) {
        warn("etcd member " + e.name + peers_suffix(a.peer_urls) +
             " is added but not started yet (empty name)");
      } else if (a.name != e.name) {
        warn("etcd member" + peers_suffix(a.peer_urls) + " is named \"" + a.name +
             "\", expected \"" + e.name + "\" (ETCD_NAME must match ETCD_INITIAL_CLUSTER)");
      }
      if (!e.peer_urls.empty() && url_set(a.peer_urls) != url_set(e.peer_urls)) {
        crit("etcd member " + e.name + " peer URLs [" + join(a.peer_urls) +
             "] differ from the expected [" + join(e.peer_urls) + "]");
      }
      if (!a.client_urls.empty() && !e.client_urls.empty() &&
          url_set(a.client_urls) != url_set(e.client_urls)) {
        warn("etcd member " + e.name + " client URLs [" + join(a.client_urls) +
             "] differ from the expected [" + join(e.client_urls) + "]");
      }
    }
    if (!a.name.empty() && a.client_urls.empty()) {
      warn("etcd member " + label + " advertises no client URLs");
    }
    for (const auto& u : a.peer_urls) {
      if (is_http_url(u) && port_of(u, default_port(u)) != kPeerPort) {
        warn("etcd member " + label + " peer URL " + u +
             " is not on port 2380; the guide expects 2380 for peers, 2379 for clients");
      }
    }
    for (const auto& u : a.client_urls) {
      if (is_http_url(u) && port_of(u, default_port(u)) != kClientPort) {
        warn("etcd member " + label + " client URL " + u +
             " is not on port 2379; the guide expects 2379 for clients, 2380 for peers");
      }
    }
    if (a.learner) warn("etcd member " + label + " is a learner (non-voting)");
  }

  std::map<std::string, int> names;
  for (const auto& a : actual) {
    if (!a.name.empty()) ++names[a.name];
  }
  for (const auto& [name, count] : names) {
    if (count > 1) {
      warn(std::to_string(count) + " etcd members are named \"" + name +
           "\"; ETCD_NAME must differ on every member");
    }
  }
  return out;
}

CheckResult judge_etcd_members(const std::vector<EtcdMembersAnswer>& answers,
                               const std::vector<EtcdMember>& expected, bool patroni_needs_v2) {
  auto label = [&](const std::string& endpoint) {
    return etcd_member_label(etcd_member_name(endpoint, expected), endpoint);
  };

  const EtcdMembersAnswer* chosen = nullptr;
  EtcdMemberList list;
  std::string api;
  json attempts = json::array();
  std::vector<std::string> v2_off;
  std::vector<std::string> tried;  // "label: problem", for the unknown message
  for (const auto& a : answers) {
    const bool off = etcd_v2_disabled(a.v2_members);
    if (off) v2_off.push_back(a.endpoint);
    if (chosen != nullptr) continue;
    auto v2 = parse_etcd_v2_members(a.v2_members);
    if (v2.ok) {
      chosen = &a;
      list = std::move(v2);
      api = "v2";
      continue;
    }
    std::string problem = v2.problem;
    if (off) {
      problem = "v2 API disabled (HTTP 404)";
      if (!a.v3_members) {
        problem += ", v3 gateway not asked";
      } else {
        auto v3 = parse_etcd_v3_members(*a.v3_members);
        if (v3.ok) {
          chosen = &a;
          list = std::move(v3);
          api = "v3";
          continue;
        }
        problem += ", v3: " + v3.problem;
      }
    }
    attempts.push_back({{"endpoint", a.endpoint}, {"problem", problem}});
    tried.push_back(label(a.endpoint) + ": " + problem);
  }

  std::vector<EtcdFinding> findings;
  EtcdLeader leader;
  if (chosen != nullptr) {
    if (api == "v2") {
      leader = parse_etcd_v2_leader(chosen->v2_leader);
    } else if (chosen->v3_status) {
      leader = parse_etcd_v3_status(*chosen->v3_status, list.members);
    } else {
      leader = leader_unknown("/v3/maintenance/status not asked");
    }
    findings = compare_etcd_members(list.members, expected);
    if (leader.state == EtcdLeader::State::none) {
      findings.push_back({Status::critical, "no etcd leader according to " +
                                                label(chosen->endpoint) + ": " + leader.detail});
    } else if (leader.state == EtcdLeader::State::unknown) {
      findings.push_back({Status::unknown, "etcd leader could not be read from " +
                                               label(chosen->endpoint) + ": " + leader.detail});
    }
  } else if (answers.empty()) {
    findings.push_back({Status::unknown, "no etcd endpoints to ask for the member list"});
  } else {
    findings.push_back(
        {Status::unknown, "no etcd endpoint gave its member list: " + join(tried, "; ")});
  }
  if (patroni_needs_v2 && !v2_off.empty()) {
    std::vector<std::string> labels;
    for (const auto& e : v2_off) labels.push_back(label(e));
    findings.push_back(
        {Status::critical, "v2 API disabled on " + join(labels) +
                               " but Patroni's etcd: section needs it; start etcd with "
                               "--enable-v2=true / ETCD_ENABLE_V2=\"true\""});
  }
  std::stable_sort(findings.begin(), findings.end(), [](const auto& x, const auto& y) {
    return severity(x.status) > severity(y.status);
  });

  json evidence = {{"api", api.empty() ? json(nullptr) : json(api)},
                   {"endpoint", chosen ? json(chosen->endpoint) : json(nullptr)},
                   {"members", json::array()},
                   {"leader", nullptr},
                   {"findings", json::array()},
                   {"v2_disabled", v2_off},
                   {"v2_needed", patroni_needs_v2},
                   {"attempts", attempts}};
  for (const auto& m : list.members) evidence["members"].push_back(member_json(m));
  if (chosen != nullptr) {
    evidence["leader"] = {{"state", leader_state_name(leader.state)},
                          {"id", leader.id},
                          {"name", leader.name},
                          {"detail", leader.detail}};
  }
  for (const auto& f : findings) {
    evidence["findings"].push_back({{"status", to_string(f.status)}, {"message", f.message}});
  }

  if (findings.empty()) {
    std::vector<std::string> names;
    for (const auto& m : list.members) names.push_back(member_label(m));
    const std::string who = std::to_string(list.members.size()) + " etcd members";
    const std::string lead = ", leader " + (leader.name.empty() ? leader.id : leader.name);
    if (expected.empty()) {
      return CheckResult::make(
          Status::passing,
          who + " (" + join(names) + ")" + lead + "; no expected membership to compare with",
          evidence);
    }
    return CheckResult::make(Status::passing, who + " as expected (" + join(names) + ")" + lead,
                             evidence);
  }
  std::string message = findings.front().message;
  if (findings.size() > 1) message += " (+" + std::to_string(findings.size() - 1) + " more)";
  return CheckResult::make(findings.front().status, std::move(message), evidence);
}

std::unique_ptr<Check> make_etcd_members_check(YamlMap& params, const Config& config) {
  auto endpoints = read_etcd_endpoints(params, config);
  std::vector<EtcdMember> expected = config.etcd_members;
  if (auto items = params.map_list("expect")) {
    expected.clear();
    for (auto& item : *items) {
      EtcdMember m;
      auto name = item.str("name");
      if (!name || name->empty()) item.fail("name", "expected the member's name (its ETCD_NAME)");
      m.name = *name;
      for (const char* key : {"peer_urls", "client_urls"}) {
        auto urls = item.str_list(key, true).value_or(std::vector<std::string>{});
        for (const auto& u : urls) {
          if (!is_http_url(u)) {
            item.fail(key, "\"" + u + "\" is not an http(s) URL; expected e.g. " +
                               (std::string(key) == "peer_urls" ? "http://10.0.0.1:2380"
                                                                : "http://10.0.0.1:2379"));
          }
        }
        (std::string(key) == "peer_urls" ? m.peer_urls : m.client_urls) = std::move(urls);
      }
      item.finish();
      for (const auto& other : expected) {
        if (other.name == m.name) item.fail("name", "member \"" + m.name + "\" is listed twice");
      }
      expected.push_back(std::move(m));
    }
  }
  return std::make_unique<EtcdMembersCheck>(std::move(endpoints), std::move(expected),
                                            config.patroni_dcs == "etcd", config.etcd_tls);
}

}  // namespace fener
