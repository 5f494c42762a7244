#include "checks/patroni_node.hpp"

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

const std::string kUrl = "http://127.0.9.3:8008";  // where the 3.0.2 replica sample was taken

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
HttpResult answered_json(const json& body, long status = 200) {
  return answered(body.dump(), status);
}

HttpResult failed(HttpError e, std::chrono::milliseconds elapsed = 3000ms) {
  HttpResult r;
  r.error = e;
  r.error_text = "curl says no";
  r.elapsed = elapsed;
  return r;
}

PatroniNodeParams params(std::string member = "kaptan2") {
  PatroniNodeParams p;
  p.url = kUrl;
  p.member = std::move(member);
  return p;
}

// The 3.0.2 /cluster sample with kaptan2's lag replaced.
HttpResult cluster_with_lag(const json& lag) {
  json c = data_json("3.0.2-cluster.json");
  for (auto& m : c["members"])
    if (m["name"] == "kaptan2") m["lag"] = lag;
  return answered_json(c);
}

CheckResult judge_replica(const HttpResult& cluster, const PatroniNodeParams& p = params()) {
  return evaluate_patroni_node(answered(read_data("3.0.2-replica-patroni.json")), cluster, p);
}

YamlMap params_of(const std::string& yaml) {
  return YamlMap(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "checks.patroni");
}

}  // namespace

TEST_CASE("patroni_node: parse_size reads PostgreSQL-style sizes") {
  CHECK(parse_size("16MB") == 16 * 1024 * 1024);
  CHECK(parse_size("1GB") == std::int64_t{1} << 30);
  CHECK(parse_size("512kB") == 512 * 1024);
  CHECK(parse_size("2TB") == std::int64_t{2} << 40);
  CHECK(parse_size("1048576") == 1048576);
  CHECK(parse_size("0") == 0);
  CHECK(parse_size(" 16 MB ") == 16 * 1024 * 1024);
  CHECK(parse_size("16mb") == 16 * 1024 * 1024);
  CHECK(parse_size("100B") == 100);
  for (const char* bad : {"", "MB", "-1", "1.5GB", "16XB", "16 M B", "0x10", "16MBs",
                          "99999999999999999999", "9000000TB"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_size(bad).has_value());
  }
}

TEST_CASE("patroni_node: format_size prints human units") {
  CHECK(format_size(0) == "0 B");
  CHECK(format_size(1023) == "1023 B");
  CHECK(format_size(1536) == "1.5 kB");
  CHECK(format_size(16 * 1024 * 1024) == "16 MB");
  CHECK(format_size((std::int64_t{200} << 20) + (std::int64_t{1} << 19)) == "200.5 MB");
  CHECK(format_size(std::int64_t{3} << 40) == "3 TB");
}

TEST_CASE("patroni_node: classify_patroni_state") {
  for (const char* s : {"start failed", "crashed", "stopped", "stop failed", "restart failed",
                        "initdb failed", "custom bootstrap failed", "unknown"}) {
    CAPTURE(s);
    CHECK(classify_patroni_state(s) == PatroniStateKind::failed);
  }
  for (const char* s :
       {"starting", "restarting", "stopping", "creating replica", "initializing new cluster",
        "running custom bootstrap script", "starting after custom bootstrap"}) {
    CAPTURE(s);
    CHECK(classify_patroni_state(s) == PatroniStateKind::transitional);
  }
  CHECK(classify_patroni_state("running") == PatroniStateKind::running);
  // Patroni 3.0.2 after a failed POST /restart.
  CHECK(classify_patroni_state("restart failed (start failed)") == PatroniStateKind::failed);
  CHECK(classify_patroni_state("Running") == PatroniStateKind::unrecognised);
  CHECK(classify_patroni_state("") == PatroniStateKind::unrecognised);
}

TEST_CASE("patroni_node: 3.0.2 leader is passing") {
  const HttpResult patroni = answered(read_data("3.0.2-leader-patroni.json"));
  CHECK_FALSE(patroni_node_wants_cluster(patroni));
  const CheckResult r = evaluate_patroni_node(patroni, std::nullopt, params("kaptan1"));
  CHECK(r.status == Status::passing);
  CHECK(r.message ==
        "kaptan1: PostgreSQL running as master on timeline 1, 1 replication connection");
  CHECK(r.evidence["state"] == "running");
  CHECK(r.evidence["role"] == "master");
  CHECK(r.evidence["timeline"] == 1);
  CHECK(r.evidence["server_version"] == 150018);
  CHECK(r.evidence["patroni_version"] == "3.0.2");
  CHECK(r.evidence["scope"] == "fenerlab");
  CHECK(r.evidence["name"] == "kaptan1");
  CHECK(r.evidence["pending_restart"] == false);
  CHECK(r.evidence["pause"] == false);
  CHECK(r.evidence["lag"].is_null());
  CHECK(r.evidence["url"] == kUrl + "/patroni");
}

TEST_CASE("patroni_node: 3.0.2 replica with its lag from /cluster is passing") {
  const HttpResult patroni = answered(read_data("3.0.2-replica-patroni.json"));
  CHECK(patroni_node_wants_cluster(patroni));
  const CheckResult r =
      evaluate_patroni_node(patroni, answered(read_data("3.0.2-cluster.json")), params());
  CHECK(r.status == Status::passing);
  CHECK(r.message == "kaptan2: PostgreSQL running as replica on timeline 1, lag 0 B");
  CHECK(r.evidence["lag"] == 0);
  CHECK(r.evidence["role"] == "replica");
}

TEST_CASE("patroni_node: replica lag against the thresholds") {
  SUBCASE("at lag_warning exactly: passing") {
    const CheckResult r = judge_replica(cluster_with_lag(16 * 1024 * 1024));
    CHECK(r.status == Status::passing);
    CHECK(r.message.find("lag 16 MB") != std::string::npos);
  }
  SUBCASE("over lag_warning: warning") {
    const CheckResult r = judge_replica(cluster_with_lag(20 * 1024 * 1024));
    CHECK(r.status == Status::warning);
    CHECK(r.message == "kaptan2: replication lag 20 MB over 16 MB");
    CHECK(r.evidence["lag"] == 20 * 1024 * 1024);
  }
  SUBCASE("over lag_critical: critical") {
    const CheckResult r = judge_replica(cluster_with_lag(200 * 1024 * 1024));
    CHECK(r.status == Status::critical);
    CHECK(r.message == "kaptan2: replication lag 200 MB over 128 MB");
  }
  SUBCASE("thresholds are the params'") {
    PatroniNodeParams p = params();
    p.lag_warning = 1024;
    p.lag_critical = 4096;
    CHECK(judge_replica(cluster_with_lag(2048), p).status == Status::warning);
    CHECK(judge_replica(cluster_with_lag(8192), p).status == Status::critical);
  }
  SUBCASE("lag \"unknown\": warning") {
    const CheckResult r = judge_replica(cluster_with_lag("unknown"));
    CHECK(r.status == Status::warning);
    CHECK(r.message.find("lag unknown") != std::string::npos);
    CHECK(r.evidence["lag"] == "unknown");
  }
  SUBCASE("lag as a float or a huge unsigned number is still read") {
    CHECK(judge_replica(cluster_with_lag(1.7e10)).status == Status::critical);
    CHECK(judge_replica(cluster_with_lag(std::uint64_t{18446744073709551615u})).status ==
          Status::critical);
  }
  SUBCASE("3.0.x without a name in /patroni: found by api_url") {
    const CheckResult r = judge_replica(cluster_with_lag(20 * 1024 * 1024), params(""));
    CHECK(r.status == Status::warning);
    CHECK(r.evidence["lag"] == 20 * 1024 * 1024);
    CHECK(r.message.rfind(kUrl + "/patroni: replication lag 20 MB", 0) == 0);
  }
  SUBCASE("not fetched (nullopt): lag is not judged") {
    const CheckResult r = evaluate_patroni_node(answered(read_data("3.0.2-replica-patroni.json")),
                                                std::nullopt, params());
    CHECK(r.status == Status::passing);
    CHECK(r.evidence["lag"].is_null());
  }
}

TEST_CASE("patroni_node: /cluster that cannot give the lag is a warning, not a throw") {
  const std::vector<std::pair<const char*, HttpResult>> cases = {
      {"refused", failed(HttpError::refused)},
      {"timeout", failed(HttpError::timeout)},
      {"html", answered("<html>oops</html>")},
      {"array", answered("[1,2]")},
      {"string", answered("\"members\"")},
      {"members not an array", answered(R"({"members": {"kaptan2": {}}})")},
      {"member entries of the wrong type", answered(R"({"members": [1, "x", null, []]})")},
      {"not listed", answered(R"({"members": [{"name": "other", "lag": 0}]})")},
      {"no lag", answered(R"({"members": [{"name": "kaptan2", "role": "leader"}]})")},
      {"HTTP 500", answered(R"({"members": []})", 500)},
  };
  for (const auto& [what, cluster] : cases) {
    CAPTURE(what);
    CheckResult r;
    REQUIRE_NOTHROW(r = judge_replica(cluster));
    CHECK(r.status == Status::warning);
    CHECK(r.message.find("lag not known") != std::string::npos);
    CHECK_NOTHROW(r.evidence.dump());
  }
}

TEST_CASE("patroni_node: replication_state other than streaming is a warning") {
  json body = data_json("4.0-replica-patroni.json");
  json cluster = data_json("4.0-cluster-quorum.json");
  CheckResult r = evaluate_patroni_node(answered_json(body), answered_json(cluster), params(""));
  CHECK(r.status == Status::passing);  // name patroni2 comes from the 4.x body
  CHECK(r.message == "patroni2: PostgreSQL running as replica on timeline 1, lag 0 B");
  CHECK(r.evidence["replication_state"] == "streaming");

  body["replication_state"] = "in archive recovery";
  r = evaluate_patroni_node(answered_json(body), answered_json(cluster), params(""));
  CHECK(r.status == Status::warning);
  CHECK(r.message == "patroni2: replica is in archive recovery, not streaming");
}

TEST_CASE("patroni_node: 4.x primary is passing") {
  const CheckResult r = evaluate_patroni_node(answered(read_data("4.0-primary-patroni.json")),
                                              std::nullopt, params("configured-name"));
  CHECK(r.status == Status::passing);
  CHECK(r.message ==
        "patroni1: PostgreSQL running as primary on timeline 1, 2 replication connections");
  CHECK(r.evidence["name"] == "patroni1");
  CHECK(r.evidence["patroni_version"] == "4.0.4");
}

TEST_CASE("patroni_node: start failed replica is critical (real 3.0.2 body)") {
  const HttpResult patroni = answered(read_data("3.0.2-replica-start-failed-patroni.json"));
  CHECK_FALSE(patroni_node_wants_cluster(patroni));  // shrunken: nothing to ask /cluster
  const CheckResult r = evaluate_patroni_node(patroni, std::nullopt, params());
  CHECK(r.status == Status::critical);
  CHECK(r.message == "kaptan2: PostgreSQL start failed (role replica)");
  CHECK(r.evidence["state"] == "start failed");
  CHECK(r.evidence["timeline"].is_null());
  CHECK(r.evidence["sql_probe_failed"] == true);
}

TEST_CASE("patroni_node: shrunken {state, role} body judges the state only") {
  SUBCASE("sample: SQL probe failed while running") {
    const CheckResult r = evaluate_patroni_node(answered(read_data("3.0.2-shrunken-patroni.json")),
                                                std::nullopt, params("kaptan1"));
    CHECK(r.status == Status::critical);
    CHECK(r.message.find("PostgreSQL state unknown (role master)") != std::string::npos);
  }
  SUBCASE("bare body; a lagging /cluster is not consulted") {
    const CheckResult r =
        evaluate_patroni_node(answered(R"({"state": "starting", "role": "replica"})"),
                              cluster_with_lag(200 * 1024 * 1024), params());
    CHECK(r.status == Status::warning);
    CHECK(r.message == "kaptan2: PostgreSQL starting (role replica)");
    CHECK(r.evidence["lag"].is_null());
  }
  SUBCASE("bare running body passes") {
    const CheckResult r = evaluate_patroni_node(
        answered(R"({"state": "running", "role": "master"})"), std::nullopt, params("kaptan1"));
    CHECK(r.status == Status::passing);
  }
}

TEST_CASE("patroni_node: every state by kind") {
  for (const char* s : {"start failed", "crashed", "stopped", "stop failed", "restart failed",
                        "initdb failed", "custom bootstrap failed"}) {
    CAPTURE(s);
    const CheckResult r = evaluate_patroni_node(
        answered_json(json{{"state", s}, {"role", "replica"}}), std::nullopt, params());
    CHECK(r.status == Status::critical);
    CHECK(r.message == std::string("kaptan2: PostgreSQL ") + s + " (role replica)");
  }
  for (const char* s :
       {"starting", "restarting", "stopping", "creating replica", "initializing new cluster",
        "running custom bootstrap script", "starting after custom bootstrap"}) {
    CAPTURE(s);
    const CheckResult r = evaluate_patroni_node(
        answered_json(json{{"state", s}, {"role", "master"}}), std::nullopt, params());
    CHECK(r.status == Status::warning);
    CHECK(r.message.find(s) != std::string::npos);
  }
  const CheckResult r = evaluate_patroni_node(
      answered_json(json{{"state", "sleeping"}, {"role", "replica"}}), std::nullopt, params());
  CHECK(r.status == Status::warning);
  CHECK(r.message == "kaptan2: PostgreSQL in unrecognised state \"sleeping\" (role replica)");
}

TEST_CASE("patroni_node: roles") {
  auto judge_role = [](const char* role) {
    json body = data_json("3.0.2-leader-patroni.json");
    body["role"] = role;
    return evaluate_patroni_node(answered_json(body), std::nullopt, params("kaptan1"));
  };
  CHECK(judge_role("master").status == Status::passing);
  CHECK(judge_role("primary").status == Status::passing);
  CHECK(judge_role("standby_leader").status == Status::passing);
  for (const char* r : {"demoted", "promoted", "uninitialized"}) {
    CAPTURE(r);
    const CheckResult res = judge_role(r);
    CHECK(res.status == Status::warning);
    CHECK(res.message == std::string("kaptan1: role ") + r + " (in transition)");
  }
  const CheckResult odd = judge_role("banana");
  CHECK(odd.status == Status::warning);
  CHECK(odd.message.find("unrecognised role \"banana\"") != std::string::npos);
}

TEST_CASE("patroni_node: pending restart and pause (real 3.0.2 body)") {
  const CheckResult r =
      evaluate_patroni_node(answered(read_data("3.0.2-leader-paused-pending-restart-patroni.json")),
                            std::nullopt, params("kaptan1"));
  CHECK(r.status == Status::warning);
  CHECK(r.message == "kaptan1: pending restart; cluster is paused (maintenance mode)");
  CHECK(r.evidence["pending_restart"] == true);
  CHECK(r.evidence["pause"] == true);
}

TEST_CASE("patroni_node: worst finding first, worst status wins") {
  json body = data_json("3.0.2-leader-paused-pending-restart-patroni.json");
  body["state"] = "crashed";
  const CheckResult r = evaluate_patroni_node(answered_json(body), std::nullopt, params("kaptan1"));
  CHECK(r.status == Status::critical);
  CHECK(r.message.rfind("kaptan1: PostgreSQL crashed (role master); pending restart", 0) == 0);
}

TEST_CASE("patroni_node: the API not answering is its own finding") {
  const std::string url = kUrl + "/patroni";
  SUBCASE("refused: critical") {
    const CheckResult r = evaluate_patroni_node(failed(HttpError::refused), std::nullopt, params());
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "Patroni REST API at " + url + " refused the connection (Patroni not running?)");
    CHECK(r.evidence["error"] == "refused");
  }
  SUBCASE("timeout: unknown") {
    const CheckResult r =
        evaluate_patroni_node(failed(HttpError::timeout, 3000ms), std::nullopt, params());
    CHECK(r.status == Status::unknown);
    CHECK(r.message == "no answer from " + url + " within 3000 ms");
    CHECK(r.evidence["error"] == "timeout");
  }
  SUBCASE("other transport failures: unknown") {
    for (HttpError e :
         {HttpError::resolve, HttpError::too_large, HttpError::cancelled, HttpError::other}) {
      CAPTURE(to_string(e));
      const CheckResult r = evaluate_patroni_node(failed(e), std::nullopt, params());
      CHECK(r.status == Status::unknown);
      CHECK(r.message.find(url) != std::string::npos);
      CHECK(r.evidence["error"] == std::string(to_string(e)));
    }
  }
}

TEST_CASE("patroni_node: garbage and wrong shapes are unknown and never throw") {
  const std::vector<std::pair<const char*, HttpResult>> cases = {
      {"html", answered("<html><body>502 Bad Gateway</body></html>")},
      {"empty", answered("")},
      {"truncated", answered(R"({"state": "running", "ro)")},
      {"array", answered(R"([{"state": "running", "role": "master"}])")},
      {"string", answered(R"("running")")},
      {"number", answered("42")},
      {"null", answered("null")},
      {"no state", answered(R"({"role": "master"})")},
      {"state not a string", answered(R"({"state": 5, "role": "master"})")},
      {"role not a string", answered(R"({"state": "running", "role": ["master"]})")},
      {"HTTP 404 with JSON", answered(R"({"state": "running", "role": "master"})", 404)},
      {"HTTP 500 with text", answered("Internal Server Error", 500)},
      {"binary", answered(std::string("\xff\xfe\x00garbage\xc3", 11))},
  };
  for (const auto& [what, patroni] : cases) {
    CAPTURE(what);
    CheckResult r;
    REQUIRE_NOTHROW(r = evaluate_patroni_node(patroni, std::nullopt, params()));
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find(kUrl + "/patroni answered") == 0);
    CHECK_FALSE(patroni_node_wants_cluster(patroni));
    CHECK_NOTHROW(r.evidence.dump());
  }
  const CheckResult html = evaluate_patroni_node(cases[0].second, std::nullopt, params());
  CHECK(html.message.find("non-JSON: '<html><body>502 Bad Gateway") != std::string::npos);
  const CheckResult arr = evaluate_patroni_node(cases[3].second, std::nullopt, params());
  CHECK(arr.message.find("a JSON array") != std::string::npos);
  const CheckResult s404 = evaluate_patroni_node(cases[10].second, std::nullopt, params());
  CHECK(s404.message.find("HTTP 404") != std::string::npos);
}

TEST_CASE("patroni_node: HTTP 503 with a /patroni body is judged") {
  const CheckResult r = evaluate_patroni_node(
      answered(read_data("3.0.2-replica-start-failed-patroni.json"), 503), std::nullopt, params());
  CHECK(r.status == Status::critical);
  CHECK(r.evidence["http_status"] == 503);
}

TEST_CASE("patroni_node: odd field types are ignored, not thrown on") {
  json body = data_json("3.0.2-replica-patroni.json");
  body["pending_restart"] = "yes";
  body["pause"] = 1;
  body["timeline"] = "1";
  body["patroni"] = json::array({"3.0.2"});
  body["replication_state"] = 7;
  CheckResult r;
  REQUIRE_NOTHROW(r = evaluate_patroni_node(answered_json(body), cluster_with_lag(0), params()));
  CHECK(r.status == Status::passing);
  CHECK(r.evidence["pending_restart"] == false);
  CHECK(r.evidence["pause"] == false);
  CHECK(r.evidence["patroni_version"].is_null());
  CHECK(r.message == "kaptan2: PostgreSQL running as replica, lag 0 B");
}

TEST_CASE("patroni_node: factory reads and validates params") {
  Config config;
  config.patroni_url = "http://127.0.1.2:8008/";
  config.node_name = "kaptan1";
  SUBCASE("defaults") {
    YamlMap p = params_of("{}");
    CHECK(make_patroni_node_check(p, config) != nullptr);
  }
  SUBCASE("sizes as strings or byte counts") {
    YamlMap p = params_of("{lag_warning: 32MB, lag_critical: 1073741824, url: 'http://h:8008'}");
    CHECK_NOTHROW(make_patroni_node_check(p, config));
    CHECK_NOTHROW(p.finish());  // every key was read
  }
  SUBCASE("a malformed size names the key") {
    YamlMap p = params_of("{lag_warning: lots}");
    CHECK_THROWS_WITH_AS(make_patroni_node_check(p, config), doctest::Contains("lag_warning"),
                         ConfigError);
  }
  SUBCASE("a size that is a list") {
    YamlMap p = params_of("{lag_critical: [1, 2]}");
    CHECK_THROWS_AS(make_patroni_node_check(p, config), ConfigError);
  }
  SUBCASE("warning above critical") {
    YamlMap p = params_of("{lag_warning: 1GB, lag_critical: 16MB}");
    CHECK_THROWS_WITH_AS(make_patroni_node_check(p, config),
                         doctest::Contains("must not exceed lag_critical"), ConfigError);
  }
  SUBCASE("no Patroni here and no url") {
    YamlMap p = params_of("{}");
    CHECK_THROWS_WITH_AS(make_patroni_node_check(p, Config{}), doctest::Contains("url"),
                         ConfigError);
  }
  SUBCASE("url that is not http(s)") {
    YamlMap p = params_of("{url: 'ftp://h:8008'}");
    CHECK_THROWS_WITH_AS(make_patroni_node_check(p, config), doctest::Contains("http"),
                         ConfigError);
  }
}

TEST_CASE("patroni_node: run() reports a refused connection as critical") {
  asio::io_context io;
  std::uint16_t closed_port = 0;
  {
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = a.local_endpoint().port();
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(closed_port);
  Config config;
  config.patroni_url = url;
  YamlMap p = params_of("{}");
  auto check = make_patroni_node_check(p, config);

  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, Duration{1000}};
  std::optional<CheckResult> result;
  asio::co_spawn(io, check->run(ctx), [&](std::exception_ptr e, CheckResult r) {
    if (!e) result = std::move(r);
  });
  io.run_for(5s);
  REQUIRE(result.has_value());
  CHECK(result->status == Status::critical);
  CHECK(result->message ==
        "Patroni REST API at " + url + "/patroni refused the connection (Patroni not running?)");
}

TEST_CASE("patroni_node: run() asks /cluster only for a replica") {
  SUBCASE("replica: /patroni then /cluster, lag judged") {
    asio::io_context io;
    FakePatroni api(io);
    api.bodies["/patroni"] = read_data("3.0.2-replica-patroni.json");
    json cluster = data_json("3.0.2-cluster.json");
    cluster["members"][1]["lag"] = 20 * 1024 * 1024;
    cluster["members"][1]["api_url"] = api.url() + "/patroni";
    api.bodies["/cluster"] = cluster.dump();
    Config config;
    config.patroni_url = api.url();
    config.node_name = "kaptan2";
    YamlMap p = params_of("{}");
    auto check = make_patroni_node_check(p, config);
    auto result = run_check(io, *check, Duration{2000});
    REQUIRE(result.has_value());
    CHECK(result->status == Status::warning);
    CHECK(result->message == "kaptan2: replication lag 20 MB over 16 MB");
    CHECK(api.requests["/patroni"] == 1);
    CHECK(api.requests["/cluster"] == 1);
  }
  SUBCASE("leader: /patroni only") {
    asio::io_context io;
    FakePatroni api(io);
    api.bodies["/patroni"] = read_data("3.0.2-leader-patroni.json");
    Config config;
    config.patroni_url = api.url();
    config.node_name = "kaptan1";
    YamlMap p = params_of("{}");
    auto check = make_patroni_node_check(p, config);
    auto result = run_check(io, *check, Duration{2000});
    REQUIRE(result.has_value());
    CHECK(result->status == Status::passing);
    CHECK(api.requests["/patroni"] == 1);
    CHECK(api.requests["/cluster"] == 0);
  }
}
