#include "checks/patroni_cluster.hpp"

#include <chrono>
#include <fstream>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

#include "tests/unit/support.hpp"

using namespace fener;
using fener::test::FakePatroni;
using fener::test::run_check;
using namespace std::chrono_literals;

namespace {

const std::string kUrl1 = "http://127.0.9.2:8008/cluster";
const std::string kUrl2 = "http://127.0.9.3:8008/cluster";

std::string read_data(const std::string& name) {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/patroni/" + name);
  REQUIRE_MESSAGE(in.good(), name);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

json data_json(const std::string& name) {
  return json::parse(read_data(name));
}

HttpResult answered(std::string body, long status = 200) {
  HttpResult r;
  r.status = status;
  r.body = std::move(body);
  r.elapsed = 3ms;
  return r;
}

HttpResult failed(HttpError e, std::chrono::milliseconds elapsed = 1500ms) {
  HttpResult r;
  r.error = e;
  r.error_text = "curl says no";
  r.elapsed = elapsed;
  return r;
}

PatroniClusterParams params(int expected = 0) {
  PatroniClusterParams p;
  p.urls = {"http://127.0.9.2:8008", "http://127.0.9.3:8008"};
  p.expected_members = expected;
  p.scope = "fenerlab";
  return p;
}

CheckResult judge(const json& cluster, const PatroniClusterParams& p = params()) {
  return evaluate_patroni_cluster({{kUrl1, answered(cluster.dump())}}, p);
}

json member(const std::string& name, const std::string& role, const std::string& state,
            int timeline) {
  return {{"name", name},        {"role", role},
          {"state", state},      {"api_url", "http://" + name + ":8008/patroni"},
          {"host", name},        {"port", 5432},
          {"timeline", timeline}};
}

json replica(const std::string& name, const std::string& state, int timeline, json lag) {
  json m = member(name, "replica", state, timeline);
  m["lag"] = std::move(lag);
  return m;
}

json cluster_of(std::vector<json> members) {
  return {{"members", json(std::move(members))}};
}

// The real 3.0.2 leader+replica sample with kaptan2 changed by f.
template <class F>
json sample_with(F f) {
  json c = data_json("3.0.2-cluster.json");
  for (auto& m : c["members"])
    if (m["name"] == "kaptan2") f(m);
  return c;
}

YamlMap params_of(const std::string& yaml) {
  return YamlMap(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "checks.cluster");
}

}  // namespace

TEST_CASE("patroni_cluster: 3.0.2 leader and replica is passing") {
  const CheckResult r =
      evaluate_patroni_cluster({{kUrl1, answered(read_data("3.0.2-cluster.json"))}}, params(2));
  CHECK(r.status == Status::passing);
  CHECK(r.message ==
        "Patroni cluster fenerlab: leader kaptan1 running on timeline 1; replica kaptan2 "
        "(running, lag 0 B)");
  CHECK(r.evidence["leader"] == "kaptan1");
  CHECK(r.evidence["scope"] == "fenerlab");
  CHECK(r.evidence["pause"] == false);
  CHECK(r.evidence["url"] == kUrl1);
  CHECK_FALSE(r.evidence.contains("failed_urls"));
  REQUIRE(r.evidence["members"].size() == 2);
  const json& m = r.evidence["members"][1];
  CHECK(m["name"] == "kaptan2");
  CHECK(m["role"] == "replica");
  CHECK(m["state"] == "running");
  CHECK(m["timeline"] == 1);
  CHECK(m["lag"] == 0);
  CHECK(m["host"] == "127.0.9.3");
  CHECK(r.evidence["members"][0]["lag"].is_null());
}

TEST_CASE("patroni_cluster: 4.x with quorum_standby is passing") {
  const CheckResult r = judge(data_json("4.0-cluster-quorum.json"), params(3));
  CHECK(r.status == Status::passing);
  CHECK(r.message ==
        "Patroni cluster demo: leader patroni1 running on timeline 5; replicas patroni2 "
        "(streaming, lag 0 B), patroni3 (streaming, lag 0 B)");
  CHECK(r.evidence["scope"] == "demo");  // the body's scope wins over the configured one
  CHECK(r.evidence["members"][1]["role"] == "quorum_standby");
}

TEST_CASE("patroni_cluster: 4.x lag fields without `lag`") {
  json c = data_json("4.0-cluster-quorum.json");
  c["members"][1].erase("lag");
  c["members"][1]["replay_lag"] = 200 * 1024 * 1024;
  const CheckResult r = judge(c);
  CHECK(r.status == Status::critical);
  CHECK(r.message == "Patroni cluster demo: replica patroni2 lag 200 MB over 128 MB");
}

TEST_CASE("patroni_cluster: member count against `members`") {
  const json c = data_json("3.0.2-cluster.json");
  CHECK(judge(c, params(0)).status == Status::passing);
  CHECK(judge(c, params(2)).status == Status::passing);
  const CheckResult r = judge(c, params(3));
  CHECK(r.status == Status::warning);
  CHECK(r.message == "Patroni cluster fenerlab: 2 of 3 expected members");
}

TEST_CASE("patroni_cluster: start failed replica is named with its state (real 3.0.2 body)") {
  const CheckResult r = judge(data_json("3.0.2-cluster-start-failed.json"), params(2));
  CHECK(r.status == Status::warning);
  // Its lag is "unknown" because it is down: said once, by its state.
  CHECK(r.message == "Patroni cluster fenerlab: replica kaptan2 not running (state start failed)");
  CHECK(r.evidence["members"][1]["lag"] == "unknown");
  CHECK(r.evidence["members"][1]["timeline"].is_null());
}

TEST_CASE("patroni_cluster: pause and pending restart (real 3.0.2 body)") {
  const CheckResult r = judge(data_json("3.0.2-cluster-paused-pending-restart.json"));
  CHECK(r.status == Status::warning);
  CHECK(r.message ==
        "Patroni cluster fenerlab: pending restart on kaptan1, kaptan2; cluster is paused "
        "(maintenance mode)");
  CHECK(r.evidence["pause"] == true);
  CHECK(r.evidence["members"][0]["pending_restart"] == true);
}

TEST_CASE("patroni_cluster: scheduled switchover (real 3.0.2 body)") {
  json c = data_json("3.0.2-cluster-scheduled-switchover.json");
  for (auto& m : c["members"]) m.erase("pending_restart");
  const CheckResult r = judge(c);
  CHECK(r.status == Status::warning);
  CHECK(r.message ==
        "Patroni cluster fenerlab: switchover scheduled at 2030-01-01T03:00:00+00:00 from "
        "kaptan1 to kaptan2");
  CHECK(r.evidence["scheduled_switchover"]["to"] == "kaptan2");
}

TEST_CASE("patroni_cluster: leaders") {
  SUBCASE("no leader: critical, members listed") {
    const CheckResult r =
        judge(cluster_of({replica("a", "running", 2, 0), replica("b", "stopped", 2, "unknown")}));
    CHECK(r.status == Status::critical);
    CHECK(r.message.rfind(
              "Patroni cluster fenerlab: no leader (members: a replica running, b replica "
              "stopped)",
              0) == 0);
    CHECK(r.evidence["leader"].is_null());
  }
  SUBCASE("no members at all") {
    const CheckResult r = judge(json{{"members", json::array()}});
    CHECK(r.status == Status::critical);
    CHECK(r.message == "Patroni cluster fenerlab: no leader (members: none)");
  }
  SUBCASE("two leaders: critical") {
    const CheckResult r = judge(cluster_of(
        {member("a", "leader", "running", 2), member("b", "standby_leader", "running", 2)}));
    CHECK(r.status == Status::critical);
    CHECK(r.message == "Patroni cluster fenerlab: more than one leader: a, b");
  }
  SUBCASE("leader not running: critical") {
    const CheckResult r =
        judge(cluster_of({member("a", "leader", "stopped", 2), replica("b", "running", 2, 0)}));
    CHECK(r.status == Status::critical);
    CHECK(r.message == "Patroni cluster fenerlab: leader a not running (state stopped)");
  }
  SUBCASE("standby_leader alone is a leader") {
    const CheckResult r = judge(
        cluster_of({member("a", "standby_leader", "running", 2), replica("b", "streaming", 2, 0)}));
    CHECK(r.status == Status::passing);
    CHECK(r.evidence["leader"] == "a");
  }
}

TEST_CASE("patroni_cluster: replicas") {
  SUBCASE("streaming (3.0.4+) and sync_standby are healthy") {
    json sync = replica("c", "streaming", 3, 0);
    sync["role"] = "sync_standby";
    const CheckResult r = judge(cluster_of(
        {member("a", "leader", "running", 3), replica("b", "streaming", 3, 1024), sync}));
    CHECK(r.status == Status::passing);
    CHECK(r.message.find("b (streaming, lag 1 kB)") != std::string::npos);
  }
  SUBCASE("other timeline: warning") {
    const CheckResult r = judge(sample_with([](json& m) { m["timeline"] = 2; }));
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "Patroni cluster fenerlab: replica kaptan2 on timeline 2, leader kaptan1 on 1");
  }
  SUBCASE("not running: warning naming it and its state") {
    const CheckResult r = judge(sample_with([](json& m) { m["state"] = "creating replica"; }));
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "Patroni cluster fenerlab: replica kaptan2 not running (state creating replica)");
  }
  SUBCASE("lag over lag_warning: warning") {
    const CheckResult r = judge(sample_with([](json& m) { m["lag"] = 17 * 1024 * 1024; }));
    CHECK(r.status == Status::warning);
    CHECK(r.message == "Patroni cluster fenerlab: replica kaptan2 lag 17 MB over 16 MB");
  }
  SUBCASE("lag over lag_critical: critical") {
    const CheckResult r = judge(sample_with([](json& m) { m["lag"] = 129 * 1024 * 1024; }));
    CHECK(r.status == Status::critical);
    CHECK(r.message == "Patroni cluster fenerlab: replica kaptan2 lag 129 MB over 128 MB");
  }
  SUBCASE("lag \"unknown\" on a running replica: warning") {
    const CheckResult r = judge(sample_with([](json& m) { m["lag"] = "unknown"; }));
    CHECK(r.status == Status::warning);
    CHECK(r.message == "Patroni cluster fenerlab: replica kaptan2 lag unknown");
  }
  SUBCASE("unrecognised role: warning") {
    const CheckResult r = judge(sample_with([](json& m) { m["role"] = "witness"; }));
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "Patroni cluster fenerlab: member kaptan2 has unrecognised role \"witness\"");
  }
  SUBCASE("several findings: worst first") {
    const CheckResult r = judge(sample_with([](json& m) {
      m["lag"] = 200 * 1024 * 1024;
      m["timeline"] = 7;
    }));
    CHECK(r.status == Status::critical);
    CHECK(r.message.rfind("Patroni cluster fenerlab: replica kaptan2 lag 200 MB", 0) == 0);
    CHECK(r.message.find("on timeline 7") != std::string::npos);
  }
}

TEST_CASE("patroni_cluster: falls back to the next URL") {
  const CheckResult r = evaluate_patroni_cluster(
      {{kUrl1, failed(HttpError::refused)}, {kUrl2, answered(read_data("3.0.2-cluster.json"))}},
      params());
  CHECK(r.status == Status::passing);
  CHECK(r.evidence["url"] == kUrl2);
  REQUIRE(r.evidence["failed_urls"].size() == 1);
  CHECK(r.evidence["failed_urls"][0]["url"] == kUrl1);
  CHECK(r.evidence["failed_urls"][0]["error"] == "refused");
}

TEST_CASE("patroni_cluster: nothing usable is unknown, naming each URL and why") {
  SUBCASE("refused and timeout") {
    const CheckResult r = evaluate_patroni_cluster(
        {{kUrl1, failed(HttpError::refused)}, {kUrl2, failed(HttpError::timeout)}}, params());
    CHECK(r.status == Status::unknown);
    CHECK(r.message.rfind("no Patroni REST API gave /cluster: " + kUrl1, 0) == 0);
    CHECK(r.message.find(kUrl2) != std::string::npos);
    CHECK(r.evidence["attempts"][0]["error"] == "refused");
    CHECK(r.evidence["attempts"][1]["error"] == "timeout");
  }
  SUBCASE("garbage and wrong shapes never throw") {
    const std::vector<std::pair<const char*, HttpResult>> cases = {
        {"html", answered("<html>oops</html>")},
        {"empty", answered("")},
        {"array", answered(R"([{"name": "a"}])")},
        {"string", answered(R"("members")")},
        {"no members", answered(R"({"scope": "x"})")},
        {"members not an array", answered(R"({"members": {"a": {}}})")},
        {"member not an object", answered(R"({"members": ["a", "b"]})")},
        {"member without a name", answered(R"({"members": [{"role": "leader"}]})")},
        {"member name not a string", answered(R"({"members": [{"name": 1}]})")},
        {"HTTP 404", answered(R"({"members": []})", 404)},
        {"binary", answered(std::string("\xff\xfe\x00{\xc3", 5))},
    };
    for (const auto& [what, res] : cases) {
      CAPTURE(what);
      CHECK_FALSE(patroni_cluster_usable(res));
      CheckResult r;
      REQUIRE_NOTHROW(r = evaluate_patroni_cluster({{kUrl1, res}}, params()));
      CHECK(r.status == Status::unknown);
      CHECK(r.message.find(kUrl1 + " answered") != std::string::npos);
      CHECK_NOTHROW(r.evidence.dump());
    }
  }
  SUBCASE("no attempt at all") {
    CHECK(evaluate_patroni_cluster({}, params()).status == Status::unknown);
  }
}

TEST_CASE("patroni_cluster: odd member fields are ignored, not thrown on") {
  json c = data_json("3.0.2-cluster.json");
  c["members"][0]["timeline"] = "1";
  c["members"][1]["state"] = nullptr;
  c["members"][1]["pending_restart"] = "yes";
  c["pause"] = "true";
  c["scheduled_switchover"] = nullptr;
  CheckResult r;
  REQUIRE_NOTHROW(r = judge(c));
  CHECK(r.status == Status::warning);
  CHECK(r.message == "Patroni cluster fenerlab: replica kaptan2 not running (no state)");
  CHECK(r.evidence["pause"] == false);
}

TEST_CASE("patroni_cluster: factory reads and validates params") {
  Config config;
  config.patroni_url = "http://127.0.1.2:8008";
  config.expected_members = 2;
  SUBCASE("defaults") {
    YamlMap p = params_of("{}");
    CHECK(make_patroni_cluster_check(p, config) != nullptr);
  }
  SUBCASE("all params") {
    YamlMap p = params_of(
        "{urls: ['http://a:8008/', 'http://b:8008'], members: 3, lag_warning: 1MB, "
        "lag_critical: 2MB}");
    CHECK_NOTHROW(make_patroni_cluster_check(p, config));
    CHECK_NOTHROW(p.finish());
  }
  SUBCASE("urls as a comma string") {
    YamlMap p = params_of("{urls: 'http://a:8008,http://b:8008'}");
    CHECK_NOTHROW(make_patroni_cluster_check(p, config));
  }
  SUBCASE("bad url") {
    YamlMap p = params_of("{urls: ['a:8008']}");
    CHECK_THROWS_WITH_AS(make_patroni_cluster_check(p, config), doctest::Contains("urls"),
                         ConfigError);
  }
  SUBCASE("empty urls") {
    YamlMap p = params_of("{urls: []}");
    CHECK_THROWS_AS(make_patroni_cluster_check(p, config), ConfigError);
  }
  SUBCASE("negative members") {
    YamlMap p = params_of("{members: -1}");
    CHECK_THROWS_WITH_AS(make_patroni_cluster_check(p, config), doctest::Contains("members"),
                         ConfigError);
  }
  SUBCASE("bad size") {
    YamlMap p = params_of("{lag_critical: 12 parsecs}");
    CHECK_THROWS_WITH_AS(make_patroni_cluster_check(p, config), doctest::Contains("lag_critical"),
                         ConfigError);
  }
  SUBCASE("no Patroni here and no urls") {
    YamlMap p = params_of("{}");
    CHECK_THROWS_AS(make_patroni_cluster_check(p, Config{}), ConfigError);
  }
}

TEST_CASE("patroni_cluster: run() tries the URLs in order within ctx.timeout") {
  asio::io_context io;
  // The first URL listens but never answers; the second refuses.
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::uint16_t closed_port = 0;
  {
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = a.local_endpoint().port();
  }
  const std::string silent_url =
      "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  const std::string closed_url = "http://127.0.0.1:" + std::to_string(closed_port);
  YamlMap p = params_of("{urls: ['" + silent_url + "', '" + closed_url + "']}");
  auto check = make_patroni_cluster_check(p, Config{});

  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, Duration{600}};
  std::optional<CheckResult> result;
  const auto start = std::chrono::steady_clock::now();
  asio::co_spawn(io, check->run(ctx), [&](std::exception_ptr e, CheckResult r) {
    if (!e) result = std::move(r);
  });
  io.run_for(5s);
  const auto took = std::chrono::steady_clock::now() - start;

  REQUIRE(result.has_value());
  CHECK(took < 2s);  // the silent URL got a share of the 600 ms, not the 3 s default
  CHECK(result->status == Status::unknown);
  REQUIRE(result->evidence["attempts"].size() == 2);
  CHECK(result->evidence["attempts"][0]["url"] == silent_url + "/cluster");
  CHECK(result->evidence["attempts"][0]["error"] == "timeout");
  // Half of the 600 ms each, so the second URL is still asked before the deadline.
  CHECK(result->evidence["attempts"][0]["elapsed_ms"].get<int>() < 500);
  CHECK(result->evidence["attempts"][1]["url"] == closed_url + "/cluster");
  CHECK(result->evidence["attempts"][1]["error"] == "refused");
}

TEST_CASE("patroni_cluster: run() stops at the first URL that gives /cluster") {
  asio::io_context io;
  std::uint16_t closed_port = 0;
  {
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = a.local_endpoint().port();
  }
  const std::string closed_url = "http://127.0.0.1:" + std::to_string(closed_port);
  FakePatroni garbage(io), good(io), spare(io);
  garbage.bodies["/cluster"] = "<html>proxy error</html>";
  good.bodies["/cluster"] = read_data("3.0.2-cluster.json");
  spare.bodies["/cluster"] = read_data("3.0.2-cluster.json");
  YamlMap p = params_of("{urls: ['" + closed_url + "', '" + garbage.url() + "', '" + good.url() +
                        "', '" + spare.url() + "'], members: 2}");
  auto check = make_patroni_cluster_check(p, Config{});
  auto result = run_check(io, *check, Duration{2000});
  REQUIRE(result.has_value());
  CHECK(result->status == Status::passing);
  CHECK(result->evidence["url"] == good.url() + "/cluster");
  REQUIRE(result->evidence["failed_urls"].size() == 2);
  CHECK(result->evidence["failed_urls"][0]["error"] == "refused");
  CHECK(result->evidence["failed_urls"][1]["http_status"] == 200);
  CHECK(garbage.requests["/cluster"] == 1);
  CHECK(good.requests["/cluster"] == 1);
  CHECK(spare.requests["/cluster"] == 0);
}
