#include "remedies/service_restart.hpp"

#include <sys/stat.h>

#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

using namespace fener;
using namespace std::chrono_literals;

namespace {

YamlMap yaml(const std::string& text) {
  return YamlMap(load_yaml_string(text, "test.yaml"), "test.yaml", "remedy");
}

ServiceRestartParams parse(const std::string& text) {
  auto params = yaml(text);
  return parse_service_restart_params(params, Config{});
}

std::string config_error(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e.key() + ": " + e.problem();
  }
  return "no error";
}

struct Harness {
  asio::io_context io;
  HttpClient http{io};
  Worker worker;
  Config config;
  ClusterFacts facts;
  RemedyContext ctx{http, worker, config, facts, 10s};

  std::optional<RemedyOutcome> run(Remedy& remedy) {
    std::optional<RemedyOutcome> out;
    asio::co_spawn(io, remedy.run(ctx), [&](std::exception_ptr e, RemedyOutcome r) {
      if (!e) out = std::move(r);
      io.stop();
    });
    io.run_for(15s);
    io.restart();
    return out;
  }
};

std::unique_ptr<Remedy> make(const std::string& text) {
  auto params = yaml(text);
  return make_service_restart_remedy(params, Config{});
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_SUITE("service_restart config") {
  TEST_CASE("unit names get .service unless they name a unit type") {
    CHECK(unit_name("patroni") == "patroni.service");
    CHECK(unit_name("postgresql@15-main") == "postgresql@15-main.service");
    CHECK(unit_name("patroni.service") == "patroni.service");
    CHECK(unit_name("etcd.socket") == "etcd.socket");
    CHECK(unit_name("my.app") == "my.app.service");
  }

  TEST_CASE("parameters") {
    auto p = parse("service: patroni");
    CHECK(p.unit == "patroni.service");
    CHECK(p.command.empty());
    CHECK(p.timeout == 60s);

    p = parse("service: patroni\ncommand: /usr/bin/pg_ctlcluster  15 main restart\ntimeout: 90s");
    CHECK(p.command == std::vector<std::string>{"/usr/bin/pg_ctlcluster", "15", "main", "restart"});
    CHECK(p.timeout == 90s);

    p = parse("service: patroni\ncommand: [/bin/sh, -c, 'kill -HUP $(cat /run/patroni.pid)']");
    CHECK(p.command ==
          std::vector<std::string>{"/bin/sh", "-c", "kill -HUP $(cat /run/patroni.pid)"});
  }

  TEST_CASE("errors") {
    CHECK(config_error("{}") == "remedy.service: required: the service to restart, e.g. patroni");
    CHECK(config_error("service: 'pat roni'") ==
          "remedy.service: expected a systemd unit name (letters, digits, and :_.@-\\), got \"pat "
          "roni\"");
    CHECK(config_error("service: ../etc/x") ==
          "remedy.service: expected a systemd unit name (letters, digits, and :_.@-\\), got "
          "\"../etc/x\"");
    CHECK(config_error("service: patroni\ncommand: ''") ==
          "remedy.command: expected a command line or a list of its arguments, got nothing to run");
    CHECK(config_error("service: patroni\ncommand: []") ==
          "remedy.command: expected a command line or a list of its arguments, got nothing to run");
    CHECK(config_error("service: patroni\ncommand: {a: b}") ==
          "remedy.command: expected a command line or a list of its arguments, got a mapping");
    CHECK(config_error("service: patroni\ncommand: [[a]]") ==
          "remedy.command: expected a command line or a list of its arguments, found a list or "
          "mapping in it");
    CHECK(contains(config_error("service: patroni\ntimeout: soon"),
                   "remedy.timeout: expected a duration"));
  }
}

TEST_SUITE("service_restart run") {
  TEST_CASE("plan") {
    Harness h;
    CHECK(make("service: patroni")->plan(h.ctx) == "restart patroni.service through systemd");
    CHECK(make("service: patroni\ncommand: [/bin/sh, -c, 'echo hi']")->plan(h.ctx) ==
          "run: /bin/sh -c 'echo hi'");
    CHECK(make("service: patroni")->risk() == Risk::disruptive);
  }

  TEST_CASE("a command that exits 0 is a success") {
    Harness h;
    auto remedy = make("service: patroni\ncommand: /bin/true");
    const auto out = h.run(*remedy);
    REQUIRE(out);
    CHECK(out->ok);
    CHECK(contains(out->message, "restarted patroni.service: /bin/true: exit 0 in "));
    CHECK(out->details["exit_code"] == 0);
    CHECK(out->details["via"] == "command");
  }

  TEST_CASE("a command that fails is a failure with its last output line") {
    Harness h;
    auto remedy = make("service: patroni\ncommand: /bin/false");
    auto out = h.run(*remedy);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(contains(out->message, "could not restart patroni.service: /bin/false: exit 1 in "));
    CHECK(out->details["exit_code"] == 1);

    auto loud = make(
        "service: patroni\ncommand: [/bin/sh, -c, 'for i in $(seq 1 30); do echo line $i; done; "
        "echo patroni is masked >&2; exit 3']");
    out = h.run(*loud);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(contains(out->message, ": exit 3 in "));
    CHECK(contains(out->message, " ms: patroni is masked"));
    const std::string tail = out->details["output_tail"];
    CHECK(tail.rfind("line 22\n", 0) == 0);  // the last 10 lines
    CHECK(contains(tail, "line 30\npatroni is masked"));
  }

  TEST_CASE("a command past its timeout is stopped and is a failure") {
    Harness h;
    auto remedy = make("service: patroni\ncommand: /bin/sleep 30\ntimeout: 200ms");
    const auto out = h.run(*remedy);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(out->message ==
          "could not restart patroni.service: /bin/sleep 30: killed by SIGTERM after timeout "
          "200 ms");
    CHECK(out->details["timed_out"] == true);
  }

  TEST_CASE("a command that does not exist is a failure") {
    Harness h;
    auto remedy = make("service: patroni\ncommand: /nonexistent/restart-it");
    const auto out = h.run(*remedy);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(out->message ==
          "could not restart patroni.service: /nonexistent/restart-it: could not start: No such "
          "file or directory");
  }

  TEST_CASE("without systemd and without command it says what to configure") {
    struct stat st {};
    if (stat("/run/systemd/system", &st) == 0) {
      MESSAGE("systemd runs here; skipping");
      return;
    }
    Harness h;
    auto remedy = make("service: patroni");
    const auto out = h.run(*remedy);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(out->message ==
          "systemd is not running here (no /run/systemd/system); configure command: for service "
          "patroni.service (or services: in fener.yaml)");
    CHECK(out->details["via"] == "systemd");
  }
}
