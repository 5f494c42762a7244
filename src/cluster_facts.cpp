#include "src/cluster_facts.hpp"
#include "src/cluster_http.hpp"

#include "src/config.hpp"
#include "src/guards.hpp"
#include "src/http_client.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

// GCC 12 at -O2 pairs Asio's coroutine-frame operator new/delete wrongly after inlining
// the `&&` of two coroutines and warns; the frames are allocated and freed by one class.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace fener {

using namespace asio::experimental::awaitable_operators;

namespace {

std::optional<json> value_json(const json& node) {
  if (!node.contains("value") || !node["value"].is_string()) return std::nullopt;
  return parse_json(node["value"].get<std::string>());
}

std::optional<std::string> str_field(const json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return std::nullopt;
}

void walk(const json& node, const std::string& prefix, ClusterFacts& f) {
  if (!node.is_object()) return;
  const std::string key = str_field(node, "key").value_or("");
  const std::string rel = key.rfind(prefix, 0) == 0 ? key.substr(prefix.size()) : key;
  if (node.contains("nodes") && node["nodes"].is_array()) {
    for (const auto& child : node["nodes"]) walk(child, prefix, f);
    return;
  }
  const json value = node.contains("value") ? node["value"] : json();
  if (rel == "leader" && value.is_string()) {
    f.leader_name = value.get<std::string>();
  } else if (rel == "initialize" && value.is_string()) {
    f.cluster_sysid = value.get<std::string>();
  } else if (rel == "config") {
    auto c = value_json(node);
    f.paused = c && c->is_object() && c->contains("pause") && (*c)["pause"].is_boolean() &&
               (*c)["pause"].get<bool>();
  } else if (rel.rfind("members/", 0) == 0) {
    auto m = value_json(node);
    if (m && m->is_object()) f.evidence["members"][rel.substr(8)] = *m;
  }
}

}  // namespace

void read_dcs_tree(const json& answer, ClusterFacts& f) {
  if (!answer.is_object() || !answer.contains("node")) return;
  const json& root = answer["node"];
  std::string prefix = str_field(root, "key").value_or("");
  if (!prefix.empty() && prefix.back() != '/') prefix += '/';
  walk(root, prefix, f);
  // The config key may be absent on a fresh cluster: not paused then.
  if (!f.paused && f.cluster_sysid) f.paused = false;
  if (f.leader_name && f.evidence.contains("members") &&
      f.evidence["members"].contains(*f.leader_name)) {
    const json& m = f.evidence["members"][*f.leader_name];
    if (auto api = str_field(m, "api_url")) {
      std::string base = *api;
      const auto at = base.rfind("/patroni");
      if (at != std::string::npos && at + 8 == base.size()) base.resize(at);
      f.leader_api_url = base;
    }
    if (auto conn = str_field(m, "conn_url")) f.leader_host = host_of(*conn);
  }
  f.self_holds_leader_key = f.leader_name && *f.leader_name == f.self_name;
}

namespace {

// 1. One quorum read of Patroni's keys: proves quorum and gives leader, pause, sysid.
asio::awaitable<void> read_etcd(HttpClient& http, const Config& config, Duration each,
                                ClusterFacts& f) {
  bool any_answer = false;
  for (const auto& ep : config.etcd_endpoints) {
    HttpRequest req = etcd_request(config,
                                   ep + (config.scope.empty() ? "/v2/keys/fener?quorum=true"
                                                              : "/v2/keys/service/" + config.scope +
                                                                    "/?recursive=true&quorum=true"),
                                   each);
    auto r = co_await http.fetch(std::move(req));
    if (!r.ok()) {
      f.evidence["etcd"][ep] = r.describe();
      continue;
    }
    any_answer = true;
    f.evidence["etcd"][ep] = "HTTP " + std::to_string(r.status);
    auto body = parse_json(r.body);
    if (r.status == 200 && body) {
      f.etcd_quorum = true;
      read_dcs_tree(*body, f);
      break;
    }
    // 404 (errorCode 100, key not found) comes from a quorum read too.
    if (r.status == 404 && body && body->value("errorCode", 0) == 100) {
      f.etcd_quorum = true;
      f.self_holds_leader_key = false;
      break;
    }
    f.etcd_quorum = false;  // 5xx: the member is up but raft cannot serve the read
  }
  if (!any_answer) f.etcd_quorum.reset();
}

// 2. This node's Patroni (slow to answer while PostgreSQL is down: asked meanwhile).
asio::awaitable<void> read_self(HttpClient& http, const Config& config, Duration each,
                                ClusterFacts& f, bool& paused) {
  if (config.patroni_url.empty()) co_return;
  HttpRequest req = patroni_request(config, config.patroni_url + "/patroni", each);
  auto r = co_await http.fetch(std::move(req));
  if (r.ok() && (r.status == 200 || r.status == 503)) {
    if (auto j = parse_json(r.body); j && j->is_object()) {
      f.self_role = str_field(*j, "role");
      f.self_state = str_field(*j, "state");
      f.self_sysid = str_field(*j, "database_system_identifier");
      paused = j->value("pause", false);
    }
  }
  f.evidence["self_patroni"] = r.ok() ? "HTTP " + std::to_string(r.status) : r.describe();
}

}  // namespace

asio::awaitable<ClusterFacts> gather_facts(HttpClient& http, const Config& config, Duration timeout,
                                           bool with_patroni) {
  ClusterFacts f;
  f.self_name = config.node_name;
  const auto each = std::max(Duration(500), timeout / 2);
  if (!with_patroni) {
    co_await read_etcd(http, config, each, f);
    co_return f;
  }
  bool self_paused = false;
  co_await (read_etcd(http, config, each, f) && read_self(http, config, each, f, self_paused));
  if (self_paused) f.paused = true;

  // 3. The leader's Patroni: is its PostgreSQL running, which system is it.
  if (f.leader_api_url) {
    HttpRequest req = patroni_request(config, *f.leader_api_url + "/patroni", each);
    auto r = co_await http.fetch(std::move(req));
    if (r.ok() && (r.status == 200 || r.status == 503)) {
      if (auto j = parse_json(r.body); j && j->is_object()) {
        auto role = str_field(*j, "role");
        // A leader key whose holder does not call itself leader is not a healthy leader.
        if (role && is_leader_role(*role))
          f.leader_state = str_field(*j, "state");
        else if (role)
          f.leader_state = "not leader (role " + *role + ")";
        f.leader_sysid = str_field(*j, "database_system_identifier");
      }
    }
    f.evidence["leader_patroni"] = r.ok() ? "HTTP " + std::to_string(r.status) : r.describe();
  }
  co_return f;
}

}  // namespace fener
