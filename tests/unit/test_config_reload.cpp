// What a reload takes up and what waits for a restart: hold_start_only_settings and
// prepare_reload.
#include <doctest/doctest.h>

#include <yaml-cpp/yaml.h>

#include "src/config_error.hpp"
#include "src/config_reload.hpp"

using namespace fener;

namespace {

Config running_config() {
  Config c;
  c.node_name = "kaptan1";
  c.scope = "fener";
  c.state_dir = "/var/lib/fener";
  c.audit_file = "/var/lib/fener/audit.jsonl";
  c.api.listen = "127.0.0.1:8009";
  c.api.token = "0123456789abcdef";
  c.agent.listen = "127.0.0.1:8010";
  c.etcd_endpoints = {"http://127.0.0.1:2379"};
  c.peer_files = {{"data_dir", "/var/lib/postgresql/15/main", {".*.swp"}}};
  return c;
}

}  // namespace

TEST_CASE("reload: an unchanged configuration leaves nothing pending") {
  const Config running = running_config();
  Config next = running_config();
  CHECK(hold_start_only_settings(next, running, true).empty());
}

TEST_CASE("reload: what the reload takes up is not listed and keeps its new value") {
  const Config running = running_config();
  Config next = running_config();
  next.mode = Mode::full;
  next.agent.lag_drain = 1;
  next.agent.lag_ready = 1;
  next.agent.maint_during_remedy = false;
  next.agent.default_role = "replica";
  next.agent.max_connections = 10;
  next.agent.read_wait = std::chrono::milliseconds(50);
  next.log_level = "debug";
  next.alerts.queue_size = 7;
  next.lock_ttl = std::chrono::seconds(5);
  CHECK(hold_start_only_settings(next, running, true).empty());
  CHECK(next.mode == Mode::full);
  CHECK(next.agent.lag_drain == 1);
  CHECK_FALSE(next.agent.maint_during_remedy);
  CHECK(next.agent.default_role == "replica");
  CHECK(next.agent.read_wait == std::chrono::milliseconds(50));
}

TEST_CASE("reload: start-only settings are listed and set back to the running values") {
  const Config running = running_config();
  Config next = running_config();
  next.node_name = "kaptan9";
  next.state_dir = "/srv/fener";
  next.audit_file = "";
  next.api.listen = "127.0.0.1:9009";
  next.api.token = "fedcba9876543210";
  next.api.token_source = "api.token_file /etc/fener/other";
  next.api.max_file_size = 1024;
  next.peer_files[0].patterns.push_back("*.conf");
  next.agent.listen = "127.0.0.1:9010";
  next.fleet.enabled = false;
  next.fleet.interval = std::chrono::seconds(1);
  const auto pending = hold_start_only_settings(next, running, true);
  CHECK(pending.partly.empty());
  CHECK(pending.held == std::vector<std::string>{"node.name", "state_dir", "audit.file",
                                                 "api.listen", "api.token", "api.max_file_size",
                                                 "peer_files", "agent.listen", "fleet.enabled",
                                                 "fleet.interval"});
  CHECK(next.node_name == running.node_name);
  CHECK(next.state_dir == running.state_dir);
  CHECK(next.audit_file == running.audit_file);
  CHECK(next.api.listen == running.api.listen);
  CHECK(next.api.token == running.api.token);
  CHECK(next.api.token_source == running.api.token_source);
  CHECK(next.api.max_file_size == running.api.max_file_size);
  CHECK(next.peer_files[0].patterns == running.peer_files[0].patterns);
  CHECK(next.agent.listen == running.agent.listen);
  CHECK(next.fleet.enabled == running.fleet.enabled);
  CHECK(next.fleet.interval == running.fleet.interval);
}

TEST_CASE("reload: settings the checks take up at once are listed but keep their new value") {
  const Config running = running_config();
  Config next = running_config();
  next.etcd_endpoints = {"http://127.0.0.2:2379"};
  next.etcd_tls.ca_file = "/etc/etcd/ca.pem";
  next.scope = "other";
  next.patroni_dcs = "etcd3";
  const auto pending = hold_start_only_settings(next, running, true);
  CHECK(pending.held.empty());
  CHECK(pending.partly == std::vector<std::string>{"cluster.scope", "etcd.endpoints",
                                                   "etcd.cacert/cert/key/verify",
                                                   "patroni.yml etcd/etcd3"});
  CHECK(pending.all() == pending.partly);
  CHECK(next.etcd_endpoints == std::vector<std::string>{"http://127.0.0.2:2379"});
  CHECK(next.scope == "other");
}

TEST_CASE("reload: without the leader watch and the fleet, the etcd settings are the checks'") {
  Config running = running_config();
  running.fleet.enabled = false;
  running.patroni_dcs = "etcd3";  // no leader watch on the v3 keyspace
  Config next = running;
  next.etcd_endpoints = {"http://127.0.0.2:2379"};
  CHECK(hold_start_only_settings(next, running, false).empty());
  // A reload that brings what a start would watch etcd with says a restart is needed.
  running.scope.clear();
  next = running;
  next.scope = "fener";
  next.patroni_dcs = "etcd";
  CHECK(hold_start_only_settings(next, running, false).partly ==
        std::vector<std::string>{"cluster.scope", "patroni.yml etcd/etcd3"});
}

TEST_CASE("reload: where a TLS file was named does not count, only the files and switches") {
  Config running = running_config();
  running.etcd_tls.ca_file = "/etc/etcd/ca.pem";
  running.etcd_tls.ca_source = "/etc/patroni.yml etcd.cacert";
  Config next = running;
  next.etcd_tls.ca_source = "fener.yaml etcd.cacert";
  CHECK(hold_start_only_settings(next, running, true).empty());
  next.etcd_tls.verify_host = false;
  CHECK(hold_start_only_settings(next, running, true).all() ==
        std::vector<std::string>{"etcd.cacert/cert/key/verify"});
}

namespace {

// A configuration whose leader_files check names the peer_files root `extra`.
Config with_leader_files_on(const std::vector<PeerFileRoot>& roots) {
  Config c = running_config();
  c.patroni_url = "http://127.0.0.1:8008";
  c.peer_files = roots;
  CheckSpec spec;
  spec.name = "extra_files";
  spec.type = "leader_files";
  spec.params = YAML::Load("{type: leader_files, roots: [extra]}");
  spec.file = "fener.yaml";
  spec.path = "checks.extra_files";
  c.checks = {spec};
  return c;
}

}  // namespace

TEST_CASE("reload: a file that leans on a setting waiting for a restart is refused, saying so") {
  const Config running = running_config();
  auto roots = running.peer_files;
  roots.push_back({"extra", "/etc/extra", {"*.conf"}});
  // Valid at a fresh start, but the reload keeps the running peer_files (no `extra`).
  const Config written = with_leader_files_on(roots);
  CHECK_NOTHROW(build_checks(written));
  try {
    prepare_reload(written, running, false);
    FAIL("the reload should be refused");
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    CHECK(what.find("no peer_files root named \"extra\"") != std::string::npos);
    CHECK(what.find("with peer_files as running until a restart") != std::string::npos);
  }
  // With that root already running, the same file reloads.
  Config with_extra = running_config();
  with_extra.peer_files = roots;
  const auto r = prepare_reload(written, with_extra, false);
  CHECK(r.pending.empty());
  CHECK(r.checks.size() == 1);
}

TEST_CASE("reload: a file that only the held settings keep valid is refused") {
  // The running peer_files has `extra`; the file drops it but a check still names it.
  auto roots = running_config().peer_files;
  roots.push_back({"extra", "/etc/extra", {"*.conf"}});
  Config running = running_config();
  running.peer_files = roots;
  const Config written = with_leader_files_on(running_config().peer_files);
  try {
    prepare_reload(written, running, false);
    FAIL("the reload should be refused");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).find("no peer_files root named \"extra\"") != std::string::npos);
    CHECK(std::string(e.what()).find("until a restart") == std::string::npos);
  }
}

TEST_CASE("reload: an invalid check with nothing held is the file's fault, not the restart's") {
  Config running = running_config();
  const Config written = with_leader_files_on(running.peer_files);  // no root `extra`
  try {
    prepare_reload(written, running, false);
    FAIL("the reload should be refused");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).find("no peer_files root named \"extra\"") != std::string::npos);
    CHECK(std::string(e.what()).find("until a restart") == std::string::npos);
  }
}
