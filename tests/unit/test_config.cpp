// Configuration loading: discovery from patroni.yml and etcd environment files, precedence,
// and the exact wording of every kind of error (file:line:column: key: what is expected).
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "checks/registry.hpp"
#include "src/config.hpp"
#include "src/debounce.hpp"
#include "src/haproxy_cfg.hpp"
#include "src/rules.hpp"

using namespace fener;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fener-config-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string error_of(const LoadOptions& o) {
  try {
    Config c = load_config(o);
    build_checks(c);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

const char* const kPatroniYml = R"(scope: liman
name: kaptan1
restapi:
  listen: 127.0.1.2:8008
  connect_address: 127.0.1.2:8008
  authentication:
    username: fener
    password: secret
etcd:
  hosts: 127.0.1.1:2379,127.0.1.2:2379,127.0.1.3:2379
postgresql:
  listen: 127.0.1.2:5432
  connect_address: 127.0.1.2:5432
  data_dir: /data/patroni
  bin_dir: /usr/lib/postgresql/15/bin
)";

const char* const kEtcdEnv = R"(ETCD_NAME="ha"
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://10.0.0.1:2380"
ETCD_ADVERTISE_CLIENT_URLS="http://10.0.0.1:2379"
ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster-1"
ETCD_INITIAL_CLUSTER="ha=http://10.0.0.1:2380,kaptan1=http://10.0.0.2:2380,kaptan2=http://10.0.0.3:2380"
)";

}  // namespace

TEST_CASE("patroni.yml alone describes a database node") {
  TempDir d;
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml", kPatroniYml);
  o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n");
  Config c = load_config(o);
  CHECK(c.scope == "liman");
  CHECK(c.node_name == "kaptan1");
  CHECK(c.node_address == "127.0.1.2");
  CHECK(c.patroni_url == "http://127.0.1.2:8008");
  CHECK(c.patroni_username == "fener");
  CHECK(c.patroni_password == "secret");
  CHECK(c.patroni_dcs == "etcd");
  CHECK_FALSE(c.patroni_etcd_uses_host_key);
  CHECK(c.etcd_endpoints == std::vector<std::string>{"http://127.0.1.1:2379",
                                                     "http://127.0.1.2:2379",
                                                     "http://127.0.1.3:2379"});
  CHECK(c.pg_data_dir == "/data/patroni");
  CHECK(c.pg_listen == "127.0.1.2:5432");
  std::vector<std::string> names;
  for (const auto& s : c.checks) names.push_back(s.name);
  CHECK(names == std::vector<std::string>{"etcd_health", "etcd_members", "patroni_node",
                                          "patroni_cluster", "listening_sockets", "datadir",
                                          "config_lint"});
  CHECK(build_checks(c).size() == names.size());
}

TEST_CASE("a bracketed listen address with a port that is not a number does not throw") {
  // Found by fuzz_config: "[...]:x" went to std::stoi unguarded.
  TempDir d;
  LoadOptions o;
  o.patroni_config = d.write("p.yml", "scope: s\nname: n\nrestapi:\n  listen: '[::1]:x'\n");
  o.config_file = d.write("f.yaml", "etcd:\n  env_files: []\n");
  Config c;
  CHECK_NOTHROW(c = load_config(o));
  CHECK(c.patroni_url == "http://[::1]:8008");
}

TEST_CASE("the singular etcd host key is kept as written for the lint") {
  TempDir d;
  LoadOptions o;
  o.patroni_config =
      d.write("p.yml", "scope: s\nname: n\netcd:\n  host: 10.0.0.1:2379,10.0.0.2:2379\n");
  o.config_file = d.write("f.yaml", "etcd:\n  env_files: []\n");
  Config c = load_config(o);
  CHECK(c.patroni_etcd_uses_host_key);
  CHECK(c.patroni_etcd_hosts.size() == 2);
}

TEST_CASE("an etcd environment file alone describes the HAProxy node") {
  TempDir d;
  LoadOptions o;
  const auto env = d.write("etcd.conf", kEtcdEnv);
  o.config_file = d.write("fener.yaml", "etcd:\n  env_files: [" + env + "]\n");
  Config c = load_config(o);
  CHECK(c.node_name == "ha");
  CHECK(c.node_address == "10.0.0.1");
  REQUIRE(c.etcd_members.size() == 3);
  CHECK(c.etcd_members[1].name == "kaptan1");
  CHECK(c.etcd_members[1].peer_urls == std::vector<std::string>{"http://10.0.0.2:2380"});
  CHECK(c.etcd_endpoints == std::vector<std::string>{"http://10.0.0.1:2379", "http://10.0.0.2:2379",
                                                     "http://10.0.0.3:2379"});
  CHECK(c.patroni_url.empty());
}

TEST_CASE("explicit settings win over discovery; checks merge over the defaults") {
  TempDir d;
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml", kPatroniYml);
  o.config_file = d.write("fener.yaml", R"(node:
  name: override
postgresql:
  data_dir: /srv/pg
etcd:
  env_files: []
defaults:
  interval: 10s
checks:
  datadir:
    interval: 30s
    max_entries: 50
  config_lint:
    enabled: false
  second_datadir:
    type: datadir
    path: /srv/other
)");
  Config c = load_config(o);
  CHECK(c.node_name == "override");
  CHECK(c.pg_data_dir == "/srv/pg");
  auto find = [&](const std::string& n) -> const CheckSpec* {
    for (const auto& s : c.checks)
      if (s.name == n) return &s;
    return nullptr;
  };
  REQUIRE(find("datadir"));
  CHECK(find("datadir")->timing.interval == std::chrono::seconds(30));
  CHECK(find("etcd_health")->timing.interval == std::chrono::seconds(10));
  CHECK(find("config_lint") == nullptr);
  REQUIRE(find("second_datadir"));
  CHECK(find("second_datadir")->type == "datadir");
  CHECK(build_checks(c).size() == c.checks.size());
  // The example's rules and the built-in ones build on this node.
  auto rules = build_rules(c);
  CHECK(rules.size() >= 3);
}

TEST_CASE("config errors name file, line, column, key and what was expected") {
  TempDir d;
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml", kPatroniYml);
  auto with = [&](const std::string& text) {
    o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    return error_of(o);
  };
  const std::string f = (d.path / "fener.yaml").string();

  CHECK(with("defaults:\n  timout: 3s\n") ==
        f + ":4:3: defaults.timout: unknown key (did you mean \"timeout\"?); expected one of: "
            "fall, interval, jitter, rise, timeout, unhealthy_interval");
  CHECK(with("defaults:\n  interval: fast\n") ==
        f + ":4:13: defaults.interval: expected a duration such as 500ms, 5s or 2m (a number "
            "and a unit), got \"fast\"");
  CHECK(with("defaults:\n  interval: 5\n") ==
        f + ":4:13: defaults.interval: expected a duration such as 500ms, 5s or 2m (a number "
            "and a unit), got \"5\"");
  CHECK(with("defaults:\n  rise: 0\n") ==
        f + ":4:9: defaults.rise: expected a whole number from 1 to 100, got 0");
  CHECK(with("checks:\n  nosuch: {}\n") ==
        f + ":4:11: checks.nosuch: unknown check \"nosuch\"; name a known type or add `type:` "
            "(one of: etcd_health, etcd_members, patroni_node, patroni_cluster, "
            "listening_sockets, datadir, leader_files, config_lint, haproxy)");
  CHECK(with("checks:\n  x:\n    type: datadirr\n") ==
        f + ":5:11: checks.x.type: unknown check type \"datadirr\"; expected one of: "
            "etcd_health, etcd_members, patroni_node, patroni_cluster, listening_sockets, "
            "datadir, leader_files, config_lint, haproxy");
  CHECK(with("log:\n  level: loud\n") ==
        f + ":4:10: log.level: expected one of trace, debug, info, warn, error, got \"loud\"");
  CHECK(with("agent:\n  default_role: writer\n") ==
        f + ":4:17: agent.default_role: expected primary, replica, read-only or any, got "
            "\"writer\"");
  CHECK(with("agent:\n  lag_drain: 1MB\n  lag_ready: 2MB\n") ==
        f + ":5:14: agent.lag_ready: lag_ready must not exceed lag_drain (a drained replica "
            "returns under lag_ready)");
  CHECK(with("agent:\n  listen: 8010\n") ==
        f + ":4:11: agent.listen: expected host:port such as 127.0.0.1:8010, or off, got "
            "\"8010\"");
  CHECK(with("agent:\n  during_remedy: pause\n") ==
        f + ":4:18: agent.during_remedy: expected maint or drain, got \"pause\"");
  CHECK(with("state_dir: var/lib\n") ==
        f + ":3:12: state_dir: expected an absolute directory path, e.g. /var/lib/fener");
  CHECK(with("node: [a, b]\n") == f + ":3:7: node: expected a mapping of keys, got a list");
  CHECK(with("nodes:\n  name: x\n") ==
        f + ":3:1: nodes: unknown key (did you mean \"node\"?); expected one of: agent, alerts, "
            "api, audit, checks, cluster, defaults, etcd, fleet, haproxy, lock, log, mode, node, "
            "patroni, peer_files, postgresql, rules, services, state_dir");
  CHECK(with("defaults: {interval: 5s\n").find(f + ":4:1: YAML syntax error") == 0);
  CHECK(with("patroni:\n  url: 127.0.0.1:8008\n") ==
        f + ":4:8: patroni.url: expected an http:// or https:// URL, got \"127.0.0.1:8008\"");
  // A check's own parameters are validated at load, with the same precision.
  CHECK(with("checks:\n  datadir:\n    max_entris: 5\n")
            .find(f + ":5:5: checks.datadir.max_entris: unknown key") == 0);
}

TEST_CASE("fleet: defaults, settings and word-for-word errors") {
  TempDir d;
  LoadOptions o;
  o.patroni_config = d.write("patroni.yml", kPatroniYml);
  auto load = [&](const std::string& text) {
    o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    return load_config(o);
  };
  auto with = [&](const std::string& text) {
    o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    return error_of(o);
  };
  const std::string f = (d.path / "fener.yaml").string();
  Config c = load("");
  CHECK(c.fleet.enabled);
  CHECK(c.fleet.interval == std::chrono::seconds(10));
  c = load("fleet:\n  enabled: false\n  interval: 30s\n");
  CHECK_FALSE(c.fleet.enabled);
  CHECK(c.fleet.interval == std::chrono::seconds(30));

  CHECK(with("fleet:\n  interval: 500ms\n") ==
        f + ":4:13: fleet.interval: must be at least 1s, got 500ms");
  CHECK(with("fleet:\n  interval: often\n") ==
        f + ":4:13: fleet.interval: expected a duration such as 500ms, 5s or 2m (a number and a "
            "unit), got \"often\"");
  CHECK(with("fleet:\n  enabled: maybe\n") ==
        f + ":4:12: fleet.enabled: expected true or false, got \"maybe\"");
  CHECK(with("fleet:\n  intervall: 5s\n") ==
        f + ":4:3: fleet.intervall: unknown key (did you mean \"interval\"?); expected one of: "
            "enabled, interval");
  CHECK(with("fleet: 10s\n") == f + ":3:8: fleet: expected a mapping of keys, got \"10s\"");
}

TEST_CASE("the example configuration in conf/ is valid") {
  TempDir d;
  LoadOptions o;
  o.config_file = std::string(FENER_TEST_DATA) + "/../../conf/fener.yaml";
  o.patroni_config = d.write("patroni.yml", kPatroniYml);
  Config c = load_config(o);
  CHECK(c.node_name == "kaptan1");
  CHECK(c.etcd_members.size() == 3);
  CHECK(c.expected_members == 2);
  CHECK(c.fleet.enabled);
  CHECK(c.fleet.interval == std::chrono::seconds(10));
  CHECK(build_checks(c).size() == c.checks.size());
}

TEST_CASE("a missing or broken patroni.yml is an error, not a silent default") {
  TempDir d;
  LoadOptions o;
  o.patroni_config = (d.path / "absent.yml").string();
  CHECK(error_of(o) == o.patroni_config.value() + ": Patroni configuration file not found");
  o.patroni_config = d.write("p.yml", "scope: [x\n");
  CHECK(error_of(o).find(*o.patroni_config + ":2:1: YAML syntax error") == 0);
  o.patroni_config = d.write("p2.yml", "scope: s\nrestapi: 8008\n");
  CHECK(error_of(o) ==
        *o.patroni_config + ":2:10: restapi: expected a mapping of keys, got \"8008\"");
}

TEST_CASE("durations parse with units only") {
  CHECK(parse_duration("250ms") == Duration{250});
  CHECK(parse_duration("1.5s") == Duration{1500});
  CHECK(parse_duration("2m") == Duration{120000});
  CHECK_FALSE(parse_duration("5").has_value());
  CHECK_FALSE(parse_duration("s").has_value());
  CHECK_FALSE(parse_duration("1..5s").has_value());
  CHECK_FALSE(parse_duration("-1s").has_value());
  CHECK(format_duration(Duration{3000}) == "3s");
  CHECK(format_duration(Duration{1500}) == "1500ms");
}

TEST_CASE("debouncer: first result at once, then rise and fall thresholds") {
  Debouncer d(2, 3);
  CHECK(d.feed(Status::passing) == Status::passing);
  CHECK_FALSE(d.feed(Status::critical).has_value());
  CHECK_FALSE(d.feed(Status::critical).has_value());
  CHECK(d.feed(Status::critical) == Status::critical);  // third in a row
  CHECK_FALSE(d.feed(Status::passing).has_value());
  CHECK(d.feed(Status::passing) == Status::passing);  // rise 2
  // An interrupted streak starts over.
  CHECK_FALSE(d.feed(Status::warning).has_value());
  CHECK_FALSE(d.feed(Status::unknown).has_value());
  CHECK_FALSE(d.feed(Status::warning).has_value());
  CHECK_FALSE(d.feed(Status::warning).has_value());
  CHECK(d.feed(Status::warning) == Status::warning);
  CHECK(d.published() == Status::warning);
}

TEST_CASE("status order and exit codes follow the Nagios convention") {
  CHECK(worst(Status::warning, Status::unknown) == Status::unknown);
  CHECK(worst(Status::critical, Status::unknown) == Status::critical);
  CHECK(worst(Status::passing, Status::warning) == Status::warning);
  CHECK(nagios_exit_code(Status::passing) == 0);
  CHECK(nagios_exit_code(Status::warning) == 1);
  CHECK(nagios_exit_code(Status::critical) == 2);
  CHECK(nagios_exit_code(Status::unknown) == 3);
}

TEST_CASE("haproxy.cfg describes the HAProxy node: socket, backends, the haproxy check") {
  TempDir d;
  LoadOptions o;
  const auto env = d.write("etcd.conf", kEtcdEnv);
  const auto cfg = d.write("haproxy.cfg", R"(global
    stats socket /run/haproxy/admin.sock mode 600 level admin
listen primary
    bind 10.0.0.1:5000
    option httpchk OPTIONS /primary
    server kaptan1 10.0.0.2:5432 check port 8008
listen replicas
    bind 10.0.0.1:5001
    option httpchk OPTIONS /replica
    server kaptan1 10.0.0.2:5432 check port 8008
)");
  o.config_file =
      d.write("fener.yaml", "etcd:\n  env_files: [" + env + "]\nhaproxy:\n  config: " + cfg + "\n");
  Config c = load_config(o);
  CHECK(c.haproxy.config == cfg);
  CHECK(c.haproxy.socket == "/run/haproxy/admin.sock");
  CHECK(c.haproxy.primary_backends == std::vector<std::string>{"primary"});
  CHECK(c.haproxy.replica_backends == std::vector<std::string>{"replicas"});
  CHECK(c.scope.empty());  // learnt from etcd by the check
  std::vector<std::string> names;
  for (const auto& s : c.checks) names.push_back(s.name);
  CHECK(names == std::vector<std::string>{"etcd_health", "etcd_members", "listening_sockets",
                                          "config_lint", "haproxy"});
  CHECK(build_checks(c).size() == names.size());

  // socket: over the file's; IP:PORT and HAProxy's ipv4@ form accepted.
  o.config_file =
      d.write("fener.yaml", "etcd:\n  env_files: [" + env + "]\nhaproxy:\n  config: " + cfg +
                                "\n  socket: ipv4@127.0.0.1:9999\n");
  CHECK(load_config(o).haproxy.socket == "127.0.0.1:9999");

  // enabled: false: no HAProxy here, whatever files exist.
  o.config_file =
      d.write("fener.yaml", "etcd:\n  env_files: [" + env + "]\nhaproxy:\n  config: " + cfg +
                                "\n  enabled: false\n");
  Config off = load_config(o);
  CHECK(off.haproxy.config.empty());
  for (const auto& s : off.checks) CHECK(s.name != "haproxy");

  // Named explicitly, a haproxy.cfg that routes nothing to Patroni (a stock one) is an
  // error at the check: it has nothing to judge.
  const auto stock =
      d.write("stock.cfg", "global\n  stats socket /run/x.sock\ndefaults\n  mode http\n");
  o.config_file =
      d.write("fener.yaml", "etcd:\n  env_files: []\nhaproxy:\n  config: " + stock + "\n");
  CHECK(error_of(o) ==
        "<config>: checks.haproxy: no primary or replica backends known (none "
        "recognised in " +
            stock +
            "); list them under primary_backends: and "
            "replica_backends:");
}

TEST_CASE("haproxy settings: errors name file, line, key and what is expected") {
  TempDir d;
  LoadOptions o;
  auto with = [&](const std::string& text) {
    o.config_file = d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    return error_of(o);
  };
  const std::string f = (d.path / "fener.yaml").string();
  CHECK(with("haproxy:\n  config: /nonexistent/haproxy.cfg\n") ==
        f + ":4:11: haproxy.config: file /nonexistent/haproxy.cfg does not exist");
  CHECK(with("haproxy:\n  config: haproxy.cfg\n") ==
        f + ":4:11: haproxy.config: expected an absolute path");
  CHECK(with("haproxy:\n  socket: admin.sock\n") ==
        f + ":4:11: haproxy.socket: expected a unix socket path such as /run/haproxy/admin.sock "
            "or IP:PORT, got \"admin.sock\"");
  CHECK(with("haproxy:\n  sockets: /run/a.sock\n")
            .find(f + ":4:3: haproxy.sockets: unknown key (did you mean \"socket\"?)") == 0);
  // A socket alone makes the check run; backends named under the check.
  CHECK(
      with("haproxy:\n  socket: /run/a.sock\nchecks:\n  haproxy:\n    primary_backends: [pg]\n") ==
      "(no error)");
}

TEST_CASE("files holding secrets must not be readable by everyone; group-readable is fine") {
  TempDir d;
  const std::string patroni = d.write("patroni.yml", "scope: liman\nname: kaptan1\n");
  auto mode = [](const std::string& file, unsigned m) {
    fs::permissions(file, static_cast<fs::perms>(m));
  };
  LoadOptions o;
  o.patroni_config = patroni;
  o.config_file = (d.path / "fener.yaml").string();

  // The token file.
  const std::string token = d.write("token", "0123456789abcdef-token\n");
  mode(token, 0644);
  d.write("fener.yaml", "etcd:\n  env_files: []\napi:\n  token_file: " + token + "\n");
  const std::string err = error_of(o);
  CHECK(err.find(token +
                 " holds a shared secret and is readable by everyone (mode 0644): "
                 "chmod 600 " +
                 token + " (or 640 with a group)") != std::string::npos);
  CHECK(err.find("api.token_file") != std::string::npos);
  CHECK(err.find("0123456789abcdef-token") == std::string::npos);
  mode(token, 0640);
  CHECK(error_of(o) == "(no error)");
  CHECK(load_config(o).api.token == "0123456789abcdef-token");

  // fener's own file, when it holds a secret inline.
  const std::string file = *o.config_file;
  const std::vector<std::pair<std::string, std::string>> inline_secrets = {
      {"api:\n  token: 0123456789abcdef-inline\n", "api.token"},
      {"patroni:\n  password: pw-inline-1234\n", "patroni.password"},
      {"alerts:\n  webhooks:\n    - name: a\n      url: https://x/\n      headers: "
       "{Authorization: Bearer abc}\n",
       "alerts.webhooks[0].headers"},
      {"alerts:\n  webhooks:\n    - name: a\n      url: https://u:pw@x/\n",
       "alerts.webhooks[0].url"},
      {"alerts:\n  webhooks:\n    - name: a\n      url: https://hooks.slack.com/services/T/B/c\n"
       "      format: slack\n",
       "alerts.webhooks[0].url"},
  };
  for (const auto& [text, key] : inline_secrets) {
    INFO(key);
    d.write("fener.yaml", "etcd:\n  env_files: []\n" + text);
    mode(file, 0644);
    const std::string e = error_of(o);
    CHECK(e.find(file + ": " + file + " holds secrets (" + key +
                 ") and is readable by everyone (mode 0644): chmod 600 " + file +
                 " (or 640 with a group)") == 0);
    mode(file, 0640);
    CHECK(error_of(o) == "(no error)");
  }
  // Without an inline secret the file may be world-readable.
  d.write("fener.yaml", "etcd:\n  env_files: []\napi:\n  token_file: " + token + "\n");
  mode(file, 0644);
  CHECK(error_of(o) == "(no error)");
}
