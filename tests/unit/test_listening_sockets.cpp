#include "checks/listening_sockets.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

using namespace fener;

namespace {

ListeningSocket sock(std::string address, int port, int pid = 0, std::string comm = "",
                     std::uint64_t inode = 0) {
  ListeningSocket s;
  s.address = std::move(address);
  s.port = port;
  s.inode = inode;
  s.pid = pid;
  s.comm = std::move(comm);
  return s;
}

ListenScan scan_of(std::vector<ListeningSocket> sockets) {
  ListenScan s;
  s.sockets = std::move(sockets);
  s.tables_read = 2;
  return s;
}

// kaptan2 of the guide's lab.
Config lab_kaptan2() {
  Config c;
  c.node_name = "kaptan2";
  c.node_address = "127.0.1.3";
  c.patroni_url = "http://127.0.1.3:8008";
  c.pg_listen = "127.0.1.3:5432";
  c.pg_data_dir = "/data/kaptan2";
  c.etcd_endpoints = {"http://127.0.1.1:2379", "http://127.0.1.2:2379", "http://127.0.1.3:2379"};
  c.etcd_members = {{"ha", {"http://127.0.1.1:2380"}, {}},
                    {"kaptan1", {"http://127.0.1.2:2380"}, {}},
                    {"kaptan2", {"http://127.0.1.3:2380"}, {"http://127.0.1.3:2379"}}};
  return c;
}

std::vector<ListeningSocket> healthy_kaptan2() {
  return {sock("127.0.1.3", 2379, 10, "etcd"), sock("127.0.1.3", 2380, 10, "etcd"),
          sock("127.0.1.3", 5432, 20, "postgres"), sock("127.0.1.3", 8008, 30, "patroni"),
          sock("127.0.1.1", 2379, 40, "etcd")};
}

YAML::Node yaml(const std::string& text) {
  return YAML::Load(text);
}

std::vector<ExpectedListener> parse(const std::string& text, const Config& c = Config{}) {
  YamlMap m(yaml(text), "fener.yaml", "checks.listening_sockets");
  return parse_listening_sockets_params(m, c);
}

}  // namespace

TEST_CASE("listening_sockets: defaults for a database node of the lab") {
  auto e = default_expected_listeners(lab_kaptan2());
  REQUIRE(e.size() == 4);
  CHECK(e[0].name == "etcd-client");
  CHECK(e[0].address == "127.0.1.3");
  CHECK(e[0].port == 2379);
  CHECK(e[0].processes == std::vector<std::string>{"etcd"});
  CHECK(e[1].name == "etcd-peer");
  CHECK(e[1].port == 2380);
  CHECK(e[2].name == "postgresql");
  CHECK(e[2].address == "127.0.1.3");
  CHECK(e[2].port == 5432);
  CHECK(e[2].processes == std::vector<std::string>{"postgres"});
  CHECK(e[3].name == "patroni-api");
  CHECK(e[3].port == 8008);
  CHECK(e[3].processes == std::vector<std::string>{"patroni", "python3"});
}

TEST_CASE("listening_sockets: defaults for the HAProxy node (etcd only)") {
  Config c;
  c.node_name = "ha";
  c.node_address = "127.0.1.1";
  c.etcd_members = {{"ha", {"http://127.0.1.1:2380"}, {"http://127.0.1.1:2379"}},
                    {"kaptan1", {"http://127.0.1.2:2380"}, {}}};
  auto e = default_expected_listeners(c);
  REQUIRE(e.size() == 2);
  CHECK(e[0].address == "127.0.1.1");
  CHECK(e[1].address == "127.0.1.1");
}

TEST_CASE("listening_sockets: etcd ports come from this member's URLs") {
  Config c;
  c.node_address = "10.0.0.2";
  c.etcd_members = {{"x", {"http://10.0.0.2:12380"}, {"http://10.0.0.2:12379"}}};
  auto e = default_expected_listeners(c);
  REQUIRE(e.size() == 2);
  CHECK(e[0].port == 12379);
  CHECK(e[1].port == 12380);
}

TEST_CASE("listening_sockets: no etcd expected when every endpoint is elsewhere") {
  Config c;
  c.node_address = "10.0.0.9";
  c.etcd_endpoints = {"http://10.0.0.1:2379", "http://10.0.0.2:2379"};
  c.patroni_url = "http://10.0.0.9:8008";
  auto e = default_expected_listeners(c);
  REQUIRE(e.size() == 2);
  CHECK(e[0].name == "postgresql");
  CHECK(e[1].name == "patroni-api");
}

TEST_CASE("listening_sockets: endpoints and no node address expect etcd on any address") {
  Config c;
  c.etcd_endpoints = {"http://10.0.0.1:2379"};
  auto e = default_expected_listeners(c);
  REQUIRE(e.size() == 2);
  CHECK(e[0].address.empty());
  CHECK(e[0].port == 2379);
}

TEST_CASE("listening_sockets: nothing configured, nothing expected") {
  CHECK(default_expected_listeners(Config{}).empty());
  CheckResult r = evaluate_listening_sockets({}, scan_of({}));
  CHECK(r.status == Status::passing);
  CHECK(r.message.find("no listeners expected") != std::string::npos);
}

TEST_CASE("listening_sockets: params") {
  Config c = lab_kaptan2();
  auto e = parse(R"(
expect:
  - {name: pg, port: 5432, process: postgres}
  - {name: api, address: "::1", port: 8008, process: [patroni, python3]}
  - {port: 6432, process: "pgbouncer, pgb"}
  - {address: "[fd00::2]", port: 9100}
)",
                 c);
  REQUIRE(e.size() == 4);
  CHECK(e[0].name == "pg");
  CHECK(e[0].address == "127.0.1.3");  // the node's address
  CHECK(e[0].processes == std::vector<std::string>{"postgres"});
  CHECK(e[1].address == "::1");
  CHECK(e[1].processes == std::vector<std::string>{"patroni", "python3"});
  CHECK(e[2].name == "pgbouncer");
  CHECK(e[2].processes == std::vector<std::string>{"pgbouncer", "pgb"});
  CHECK(e[3].name == "port 9100");
  CHECK(e[3].address == "fd00::2");
  CHECK(e[3].processes.empty());
}

TEST_CASE("listening_sockets: params absent means defaults") {
  auto e = parse("interval: 5s\n", lab_kaptan2());
  CHECK(e.size() == 4);
}

TEST_CASE("listening_sockets: bad params are ConfigErrors") {
  CHECK_THROWS_WITH_AS(parse("expect: []\n"), doctest::Contains("is empty"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("expect:\n  - {name: x}\n"), doctest::Contains("port"), ConfigError);
  CHECK_THROWS_AS(parse("expect:\n  - {port: 70000}\n"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("expect:\n  - {port: 1, address: localhost}\n"),
                       doctest::Contains("expected an IP address"), ConfigError);
  CHECK_THROWS_AS(parse("expect:\n  - {port: 1, proces: etcd}\n"), ConfigError);  // typo
  CHECK_THROWS_AS(parse("expect: 5432\n"), ConfigError);
  try {
    parse("expect:\n  - {port: 1, address: nope}\n");
  } catch (const ConfigError& err) {
    CHECK(err.key() == "checks.listening_sockets.expect[0].address");
  }
}

TEST_CASE("listening_sockets: all present is passing") {
  auto e = default_expected_listeners(lab_kaptan2());
  CheckResult r = evaluate_listening_sockets(e, scan_of(healthy_kaptan2()));
  CHECK(r.status == Status::passing);
  CHECK(r.message.find("4 expected listeners present") != std::string::npos);
  CHECK(r.message.find("postgresql 127.0.1.3:5432 (postgres)") != std::string::npos);
  REQUIRE(r.evidence["listeners"].size() == 4);
  CHECK(r.evidence["listeners"][2]["state"] == "present");
  CHECK(r.evidence["listeners"][2]["found"]["pid"] == 20);
}

TEST_CASE("listening_sockets: a missing listener is critical and named") {
  auto e = default_expected_listeners(lab_kaptan2());
  auto sockets = healthy_kaptan2();
  sockets.erase(sockets.begin() + 2);  // PostgreSQL down, as after the chmod 755 outage
  CheckResult r = evaluate_listening_sockets(e, scan_of(sockets));
  CHECK(r.status == Status::critical);
  CHECK(r.message == "postgresql 127.0.1.3:5432 not listening");
  CHECK(r.evidence["listeners"][2]["state"] == "missing");
  CHECK(r.evidence["listeners"][2]["found"].is_null());
}

TEST_CASE("listening_sockets: several missing are all named, with where the port is open") {
  auto e = default_expected_listeners(lab_kaptan2());
  std::vector<ListeningSocket> sockets = {sock("127.0.0.1", 2379, 10, "etcd"),
                                          sock("127.0.1.3", 5432, 20, "postgres"),
                                          sock("127.0.1.3", 8008, 30, "patroni")};
  CheckResult r = evaluate_listening_sockets(e, scan_of(sockets));
  CHECK(r.status == Status::critical);
  CHECK(r.message ==
        "etcd-client 127.0.1.3:2379 not listening (port 2379 is open on 127.0.0.1); "
        "etcd-peer 127.0.1.3:2380 not listening");
}

TEST_CASE("listening_sockets: wildcard and mapped listeners count") {
  auto e = default_expected_listeners(lab_kaptan2());
  std::vector<ListeningSocket> sockets = {
      sock("0.0.0.0", 2379, 10, "etcd"), sock("::", 2380, 10, "etcd"),
      sock("::ffff:127.0.1.3", 5432, 20, "postgres"), sock("0.0.0.0", 8008, 30, "python3")};
  CheckResult r = evaluate_listening_sockets(e, scan_of(sockets));
  CHECK(r.status == Status::passing);
}

TEST_CASE("listening_sockets: a listener on another node's address does not count") {
  std::vector<ExpectedListener> e = {{"postgresql", "127.0.1.3", 5432, {"postgres"}}};
  CheckResult r = evaluate_listening_sockets(e, scan_of({sock("127.0.1.2", 5432, 20, "postgres")}));
  CHECK(r.status == Status::critical);
  CHECK(r.message.find("(port 5432 is open on 127.0.1.2)") != std::string::npos);
}

TEST_CASE("listening_sockets: another process on the port is a warning") {
  std::vector<ExpectedListener> e = {{"postgresql", "127.0.1.3", 5432, {"postgres"}},
                                     {"patroni-api", "127.0.1.3", 8008, {"patroni", "python3"}}};
  CheckResult r = evaluate_listening_sockets(
      e, scan_of({sock("127.0.1.3", 5432, 77, "nc"), sock("127.0.1.3", 8008, 30, "python3")}));
  CHECK(r.status == Status::warning);
  CHECK(r.message == "postgresql 127.0.1.3:5432 is held by nc (pid 77), expected postgres");
  CHECK(r.evidence["listeners"][0]["state"] == "wrong_process");
  CHECK(r.evidence["listeners"][1]["state"] == "present");
}

TEST_CASE("listening_sockets: comm is compared as the kernel truncates it") {
  std::vector<ExpectedListener> e = {{"x", "10.0.0.1", 1, {"a-very-long-process-name"}}};
  CheckResult r =
      evaluate_listening_sockets(e, scan_of({sock("10.0.0.1", 1, 5, "a-very-long-pro")}));
  CHECK(r.status == Status::passing);
}

TEST_CASE("listening_sockets: unknown owner is not judged") {
  std::vector<ExpectedListener> e = {{"etcd-client", "127.0.1.1", 2379, {"etcd"}}};
  CheckResult r = evaluate_listening_sockets(e, scan_of({sock("127.0.1.1", 2379)}));
  CHECK(r.status == Status::passing);
  CHECK(r.evidence["listeners"][0]["state"] == "present_owner_unknown");
}

TEST_CASE("listening_sockets: any address when the node address is unknown") {
  std::vector<ExpectedListener> e = {{"postgresql", "", 5432, {}}};
  CHECK(evaluate_listening_sockets(e, scan_of({sock("10.1.1.1", 5432)})).status == Status::passing);
  CheckResult r = evaluate_listening_sockets(e, scan_of({}));
  CHECK(r.status == Status::critical);
  CHECK(r.message == "postgresql *:5432 not listening");
}

TEST_CASE("listening_sockets: unreadable tables are unknown, never critical") {
  std::vector<ExpectedListener> e = {{"postgresql", "127.0.1.3", 5432, {}}};
  ListenScan none;
  none.notes = {"cannot read /proc/net/tcp: Permission denied"};
  none.complete = false;
  CheckResult r = evaluate_listening_sockets(e, none);
  CHECK(r.status == Status::unknown);
  CHECK(r.message.find("/proc/net/tcp: Permission denied") != std::string::npos);

  ListenScan half = scan_of({});
  half.tables_read = 1;
  half.complete = false;
  half.notes = {"cannot read /proc/net/tcp6: Input/output error"};
  CheckResult h = evaluate_listening_sockets(e, half);
  CHECK(h.status == Status::unknown);
  CHECK(h.message.find("not listening, but cannot read /proc/net/tcp6") != std::string::npos);
}

TEST_CASE("listening_sockets: format_endpoint") {
  CHECK(format_endpoint("127.0.1.3", 5432) == "127.0.1.3:5432");
  CHECK(format_endpoint("::1", 5432) == "[::1]:5432");
  CHECK(format_endpoint("", 5432) == "*:5432");
}

TEST_CASE("listening_sockets: the factory builds a check without I/O") {
  YamlMap m(yaml("expect:\n  - {port: 5432}\n"), "f", "checks.x");
  auto check = make_listening_sockets_check(m, Config{});
  CHECK(check != nullptr);
  CHECK_NOTHROW(m.finish());  // every key was read
}

namespace {

// Runs one probe on a private loop, as the scheduler would.
CheckResult run_check(Check& check) {
  asio::io_context io;
  Worker worker(1);
  HttpClient http(io);
  CheckContext ctx{http, worker, std::chrono::seconds(3)};
  auto guard = asio::make_work_guard(io);  // the loop idles while the worker scans
  std::optional<CheckResult> out;
  std::string error;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          out = co_await check.run(ctx);
        } catch (const std::exception& e) {
          error = e.what();
        }
        guard.reset();
      },
      asio::detached);
  io.run();
  CHECK(error == "");
  REQUIRE(out.has_value());
  return *out;
}

// A listening socket on 127.0.0.1 at a free port, owned by this test process.
struct TestListener {
  int fd = -1;
  int port = 0;
  TestListener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 1) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~TestListener() { ::close(fd); }
};

std::string own_comm() {
  std::ifstream in("/proc/self/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

}  // namespace

TEST_CASE("listening_sockets: run() scans this machine through the worker") {
  TestListener l;
  const std::string comm = own_comm();
  std::string text =
      "expect:\n  - {name: mine, address: 127.0.0.1, port: " + std::to_string(l.port) +
      ", process: " + comm + "}\n";
  YamlMap m(YAML::Load(text), "f", "checks.listening_sockets");
  auto check = make_listening_sockets_check(m, Config{});
  CheckResult r = run_check(*check);
  CHECK(r.status == Status::passing);
  CHECK(r.message == "1 expected listeners present: mine 127.0.0.1:" + std::to_string(l.port) +
                         " (" + comm + ")");
  CHECK(r.evidence["listeners"][0]["found"]["pid"] == ::getpid());

  YamlMap other(YAML::Load("expect:\n  - {name: other, address: 127.0.0.1, port: " +
                           std::to_string(l.port) + ", process: postgres}\n"),
                "f", "checks.listening_sockets");
  auto wrong = make_listening_sockets_check(other, Config{});
  CHECK(run_check(*wrong).status == Status::warning);
}
