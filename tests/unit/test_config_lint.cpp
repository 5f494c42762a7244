#include "checks/config_lint.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "src/http_client.hpp"
#include "src/worker.hpp"

using namespace fener;

namespace {

const std::string kData = FENER_TEST_DATA;

EnvFileRead env(const std::string& path, const std::string& text) {
  EnvFileRead r;
  r.path = path;
  r.state = EnvFileRead::State::ok;
  r.parsed = parse_env_file(text);
  return r;
}

// A correct env file for kaptan1 of the lab.
const char* kGoodKaptan1 =
    "ETCD_NAME=\"kaptan1\"\n"
    "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.1.2:2380\"\n"
    "ETCD_LISTEN_PEER_URLS=\"http://localhost:2380,http://127.0.1.2:2380\"\n"
    "ETCD_LISTEN_CLIENT_URLS=\"http://localhost:2379,http://127.0.1.2:2379\"\n"
    "ETCD_ADVERTISE_CLIENT_URLS=\"http://127.0.1.2:2379\"\n"
    "ETCD_INITIAL_CLUSTER_TOKEN=\"etcd-cluster-1\"\n"
    "ETCD_INITIAL_CLUSTER=\"ha=http://127.0.1.1:2380,kaptan1=http://127.0.1.2:2380,"
    "kaptan2=http://127.0.1.3:2380\"\n"
    "ETCD_INITIAL_CLUSTER_STATE=\"new\"\n"
    "ETCD_ENABLE_V2=\"true\"\n";

Config kaptan1() {
  Config c;
  c.node_name = "kaptan1";
  c.node_address = "127.0.1.2";
  c.patroni_config = "/etc/patroni.yml";
  c.patroni_dcs = "etcd";
  c.patroni_etcd_hosts = {"127.0.1.1:2379", "127.0.1.2:2379", "127.0.1.3:2379"};
  c.etcd_members = {{"ha", {"http://127.0.1.1:2380"}, {}},
                    {"kaptan1", {"http://127.0.1.2:2380"}, {"http://127.0.1.2:2379"}},
                    {"kaptan2", {"http://127.0.1.3:2380"}, {}}};
  return c;
}

// The ha node: etcd only, no Patroni.
Config ha() {
  Config c;
  c.node_name = "ha";
  c.node_address = "127.0.1.1";
  return c;
}

std::vector<LintFinding> env_findings(const Config& c, const std::string& text,
                                      const std::string& path = "/etc/default/etcd") {
  return lint_etcd_env_file(c, env(path, text));
}

bool has(const std::vector<LintFinding>& v, Status s, const std::string& key,
         const std::string& text) {
  return std::any_of(v.begin(), v.end(), [&](const LintFinding& f) {
    return f.severity == s && f.key == key && f.message.find(text) != std::string::npos;
  });
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto p = s.find(from);
  REQUIRE(p != std::string::npos);
  return s.replace(p, from.size(), to);
}

}  // namespace

TEST_CASE("config_lint: a correct node passes and says what it checked") {
  Config c = kaptan1();
  c.etcd_env_files = {"/etc/default/etcd"};
  ConfigLintInputs in;
  in.env_files = {env("/etc/default/etcd", kGoodKaptan1)};
  CheckResult r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::passing);
  CHECK(r.message == "no problems in /etc/patroni.yml, /etc/default/etcd");
  CHECK(r.evidence["findings"].empty());
}

TEST_CASE("config_lint: the guide's env file on a Patroni node") {
  Config c = kaptan1();
  c.node_address = "127.0.1.1";  // lab-ha.env is ha's file
  c.node_name = "ha";
  c.etcd_env_files = {kData + "/etcd/lab-ha.env"};
  ConfigLintInputs in = read_config_lint_inputs(c);
  REQUIRE(in.env_files.size() == 1);
  REQUIRE(in.env_files[0].state == EnvFileRead::State::ok);
  CheckResult r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::critical);
  const std::string file = kData + "/etcd/lab-ha.env";
  CHECK(r.message == file +
                         ":10: ETCD_ENABLE_V2 is not set but Patroni's etcd: section needs etcd's "
                         "v2 API: write ETCD_ENABLE_V2=\"true\"; line 10 'enable-v2: true' is "
                         "YAML and has no effect; ETCDCTL_API=2 (line 9) only affects etcdctl "
                         "(+1 more)");
  const json& f = r.evidence["findings"];
  REQUIRE(f.size() == 2);
  CHECK(f[0]["severity"] == "warning");
  CHECK(f[0]["file"] == file);
  CHECK(f[0]["line"] == 10);
  CHECK(f[0]["key"] == "ETCD_ENABLE_V2");
  CHECK(f[0]["message"] ==
        "'enable-v2: true' is ignored: YAML syntax has no effect in an environment file; write "
        "ETCD_ENABLE_V2=\"true\"");
  CHECK(f[1]["severity"] == "critical");
  CHECK(f[1]["key"] == "ETCD_ENABLE_V2");
}

TEST_CASE("config_lint: the guide's env file on the HAProxy node is a warning") {
  Config c = ha();
  c.etcd_env_files = {kData + "/etcd/lab-ha.env"};
  CheckResult r = evaluate_config_lint(c, read_config_lint_inputs(c));
  CHECK(r.status == Status::warning);
  CHECK(r.message == kData +
                         "/etcd/lab-ha.env:10: 'enable-v2: true' is ignored: YAML syntax has no "
                         "effect in an environment file; write ETCD_ENABLE_V2=\"true\"");
}

TEST_CASE("config_lint: placeholders left in the guide's text do not carry the node address") {
  Config c = ha();
  c.etcd_env_files = {kData + "/etcd/guide-ha.env"};
  auto f = lint_etcd_env_file(c, read_env_file(c.etcd_env_files[0]));
  CHECK(has(f, Status::warning, "ETCD_ADVERTISE_CLIENT_URLS",
            "advertises http://HA_IP:2379, not this node's address 127.0.1.1"));
  CHECK(
      has(f, Status::warning, "ETCD_INITIAL_ADVERTISE_PEER_URLS", "advertises http://HA_IP:2380"));
  auto line = std::find_if(f.begin(), f.end(), [](const LintFinding& x) {
    return x.key == "ETCD_ADVERTISE_CLIENT_URLS";
  });
  REQUIRE(line != f.end());
  CHECK(line->line == 5);
}

TEST_CASE("config_lint: patroni.yml host: with several addresses") {
  Config c = kaptan1();
  c.patroni_config = kData + "/patroni/host-mistake.yml";
  c.patroni_etcd_uses_host_key = true;
  ConfigLintInputs in = read_config_lint_inputs(c);
  CHECK(in.patroni_hosts_line == 9);
  in.patroni_config_mode = -1;  // the checkout's mode of the test file is not the point here
  CheckResult r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::critical);
  CHECK(r.message == c.patroni_config +
                         ":9: etcd.host lists 3 addresses (127.0.1.1:2379, 127.0.1.2:2379, "
                         "127.0.1.3:2379) but Patroni's host takes one address; write hosts: "
                         "127.0.1.1:2379,127.0.1.2:2379,127.0.1.3:2379");
  CHECK(r.evidence["findings"][0]["key"] == "etcd.host");
}

TEST_CASE("config_lint: patroni.yml hosts: with every member passes, line found") {
  Config c = kaptan1();
  c.patroni_config = kData + "/patroni/hosts-ok.yml";
  ConfigLintInputs in = read_config_lint_inputs(c);
  CHECK(in.patroni_hosts_line == 9);
  CHECK(lint_patroni(c, in).empty());
}

TEST_CASE("config_lint: host: with a single address depends on one member") {
  Config c = kaptan1();
  c.patroni_etcd_uses_host_key = true;
  c.patroni_etcd_hosts = {"127.0.1.2:2379"};
  auto f = lint_patroni(c, {});
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == Status::critical);
  CHECK(f[0].key == "etcd.host");
  CHECK(f[0].message ==
        "etcd.host lists 127.0.1.2:2379: the cluster depends on 1 of 3 etcd members; write "
        "hosts: 127.0.1.1:2379,127.0.1.2:2379,127.0.1.3:2379");
}

TEST_CASE("config_lint: hosts: missing a member") {
  Config c = kaptan1();
  c.patroni_dcs = "etcd3";
  c.patroni_etcd_hosts = {"127.0.1.1:2379", "127.0.1.2:2379"};
  auto f = lint_patroni(c, {});
  REQUIRE(f.size() == 1);
  CHECK(f[0].key == "etcd3.hosts");
  CHECK(f[0].message.find("the cluster depends on 2 of 3 etcd members") != std::string::npos);
}

TEST_CASE("config_lint: members from ETCD_INITIAL_CLUSTER when the config lists none") {
  Config c = kaptan1();
  c.etcd_members.clear();
  c.patroni_etcd_hosts = {"127.0.1.1:2379"};
  ConfigLintInputs in;
  in.env_files = {env("/etc/default/etcd", kGoodKaptan1)};
  auto f = lint_patroni(c, in);
  REQUIRE(f.size() == 1);
  CHECK(f[0].message.find("depends on 1 of 3 etcd members") != std::string::npos);
  CHECK(lint_patroni(kaptan1(), in).empty());
}

TEST_CASE("config_lint: host names that cannot be matched are counted") {
  Config c = kaptan1();
  c.patroni_etcd_hosts = {"ha.lan:2379", "k1.lan:2379", "k2.lan:2379"};
  CHECK(lint_patroni(c, {}).empty());
  c.patroni_etcd_hosts.pop_back();
  CHECK(lint_patroni(c, {}).size() == 1);
}

TEST_CASE("config_lint: a single host: and no known members is a warning") {
  Config c = kaptan1();
  c.etcd_members.clear();
  c.patroni_etcd_uses_host_key = true;
  c.patroni_etcd_hosts = {"127.0.1.1:2379"};
  auto f = lint_patroni(c, {});
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == Status::warning);
  CHECK(f[0].message.find("depends on it alone") != std::string::npos);
}

TEST_CASE("config_lint: no Patroni, nothing to lint in patroni.yml") {
  CHECK(lint_patroni(ha(), {}).empty());
}

TEST_CASE("config_lint: ETCD_NAME missing or not in the initial cluster") {
  Config c = kaptan1();
  auto missing = env_findings(c, replace(kGoodKaptan1, "ETCD_NAME=\"kaptan1\"\n", ""));
  CHECK(has(missing, Status::critical, "ETCD_NAME", "ETCD_NAME is not set"));

  auto empty = env_findings(c, replace(kGoodKaptan1, "ETCD_NAME=\"kaptan1\"", "ETCD_NAME="));
  CHECK(has(empty, Status::critical, "ETCD_NAME", "ETCD_NAME is not set"));

  auto stranger = env_findings(c, replace(kGoodKaptan1, "\"kaptan1\"", "\"kaptan3\""));
  REQUIRE(stranger.size() == 1);
  CHECK(stranger[0].severity == Status::critical);
  CHECK(stranger[0].line == 1);
  CHECK(stranger[0].message ==
        "ETCD_NAME=\"kaptan3\" is not in ETCD_INITIAL_CLUSTER (line 7 names ha, kaptan1, "
        "kaptan2)");
}

TEST_CASE("config_lint: ETCD_INITIAL_CLUSTER missing or malformed") {
  Config c = kaptan1();
  std::string text = kGoodKaptan1;
  auto start = text.find("ETCD_INITIAL_CLUSTER=");
  text.erase(start, text.find('\n', start) - start + 1);
  auto missing = env_findings(c, text);
  CHECK(has(missing, Status::critical, "ETCD_INITIAL_CLUSTER", "is not set"));

  auto bad = env_findings(c, replace(kGoodKaptan1, "kaptan2=http://127.0.1.3:2380", "kaptan2"));
  CHECK(has(bad, Status::critical, "ETCD_INITIAL_CLUSTER", "'kaptan2' has no '='"));
}

TEST_CASE("config_lint: advertised peer URLs must match the initial cluster") {
  Config c = kaptan1();
  auto f = env_findings(c, replace(kGoodKaptan1, "PEER_URLS=\"http://127.0.1.2:2380\"",
                                   "PEER_URLS=\"http://127.0.1.3:2380\""));
  CHECK(has(f, Status::critical, "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS is http://127.0.1.3:2380 but ETCD_INITIAL_CLUSTER "
            "(line 7) gives kaptan1=http://127.0.1.2:2380"));
  // ...and the wrong host is also not this node's.
  CHECK(has(f, Status::warning, "ETCD_INITIAL_ADVERTISE_PEER_URLS", "not this node's address"));

  // Same URLs written differently are the same.
  auto same = env_findings(c, replace(kGoodKaptan1, "PEER_URLS=\"http://127.0.1.2:2380\"",
                                      "PEER_URLS=\"HTTP://127.0.1.2:2380/\""));
  CHECK(same.empty());

  std::string text = kGoodKaptan1;
  auto start = text.find("ETCD_INITIAL_ADVERTISE_PEER_URLS");
  text.erase(start, text.find('\n', start) - start + 1);
  auto unset = env_findings(c, text);
  CHECK(has(unset, Status::critical, "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            "http://localhost:2380 (not set: etcd's default)"));
}

TEST_CASE("config_lint: a name with several URLs in the initial cluster") {
  Config c = kaptan1();
  std::string text = replace(kGoodKaptan1, "kaptan1=http://127.0.1.2:2380",
                             "kaptan1=http://127.0.1.2:2380,kaptan1=http://127.0.1.2:12380");
  CHECK(has(env_findings(c, text), Status::critical, "ETCD_INITIAL_ADVERTISE_PEER_URLS", ""));
  text = replace(text, "PEER_URLS=\"http://127.0.1.2:2380\"",
                 "PEER_URLS=\"http://127.0.1.2:12380,http://127.0.1.2:2380\"");
  CHECK(env_findings(c, text).empty());
}

TEST_CASE("config_lint: advertised client URL of another host is a warning") {
  Config c = kaptan1();
  auto f = env_findings(c, replace(kGoodKaptan1, "ETCD_ADVERTISE_CLIENT_URLS=\"http://127.0.1.2",
                                   "ETCD_ADVERTISE_CLIENT_URLS=\"http://localhost"));
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == Status::warning);
  CHECK(f[0].line == 5);
  CHECK(f[0].message ==
        "ETCD_ADVERTISE_CLIENT_URLS advertises http://localhost:2379, not this node's address "
        "127.0.1.2");
  // Without a known node address there is nothing to compare with.
  c.node_address.clear();
  CHECK(env_findings(c, replace(kGoodKaptan1, "ETCD_ADVERTISE_CLIENT_URLS=\"http://127.0.1.2",
                                "ETCD_ADVERTISE_CLIENT_URLS=\"http://localhost"))
            .empty());
}

TEST_CASE("config_lint: cluster token missing or empty") {
  Config c = kaptan1();
  auto empty = env_findings(c, replace(kGoodKaptan1, "\"etcd-cluster-1\"", "\"\""));
  REQUIRE(empty.size() == 1);
  CHECK(empty[0].severity == Status::critical);
  CHECK(empty[0].line == 6);
  CHECK(empty[0].message.find("ETCD_INITIAL_CLUSTER_TOKEN is empty") == 0);
  std::string text = replace(kGoodKaptan1, "ETCD_INITIAL_CLUSTER_TOKEN=\"etcd-cluster-1\"\n", "");
  CHECK(has(env_findings(c, text), Status::critical, "ETCD_INITIAL_CLUSTER_TOKEN", "not set"));
}

TEST_CASE("config_lint: v2 API for Patroni's etcd: section") {
  Config c = kaptan1();
  auto off =
      env_findings(c, replace(kGoodKaptan1, "ETCD_ENABLE_V2=\"true\"", "ETCD_ENABLE_V2=false"));
  REQUIRE(off.size() == 1);
  CHECK(off[0].severity == Status::critical);
  CHECK(off[0].line == 9);
  CHECK(off[0].message.find("write ETCD_ENABLE_V2=\"true\"") != std::string::npos);

  CHECK(env_findings(c, replace(kGoodKaptan1, "ETCD_ENABLE_V2=\"true\"", "ETCD_ENABLE_V2=1"))
            .empty());
  // etcd3: uses the v3 API: no v2 needed.
  c.patroni_dcs = "etcd3";
  CHECK(env_findings(c, replace(kGoodKaptan1, "ETCD_ENABLE_V2=\"true\"\n", "")).empty());
}

TEST_CASE("config_lint: export lines and unterminated quotes are warnings") {
  Config c = kaptan1();
  auto f = env_findings(c, std::string(kGoodKaptan1) + "export ETCD_DATA_DIR=/var/lib/etcd\n" +
                               "ETCD_LOG_LEVEL=\"info\n");
  REQUIRE(f.size() == 2);
  CHECK(f[0].severity == Status::warning);
  CHECK(f[0].line == 10);
  CHECK(f[0].message.find("'export ETCD_DATA_DIR=/var/lib/etcd' is ignored: 'export'") == 0);
  CHECK(f[1].line == 11);
  CHECK(f[1].message.find("unterminated double quote") != std::string::npos);
}

TEST_CASE("config_lint: a stock file with only comments") {
  Config c = kaptan1();
  auto stock = env("/etc/default/etcd", "## etcd(1) daemon options\n# ETCD_NAME=\"hostname\"\n");
  CHECK(lint_etcd_env_file(c, stock).empty());
  c.etcd_env_files_explicit = true;
  auto f = lint_etcd_env_file(c, stock);
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == Status::critical);
  CHECK(f[0].message == "sets no ETCD_ variable");
}

TEST_CASE("config_lint: missing and unreadable files") {
  Config c = kaptan1();
  EnvFileRead gone = read_env_file(kData + "/etcd/does-not-exist");
  CHECK(gone.state == EnvFileRead::State::missing);
  CHECK(lint_etcd_env_file(c, gone).empty());
  c.etcd_env_files_explicit = true;
  auto f = lint_etcd_env_file(c, gone);
  REQUIRE(f.size() == 1);
  CHECK(f[0].severity == Status::critical);
  CHECK(describe(f[0]) ==
        kData + "/etcd/does-not-exist: does not exist (listed under etcd.env_files)");

  EnvFileRead dir = read_env_file(kData + "/etcd");  // a directory: read() fails
  CHECK(dir.state == EnvFileRead::State::error);
  auto u = lint_etcd_env_file(c, dir);
  REQUIRE(u.size() == 1);
  CHECK(u[0].severity == Status::unknown);
  CHECK(u[0].message == "cannot be read: Is a directory");
}

TEST_CASE("config_lint: unknown outranks warnings, critical outranks unknown") {
  Config c = ha();
  c.etcd_env_files = {kData + "/etcd/lab-ha.env", kData + "/etcd"};
  ConfigLintInputs in = read_config_lint_inputs(c);
  CheckResult r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::unknown);
  CHECK(r.message == kData + "/etcd: cannot be read: Is a directory (+1 more)");

  c.etcd_env_files_explicit = true;
  c.etcd_env_files.push_back(kData + "/etcd/nope");
  r = evaluate_config_lint(c, read_config_lint_inputs(c));
  CHECK(r.status == Status::critical);
  CHECK(r.message.find("nope: does not exist") != std::string::npos);
  CHECK(r.message.find("(+2 more)") != std::string::npos);
}

TEST_CASE("config_lint: the two env files disagree") {
  Config c = kaptan1();
  auto a = env("/etc/etcd/etcd.conf", kGoodKaptan1);
  auto b =
      env("/etc/default/etcd",
          replace(replace(kGoodKaptan1, "\"kaptan1\"\n", "\"kaptan1\"\nETCD_DEBUG=1\n"),
                  "ETCD_INITIAL_CLUSTER_STATE=\"new\"", "ETCD_INITIAL_CLUSTER_STATE=existing"));
  auto f = lint_env_files_agree({a, b});
  REQUIRE(f.size() == 2);
  CHECK(f[0].severity == Status::warning);
  CHECK(f[0].file == "/etc/etcd/etcd.conf");
  CHECK(f[0].line == 8);
  CHECK(f[0].key == "ETCD_INITIAL_CLUSTER_STATE");
  CHECK(f[0].message ==
        "ETCD_INITIAL_CLUSTER_STATE differs: /etc/etcd/etcd.conf:8 \"new\", "
        "/etc/default/etcd:9 \"existing\"");
  CHECK(f[1].file == "/etc/default/etcd");
  CHECK(f[1].key == "ETCD_DEBUG");
  CHECK(f[1].message == "ETCD_DEBUG is set in /etc/default/etcd:2 but not in /etc/etcd/etcd.conf");

  // The same content in both agrees; a missing second file is not compared.
  CHECK(lint_env_files_agree({a, env("/etc/default/etcd", kGoodKaptan1)}).empty());
  EnvFileRead missing;
  missing.path = "/etc/default/etcd";
  CHECK(lint_env_files_agree({a, missing}).empty());

  auto only_a = env("/etc/default/etcd", replace(kGoodKaptan1, "ETCD_ENABLE_V2=\"true\"\n", ""));
  auto g = lint_env_files_agree({a, only_a});
  REQUIRE(g.size() == 1);
  CHECK(g[0].message ==
        "ETCD_ENABLE_V2 is set in /etc/etcd/etcd.conf:9 but not in /etc/default/etcd");
}

TEST_CASE("config_lint: a configured file beside a stock one") {
  auto a = env("/etc/etcd/etcd.conf", kGoodKaptan1);
  auto stock = env("/etc/default/etcd", "# ETCD_NAME=\"hostname\"\n");
  auto f = lint_env_files_agree({a, stock});
  REQUIRE(f.size() == 1);
  CHECK(f[0].file == "/etc/default/etcd");
  CHECK(f[0].message ==
        "sets none of the 9 variables that /etc/etcd/etcd.conf sets: the etcd environment files "
        "disagree");
}

TEST_CASE("config_lint: nothing to check") {
  Config c = ha();
  CheckResult r = evaluate_config_lint(c, {});
  CHECK(r.status == Status::passing);
  CHECK(r.message.find("nothing to check") == 0);
  ConfigLintInputs in;
  EnvFileRead gone;
  gone.path = "/etc/default/etcd";
  in.env_files = {gone};
  r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::passing);
  CHECK(r.message.find("(/etc/default/etcd absent)") != std::string::npos);
  CHECK(r.evidence["absent"][0] == "/etc/default/etcd");
}

TEST_CASE("config_lint: the factory takes cert_warning_days only and does no I/O") {
  YamlMap m(YAML::Load("interval: 30s"), "f", "checks.config_lint");
  Config c = kaptan1();
  c.etcd_env_files = {"/nonexistent/file"};
  c.etcd_env_files_explicit = true;
  TlsFileSet missing;
  missing.what = "etcd client certificate";
  missing.cert_file = "/nonexistent/cert.pem";
  c.tls_files = {missing};
  CHECK(make_config_lint_check(m, c) != nullptr);
  YamlMap days(YAML::Load("cert_warning_days: 30"), "f", "checks.config_lint");
  CHECK(make_config_lint_check(days, c) != nullptr);
  YamlMap bad(YAML::Load("cert_warning_days: -1"), "f", "checks.config_lint");
  CHECK_THROWS_AS(make_config_lint_check(bad, c), ConfigError);
}

TEST_CASE("config_lint: run() reads the files through the worker") {
  YamlMap m(YAML::Load("{}"), "f", "checks.config_lint");
  Config c = kaptan1();
  c.patroni_config = kData + "/patroni/host-mistake.yml";
  c.patroni_etcd_uses_host_key = true;
  c.etcd_env_files = {kData + "/etcd/lab-ha.env"};
  auto check = make_config_lint_check(m, c);

  asio::io_context io;
  Worker worker(1);
  HttpClient http(io);
  CheckContext ctx{http, worker, std::chrono::seconds(3)};
  auto guard = asio::make_work_guard(io);  // the loop idles while the worker reads
  std::optional<CheckResult> out;
  std::string error;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          out = co_await check->run(ctx);
        } catch (const std::exception& e) {
          error = e.what();
        }
        guard.reset();
      },
      asio::detached);
  io.run();
  CHECK(error == "");
  REQUIRE(out.has_value());
  CHECK(out->status == Status::critical);
  // The line number comes from reading patroni.yml on the worker.
  CHECK(out->message.find(c.patroni_config + ":9: etcd.host lists 3 addresses") == 0);
  // YAML, v2, two advertise URLs; and the file's mode when the checkout made it 0644.
  struct stat st {};
  REQUIRE(::stat(c.patroni_config.c_str(), &st) == 0);
  const std::size_t more = (st.st_mode & S_IROTH) ? 5 : 4;
  CHECK(out->message.find("(+" + std::to_string(more) + " more)") != std::string::npos);
  CHECK(out->evidence["findings"].size() == more + 1);
}

TEST_CASE("config_lint: patroni.yml readable by everyone is a warning, group-readable is not") {
  Config c = kaptan1();
  c.etcd_env_files = {"/etc/default/etcd"};
  ConfigLintInputs in;
  in.env_files = {env("/etc/default/etcd", kGoodKaptan1)};
  in.patroni_config_mode = 0644;
  CheckResult r = evaluate_config_lint(c, in);
  CHECK(r.status == Status::warning);
  CHECK(r.message ==
        "/etc/patroni.yml: readable by everyone (mode 0644) though it holds Patroni's REST API "
        "and PostgreSQL passwords: chmod 600 /etc/patroni.yml (or 640 with a group fener is in)");
  for (int m : {0640, 0600, 0400, -1}) {
    in.patroni_config_mode = m;
    CHECK(evaluate_config_lint(c, in).status == Status::passing);
  }

  // Read from the file itself.
  std::string tmpl = "/tmp/fener-lint-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  REQUIRE(fd >= 0);
  ::close(fd);
  ::chmod(tmpl.c_str(), 0604);
  c.patroni_config = tmpl;
  c.etcd_env_files.clear();
  CHECK(read_config_lint_inputs(c).patroni_config_mode == 0604);
  ::chmod(tmpl.c_str(), 0640);
  CHECK(read_config_lint_inputs(c).patroni_config_mode == 0640);
  ::unlink(tmpl.c_str());
}
