// The haproxy check: the servers-state parser on HAProxy 2.6's own answers, the
// haproxy.cfg reader, the judgement, the stats socket client, and one whole run against a
// fake stats socket and a fake etcd.
#include "checks/haproxy.hpp"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "fener_default_rules.hpp"
#include "src/config_error.hpp"
#include "src/haproxy_cfg.hpp"
#include "src/rules.hpp"
#include "tests/unit/support.hpp"

using namespace fener;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using fener::test::FakePatroni;
using fener::test::run_check;

namespace {

std::string read_data(const std::string& rel) {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/" + rel);
  REQUIRE_MESSAGE(in.good(), rel);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const HaproxyServerState* find_server(const std::vector<HaproxyServerState>& v,
                                      const std::string& be, const std::string& srv) {
  for (const auto& s : v)
    if (s.backend == be && s.name == srv) return &s;
  return nullptr;
}

HaproxyServerState server(std::string be, std::string name, std::string addr, int op,
                          int admin = 0) {
  HaproxyServerState s;
  s.backend = std::move(be);
  s.name = std::move(name);
  s.address = std::move(addr);
  s.port = 5432;
  s.op_state = op;
  s.admin_state = admin;
  return s;
}

PatroniMemberInfo member(std::string name, std::string host, std::string role,
                         std::string state = "running") {
  PatroniMemberInfo m;
  m.name = std::move(name);
  m.host = std::move(host);
  m.role = std::move(role);
  m.state = std::move(state);
  return m;
}

// kaptan1 leader at 10.0.0.2, kaptan2 a streaming replica at 10.0.0.3; HAProxy routes
// right: primary -> kaptan1, replicas -> kaptan2.
HaproxyJudgeInput healthy_input() {
  HaproxyJudgeInput in;
  in.socket = "/run/haproxy/admin.sock";
  in.primary_backends = {"primary"};
  in.replica_backends = {"replicas"};
  in.leader = "kaptan1";
  in.members = {member("kaptan1", "10.0.0.2", "primary"),
                member("kaptan2", "10.0.0.3", "replica", "streaming")};
  in.servers = {
      server("primary", "kaptan1", "10.0.0.2", 2), server("primary", "kaptan2", "10.0.0.3", 0),
      server("replicas", "kaptan1", "10.0.0.2", 0), server("replicas", "kaptan2", "10.0.0.3", 2)};
  return in;
}

HaproxyServerState& srv(HaproxyJudgeInput& in, const std::string& be, const std::string& name) {
  for (auto& s : in.servers)
    if (s.backend == be && s.name == name) return s;
  FAIL("no server " << be << "/" << name);
  throw std::logic_error("unreachable");
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fener-haproxy-XXXXXX").string();
    path = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

// A stats socket stand-in on a unix path: reads one command line, records it, answers
// `answer` and closes (as HAProxy does without `prompt`); with silent, never answers.
struct FakeStatsSocket {
  FakeStatsSocket(asio::io_context& io, std::string path_, std::string answer_,
                  bool silent_ = false)
      : path(std::move(path_)),
        answer(std::move(answer_)),
        silent(silent_),
        acceptor(io, asio::local::stream_protocol::endpoint(path)) {
    asio::co_spawn(io, accept_loop(), asio::detached);
  }
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto s = std::make_shared<asio::local::stream_protocol::socket>(
          co_await acceptor.async_accept(asio::use_awaitable));
      asio::co_spawn(acceptor.get_executor(), serve(s), asio::detached);
    }
  }
  asio::awaitable<void> serve(std::shared_ptr<asio::local::stream_protocol::socket> s) {
    asio::streambuf buf;
    co_await asio::async_read_until(*s, buf, "\n", asio::use_awaitable);
    std::istream in(&buf);
    std::string line;
    std::getline(in, line);
    commands.push_back(line);
    if (silent) {
      held.push_back(s);  // keep it open and quiet
      co_return;
    }
    const auto b = asio::buffer(answer);
    co_await asio::async_write(*s, b, asio::use_awaitable);
    s->close();
  }
  std::string path, answer;
  bool silent;
  asio::local::stream_protocol::acceptor acceptor;
  std::vector<std::string> commands;
  std::vector<std::shared_ptr<asio::local::stream_protocol::socket>> held;
};

StatsSocketAnswer ask(asio::io_context& io, const std::string& socket, Duration timeout) {
  StatsSocketAnswer out;
  bool done = false;
  asio::co_spawn(io, stats_socket_command(socket, "show servers state", timeout),
                 [&](std::exception_ptr e, StatsSocketAnswer a) {
                   REQUIRE(!e);
                   out = std::move(a);
                   done = true;
                   io.stop();
                 });
  io.run_for(5s);
  REQUIRE(done);
  return out;
}

}  // namespace

// ---------------------------------------------------------------- servers state parser

TEST_CASE("servers state: HAProxy 2.6's answer in the lab parses by column name") {
  auto p = parse_servers_state(read_data("haproxy/servers-state-2.6-healthy.txt"));
  REQUIRE(p.error == "");
  REQUIRE(p.servers.size() == 8);
  const auto* a = find_server(p.servers, "primary_httpchk", "kaptan1");
  REQUIRE(a);
  CHECK(a->address == "127.0.5.2");
  CHECK(a->port == 5432);
  CHECK(a->op_state == 2);
  CHECK(a->serving());
  const auto* b = find_server(p.servers, "primary_httpchk", "kaptan2");
  REQUIRE(b);
  CHECK(b->op_state == 0);
  CHECK_FALSE(b->serving());
  // No agent listens in the lab: both agent-design servers stay UP on the TCP check.
  CHECK(find_server(p.servers, "primary", "kaptan1")->serving());
  CHECK(find_server(p.servers, "primary", "kaptan2")->serving());
  CHECK(find_server(p.servers, "replicas_httpchk", "kaptan2")->serving());
}

TEST_CASE("servers state: MAINT and DRAIN set on the stats socket, and who set them") {
  auto p = parse_servers_state(read_data("haproxy/servers-state-2.6-maint-drain.txt"));
  REQUIRE(p.error == "");
  const auto* m = find_server(p.servers, "primary_httpchk", "kaptan2");  // disable server
  REQUIRE(m);
  CHECK(m->admin_state == 1);
  CHECK(m->maint());
  CHECK(haproxy_admin_phrase(*m) == "MAINT (forced: stats socket or agent)");
  const auto* d =
      find_server(p.servers, "replicas_httpchk", "kaptan1");  // set server ... state drain
  REQUIRE(d);
  CHECK(d->admin_state == 8);
  CHECK(d->drain());
  CHECK(haproxy_admin_phrase(*d) == "DRAIN (forced: stats socket or agent)");
  HaproxyServerState c = *m;
  c.admin_state = 4;
  CHECK(haproxy_admin_phrase(c) == "MAINT (configuration: disabled)");
  c.admin_state = 0;
  c.weight = 0;
  CHECK(haproxy_admin_phrase(c) == "DRAIN (weight 0)");
  CHECK(haproxy_admin_phrase(*find_server(p.servers, "primary", "kaptan1")) == "");
}

TEST_CASE("servers state: anything else is an error, never a crash") {
  CHECK(parse_servers_state("").error == "not a servers state (format version 1) answer: \"\"");
  CHECK(parse_servers_state("Permission denied\n\n").error ==
        "not a servers state (format version 1) answer: \"Permission denied\"");
  CHECK(parse_servers_state("1\n2 primary 1 kaptan1 10.0.0.2 2 0\n").error ==
        "servers state without its \"# be_id be_name ...\" header");
  CHECK(parse_servers_state("1\n# be_id be_name srv_id srv_name\n2 primary 1 kaptan1\n").error ==
        "servers state header lacks the column srv_addr");
  CHECK(parse_servers_state("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state "
                            "srv_admin_state\n2 primary 1 kaptan1 10.0.0.2 up 0\n")
            .error == "malformed servers state line: \"2 primary 1 kaptan1 10.0.0.2 up 0\"");
  CHECK(parse_servers_state("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state "
                            "srv_admin_state\n2 primary 1 kaptan1\n")
            .error == "malformed servers state line: \"2 primary 1 kaptan1\"");
  // No backends with servers at all is a valid, empty answer.
  auto empty = parse_servers_state("1\n# be_id be_name srv_id srv_name srv_addr\n\n");
  CHECK(empty.error == "");
  CHECK(empty.servers.empty());
}

// ---------------------------------------------------------------- haproxy.cfg reader

TEST_CASE("haproxy.cfg: the lab's file gives the socket and each section's role") {
  const HaproxyCfg c = parse_haproxy_cfg(read_data("haproxy/lab-haproxy.cfg"));
  CHECK(c.stats_socket == "/run/fener-lab/ha/haproxy.sock");
  REQUIRE(c.sections.size() == 4);
  CHECK(c.sections[0].name == "primary");
  CHECK(c.sections[0].role == BackendRole::primary);
  CHECK(c.sections[0].role_reason == "agent-send \"primary\"");
  REQUIRE(c.sections[0].servers.size() == 2);
  CHECK(c.sections[0].servers[1].name == "kaptan2");
  CHECK(c.sections[0].servers[1].address == "127.0.5.3:5432");
  CHECK(c.sections[1].role == BackendRole::replica);
  CHECK(c.sections[2].role_reason == "option httpchk OPTIONS /primary");
  CHECK(c.backends_with(BackendRole::primary) ==
        std::vector<std::string>{"primary", "primary_httpchk"});
  CHECK(c.backends_with(BackendRole::replica) ==
        std::vector<std::string>{"replicas", "replicas_httpchk"});
}

TEST_CASE("haproxy.cfg: the production example in conf/haproxy is recognised") {
  const HaproxyCfg c = parse_haproxy_cfg(read_data("../../conf/haproxy/haproxy.cfg"));
  CHECK(c.stats_socket == "/run/haproxy/admin.sock");
  CHECK(c.backends_with(BackendRole::primary) == std::vector<std::string>{"primary"});
  CHECK(c.backends_with(BackendRole::replica) == std::vector<std::string>{"replicas"});
}

TEST_CASE("haproxy.cfg: Patroni's usual paths, defaults, quoting and comments") {
  const HaproxyCfg c = parse_haproxy_cfg(R"(global
    stats socket ipv4@127.0.0.1:9999 level admin   # TCP form
    stats socket /run/second.sock
defaults
    mode tcp
    option httpchk GET /read-only
frontend fe
    bind :5000
    option httpchk OPTIONS /master  # a frontend has no servers; ignored
backend master
    option httpchk GET /master HTTP/1.1
    server pg1 10.0.0.2:5432 check port 8008
backend writes
    option httpchk
    http-check send meth GET uri /read-write?lag=0
    server pg1 10.0.0.2:5432 check port 8008
listen reads
    bind 10.0.0.1:5001
    server "pg 2" 10.0.0.3:5432 check  # quoted name with a blank
listen leader_agent
    default-server agent-check agent-port 8010 agent-send 'leader\n'
    server pg1 10.0.0.2:5432 check
listen stats
    mode http
    stats enable
defaults
    mode tcp
listen plain
    server pg1 10.0.0.2:5432
)");
  CHECK(c.stats_socket == "ipv4@127.0.0.1:9999");
  CHECK(normalize_stats_socket(c.stats_socket) == "127.0.0.1:9999");
  CHECK(stats_socket_is_tcp("127.0.0.1:9999"));
  CHECK_FALSE(stats_socket_is_tcp("/run/haproxy/admin.sock"));
  CHECK(normalize_stats_socket("unix@/run/a.sock") == "/run/a.sock");
  REQUIRE(c.sections.size() == 6);
  CHECK(c.sections[0].name == "master");
  CHECK(c.sections[0].role == BackendRole::primary);
  CHECK(c.sections[0].role_reason == "option httpchk GET /master");
  CHECK(c.sections[1].role == BackendRole::primary);
  CHECK(c.sections[1].role_reason == "http-check send uri /read-write?lag=0");
  CHECK(c.sections[2].role == BackendRole::replica);
  CHECK(c.sections[2].role_reason == "option httpchk GET /read-only (from defaults)");
  REQUIRE(c.sections[2].servers.size() == 1);
  CHECK(c.sections[2].servers[0].name == "pg 2");
  // Single quotes keep the backslash: HAProxy sends "leader\n" literally; still leader.
  CHECK(c.sections[3].role == BackendRole::primary);
  // The stats section inherits the first defaults' check path, but has no servers.
  CHECK(c.sections[4].servers.empty());
  // A second defaults section resets the inherited health check.
  CHECK(c.sections[5].role == BackendRole::unknown);
  CHECK(haproxy_cfg_words(R"(a "b c" 'd#e' f\ g # h)") ==
        std::vector<std::string>{"a", "b c", "d#e", "f g"});
  CHECK(haproxy_cfg_words(R"(agent-send "primary\n")") ==
        std::vector<std::string>{"agent-send", "primary\n"});
  CHECK(role_of_patroni_path("/replica?lag=10MB") == BackendRole::replica);
  CHECK(role_of_patroni_path("/health") == BackendRole::unknown);
}

// ---------------------------------------------------------------- judgement

TEST_CASE("judge: writes to the leader only and reads to the healthy replica pass") {
  auto r = judge_haproxy(healthy_input());
  CHECK(r.status == Status::passing);
  CHECK(r.message == "HAProxy routes primary -> kaptan1 (leader); replicas -> kaptan2");
  CHECK(r.evidence["socket"] == "answered");
  CHECK(r.evidence["leader"] == "kaptan1");
  CHECK(r.evidence["backends"]["primary"]["servers"][0]["member"] == "kaptan1");
}

TEST_CASE("judge: servers map to members by address when their names differ") {
  auto in = healthy_input();
  for (auto& s : in.servers) s.name = s.name == "kaptan1" ? "pg-a" : "pg-b";
  auto r = judge_haproxy(in);
  CHECK(r.status == Status::passing);
  CHECK(r.message == "HAProxy routes primary -> pg-a (leader); replicas -> pg-b");
}

TEST_CASE("judge: the primary backend is critical with no, several or the wrong server") {
  auto in = healthy_input();
  srv(in, "primary", "kaptan1").op_state = 0;
  auto r = judge_haproxy(in);
  CHECK(r.status == Status::critical);
  CHECK(r.message == "primary backend primary has no server UP (kaptan1 DOWN, kaptan2 DOWN)");

  in = healthy_input();
  srv(in, "primary", "kaptan2").op_state = 2;
  r = judge_haproxy(in);
  CHECK(r.status == Status::critical);
  CHECK(r.message ==
        "primary backend primary has 2 servers UP (kaptan1, kaptan2): writes may go to a replica");

  in = healthy_input();
  in.leader = "kaptan2";  // failover happened; HAProxy still sends writes to kaptan1
  in.members[0].role = "replica";
  in.members[1].role = "primary";
  r = judge_haproxy(in);
  CHECK(r.status == Status::critical);
  CHECK(r.message.find(
            "primary backend primary sends writes to kaptan1, not to the leader kaptan2") == 0);

  in = healthy_input();
  in.primary_backends = {"pgsql_rw"};
  r = judge_haproxy(in);
  CHECK(r.status == Status::critical);
  CHECK(r.message == "HAProxy has no backend pgsql_rw (configured as primary)");
}

TEST_CASE("judge: replica backends and MAINT/DRAIN servers warn") {
  auto in = healthy_input();
  srv(in, "replicas", "kaptan2").op_state = 0;
  auto r = judge_haproxy(in);
  CHECK(r.status == Status::warning);
  CHECK(r.message == "replica backend replicas has no server UP (kaptan1 DOWN, kaptan2 DOWN)");

  // The leader may serve reads too (/read-only); the missing replica still warns.
  in = healthy_input();
  srv(in, "replicas", "kaptan1").op_state = 2;
  srv(in, "replicas", "kaptan2").admin_state = 8;
  r = judge_haproxy(in);
  CHECK(r.status == Status::warning);
  CHECK(r.message ==
        "replica backend replicas lacks healthy replica kaptan2 (DRAIN); replicas/kaptan2 in DRAIN "
        "(forced: stats socket or agent)");

  // A replica that is not healthy (or tagged noloadbalance) is not expected there.
  in = healthy_input();
  srv(in, "replicas", "kaptan1").op_state = 2;
  srv(in, "replicas", "kaptan2").op_state = 0;
  in.members[1].state = "starting";
  CHECK(judge_haproxy(in).status == Status::passing);
  in.members[1].state = "streaming";
  in.members[1].noloadbalance = true;
  CHECK(judge_haproxy(in).status == Status::passing);

  in = healthy_input();
  srv(in, "primary", "kaptan2").admin_state = 1;  // DOWN anyway, but someone disabled it
  r = judge_haproxy(in);
  CHECK(r.status == Status::warning);
  CHECK(r.message == "primary/kaptan2 in MAINT (forced: stats socket or agent)");
  CHECK(r.evidence["backends"]["primary"]["servers"][1]["state"] == "MAINT");
}

TEST_CASE("judge: without the leader, unknown; leader-independent faults stay critical") {
  auto in = healthy_input();
  in.leader.reset();
  in.leader_unknown_reason = "no etcd endpoint answered";
  auto r = judge_haproxy(in);
  CHECK(r.status == Status::unknown);
  CHECK(r.message ==
        "primary backend primary serves kaptan1; the leader is unknown: no etcd endpoint answered");
  CHECK(r.evidence["leader"].is_null());
  CHECK(r.evidence["leader_unknown"] == "no etcd endpoint answered");

  srv(in, "primary", "kaptan2").op_state = 2;
  r = judge_haproxy(in);
  CHECK(r.status == Status::critical);

  in = healthy_input();
  in.leader.reset();
  in.leader_unknown_reason = "etcd holds no leader key for liman";
  in.primary_backends.clear();
  r = judge_haproxy(in);
  CHECK(r.status == Status::unknown);
  CHECK(r.message == "the leader is unknown: etcd holds no leader key for liman");
}

TEST_CASE("members from the DCS: conn_url host, role, state, noloadbalance") {
  const json m = json::parse(R"({
    "kaptan1": {"conn_url": "postgres://10.0.0.2:5432/postgres", "role": "primary",
                "state": "running", "api_url": "http://10.0.0.2:8008/patroni"},
    "kaptan2": {"conn_url": "postgres://10.0.0.3:5432/postgres", "role": "replica",
                "state": "streaming", "tags": {"noloadbalance": true}},
    "odd": "not an object"})");
  auto v = patroni_members_from_dcs(m);
  REQUIRE(v.size() == 3);
  CHECK(v[0].name == "kaptan1");
  CHECK(v[0].host == "10.0.0.2");
  CHECK(v[0].role == "primary");
  CHECK(v[1].noloadbalance);
  CHECK(v[2].host == "");
}

// ---------------------------------------------------------------- socket and whole run

TEST_CASE("stats socket client: answer, refused, missing, silent peer") {
  TempDir d;
  {
    asio::io_context io;
    FakeStatsSocket fake(io, (d.path / "ok.sock").string(), "1\n# be_id\n");
    auto a = ask(io, fake.path, 2000ms);
    CHECK(a.error == StatsSocketAnswer::Error::none);
    CHECK(a.text == "1\n# be_id\n");
    CHECK(fake.commands == std::vector<std::string>{"show servers state"});
  }
  {
    // A socket file nobody listens on any more (HAProxy killed): refused.
    asio::io_context io;
    std::string stale = (d.path / "stale.sock").string();
    { asio::local::stream_protocol::acceptor a(io, asio::local::stream_protocol::endpoint(stale)); }
    auto a = ask(io, stale, 2000ms);
    CHECK(a.error == StatsSocketAnswer::Error::refused);
    CHECK(to_string(a.error) == "refused");
  }
  {
    asio::io_context io;
    auto a = ask(io, (d.path / "none.sock").string(), 2000ms);
    CHECK(a.error == StatsSocketAnswer::Error::missing);
  }
  {
    asio::io_context io;
    FakeStatsSocket fake(io, (d.path / "quiet.sock").string(), "", /*silent=*/true);
    auto a = ask(io, fake.path, 200ms);
    CHECK(a.error == StatsSocketAnswer::Error::timeout);
    CHECK(a.error_text == "no complete answer within 200ms");
  }
}

TEST_CASE("haproxy check: one run against a fake stats socket and a fake etcd") {
  TempDir d;
  asio::io_context io;
  const std::string state = read_data("haproxy/servers-state-2.6-healthy.txt");
  FakeStatsSocket sock(io, (d.path / "admin.sock").string(), state);
  FakePatroni etcd(io);  // serves canned bodies by path: stands in for etcd's v2 API
  etcd.bodies["/v2/keys/service/?quorum=true"] =
      R"({"action":"get","node":{"key":"/service","dir":true,"nodes":[{"key":"/service/liman","dir":true}]}})";
  etcd.bodies["/v2/keys/service/liman/?recursive=true&quorum=true"] = R"({"action":"get","node":{
    "key":"/service/liman","dir":true,"nodes":[
      {"key":"/service/liman/leader","value":"kaptan1"},
      {"key":"/service/liman/members","dir":true,"nodes":[
        {"key":"/service/liman/members/kaptan1","value":"{\"conn_url\":\"postgres://127.0.5.2:5432/postgres\",\"role\":\"primary\",\"state\":\"running\"}"},
        {"key":"/service/liman/members/kaptan2","value":"{\"conn_url\":\"postgres://127.0.5.3:5432/postgres\",\"role\":\"replica\",\"state\":\"streaming\"}"}]}]}})";

  Config cfg;
  cfg.etcd_endpoints = {"http://127.0.0.1:1", etcd.url()};  // the first refuses: rotate
  YamlMap params(YAML::Load("socket: " + sock.path +
                            "\nprimary_backends: [primary_httpchk]\n"
                            "replica_backends: [replicas_httpchk]\n"),
                 "fener.yaml", "checks.haproxy");
  auto check = make_haproxy_check(params, cfg);
  params.finish();
  auto r = run_check(io, *check, Duration{2000});
  REQUIRE(r);
  CHECK(r->status == Status::passing);
  CHECK(r->message ==
        "HAProxy routes primary_httpchk -> kaptan1 (leader); replicas_httpchk -> kaptan2");
  CHECK(r->evidence["etcd"]["scope"] == "liman");
  CHECK(etcd.requests["/v2/keys/service/?quorum=true"] == 1);

  // The agent backends: both servers UP (no agent in the lab): critical.
  asio::io_context io2;
  FakeStatsSocket sock2(io2, (d.path / "admin2.sock").string(), state);
  FakePatroni etcd2(io2);
  etcd2.bodies = etcd.bodies;
  cfg.etcd_endpoints = {etcd2.url()};
  cfg.scope = "liman";
  YamlMap p2(
      YAML::Load("socket: " + sock2.path + "\nprimary_backends: primary\nreplica_backends: []\n"),
      "fener.yaml", "checks.haproxy");
  auto check2 = make_haproxy_check(p2, cfg);
  auto r2 = run_check(io2, *check2, Duration{2000});
  REQUIRE(r2);
  CHECK(r2->status == Status::critical);
  CHECK(r2->message ==
        "primary backend primary has 2 servers UP (kaptan1, kaptan2): writes may go to a replica");
  CHECK(etcd2.requests.count("/v2/keys/service/?quorum=true") == 0);  // scope configured
}

TEST_CASE("haproxy check: HAProxy not running is critical and says so in the evidence") {
  TempDir d;
  asio::io_context io;
  Config cfg;
  cfg.haproxy.socket = (d.path / "admin.sock").string();
  cfg.haproxy.primary_backends = {"primary"};
  YamlMap params(YAML::Node(), "", "checks.haproxy");
  auto check = make_haproxy_check(params, cfg);
  auto r = run_check(io, *check, Duration{1000});
  REQUIRE(r);
  CHECK(r->status == Status::critical);
  CHECK(r->message ==
        "HAProxy is not running: its stats socket " + cfg.haproxy.socket + " does not exist");
  CHECK(r->evidence["socket"] == "missing");
  CHECK(r->evidence["stats_socket"] == cfg.haproxy.socket);
}

TEST_CASE("the built-in haproxy_down rule fires on HAProxy not running, nothing else") {
  Config cfg;
  CheckSpec spec;
  spec.name = spec.type = "haproxy";
  cfg.checks.push_back(spec);
  YAML::Node builtin = load_yaml_string(kDefaultRulesYaml, kDefaultRulesName);
  for (const auto& kv : builtin["rules"])
    cfg.rules.push_back({kv.first.Scalar(), kv.second, kDefaultRulesName, "rules", true});
  auto rules = build_rules(cfg);
  const Rule* down = nullptr;
  for (const auto& r : rules)
    if (r.name == "haproxy_down") down = &r;
  REQUIRE(down);
  REQUIRE(down->ladder.size() == 1);
  CHECK(down->ladder[0].remedy == "service_restart");
  auto failed = CheckResult::make(Status::critical, "HAProxy is not running: ...",
                                  {{"socket", "refused"}, {"stats_socket", "/run/a.sock"}});
  CHECK(trigger_matches(down->when, failed));
  failed.evidence["socket"] = "missing";
  CHECK(trigger_matches(down->when, failed));
  // Misrouting is critical too, but a restart of HAProxy does not fix it.
  auto misrouted = judge_haproxy(healthy_input());
  misrouted.status = Status::critical;
  CHECK_FALSE(trigger_matches(down->when, misrouted));
  failed.status = Status::unknown;
  failed.evidence["socket"] = "timeout";
  CHECK_FALSE(trigger_matches(down->when, failed));
}

TEST_CASE("haproxy check parameters: errors name the key and what is expected") {
  Config cfg;
  auto error_of = [&](const std::string& yaml) -> std::string {
    YamlMap params(YAML::Load(yaml), "fener.yaml", "checks.haproxy");
    try {
      make_haproxy_check(params, cfg);
      params.finish();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  };
  CHECK(error_of("primary_backends: [a]\n") ==
        "fener.yaml:1:1: checks.haproxy: no HAProxy stats socket known (none in haproxy.cfg); set "
        "`socket:` or haproxy.socket, e.g. /run/haproxy/admin.sock");
  CHECK(error_of("socket: admin.sock\n") ==
        "fener.yaml:1:9: checks.haproxy.socket: expected a unix socket path such as "
        "/run/haproxy/admin.sock or IP:PORT, got \"admin.sock\"");
  CHECK(error_of("socket: /run/a.sock\n") ==
        "fener.yaml:1:1: checks.haproxy: no primary or replica backends known; list them under "
        "primary_backends: and replica_backends:");
  CHECK(error_of("socket: /run/a.sock\nprimary_backends: [a]\nreplica_backends: [a]\n") ==
        "fener.yaml:3:19: checks.haproxy.replica_backends: \"a\" is listed as primary and as "
        "replica backend");
  CHECK(error_of("socket: 127.0.0.1:9999\nprimary_backends: [a]\n") == "(no error)");
  CHECK(error_of("socket: /run/a.sock\nprimary_backends: [a]\nprimary_backend: [b]\n")
            .find("fener.yaml:3:1: checks.haproxy.primary_backend: unknown key") == 0);
}
