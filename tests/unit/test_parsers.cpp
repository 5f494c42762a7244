// The pure entry points the fuzz targets (tests/fuzz) drive, and the inputs the fuzzers
// found that once broke a parser: each finding has its test here and its input in the
// target's corpus.
#include <string>
#include <variant>

#include <doctest/doctest.h>
#include <boost/asio/io_context.hpp>

#include "src/agent_server.hpp"
#include "src/alerts.hpp"
#include "src/api_server.hpp"
#include "src/cluster_facts.hpp"
#include "src/fleet.hpp"
#include "src/leader_watch.hpp"
#include "src/status.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;

TEST_CASE("parse_api_request: a request, and the server's answers to malformed ones") {
  ApiServerOptions o;
  o.max_header_bytes = 256;
  o.max_body_bytes = 8;
  auto ok = parse_api_request(
      "GET /v1/peer/files/a%2Eb?x=1 HTTP/1.1\r\nHost: h\r\n"
      "Authorization: Bearer t\r\n\r\n",
      o);
  REQUIRE(std::holds_alternative<ApiRequest>(ok));
  const auto& req = std::get<ApiRequest>(ok);
  CHECK(req.method == "GET");
  CHECK(req.target == "/v1/peer/files/a%2Eb?x=1");
  CHECK(req.header("AUTHORIZATION") == "Bearer t");

  auto body = parse_api_request("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", o);
  REQUIRE(std::holds_alternative<ApiRequest>(body));
  CHECK(std::get<ApiRequest>(body).body == "abc");

  auto status_of = [&](const std::string& bytes) {
    auto r = parse_api_request(bytes, o);
    return std::holds_alternative<ApiResponse>(r) ? std::get<ApiResponse>(r).status : 0;
  };
  CHECK(status_of("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n") == 431);
  CHECK(status_of("POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n123456789") == 413);
  CHECK(status_of("BAD\r\n\r\n") == 400);
  CHECK(status_of("GET / HTTP/1.1\r\nHost: h\r\n") == 400);                   // cut short
  CHECK(status_of("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab") == 400);  // short body
  CHECK(status_of("") == 400);
}

TEST_CASE("ApiServer::handle answers as a connection would: 404, 405, 400, token, handler") {
  asio::io_context io;
  ApiServerOptions o;
  o.listen = "127.0.0.1:0";
  o.token = "t";
  ApiServer server(io, o);
  server.add_route("GET", "/a", false, false,
                   [](const ApiRequest& r) -> asio::awaitable<ApiResponse> {
                     co_return ApiResponse::json_body(200, {{"path", r.path}, {"query", r.query}});
                   });
  server.add_route("GET", "/p/", true, true, [](const ApiRequest&) -> asio::awaitable<ApiResponse> {
    co_return ApiResponse::json_body(200, {});
  });
  auto answer = [&](std::string method, std::string target, std::string auth = "") {
    ApiRequest req;
    req.method = std::move(method);
    req.target = std::move(target);
    if (!auth.empty()) req.headers.emplace_back("authorization", auth);
    ApiResponse resp;
    test::run_co(io, [&]() -> asio::awaitable<void> {
      ApiRequest copy = req;
      ApiResponse r = co_await server.handle(std::move(copy));
      resp = std::move(r);
    });
    return resp;
  };
  const ApiResponse a = answer("GET", "/a?x=%2F");
  CHECK(a.status == 200);
  CHECK(nlohmann::json::parse(a.body) == nlohmann::json{{"path", "/a"}, {"query", "x=%2F"}});
  CHECK(answer("GET", "/b").status == 404);
  CHECK(answer("POST", "/a").status == 405);
  CHECK(answer("GET", "/p/x%2Fy", "Bearer t").status == 400);
  CHECK(answer("GET", "*").status == 400);
  CHECK(answer("GET", "/p/x").status == 401);
  CHECK(answer("GET", "/p/x", "Bearer u").status == 401);
  CHECK(answer("GET", "/p/x", "Bearer t").status == 200);
}

TEST_CASE("agent_request_role: the agent-send line, the default for nothing and for garbage") {
  bool bad = true;
  CHECK(agent_request_role("replica\n", AgentRole::primary, &bad) == AgentRole::replica);
  CHECK_FALSE(bad);
  CHECK(agent_request_role("read-only\r\nmore", AgentRole::primary, &bad) == AgentRole::read_only);
  CHECK(agent_request_role("", AgentRole::replica, &bad) == AgentRole::replica);
  CHECK_FALSE(bad);
  CHECK(agent_request_role("\nprimary\n", AgentRole::replica, &bad) == AgentRole::replica);
  CHECK_FALSE(bad);
  CHECK(agent_request_role("bogus\n", AgentRole::any, &bad) == AgentRole::any);
  CHECK(bad);
  CHECK(agent_request_role(std::string("prim\0ary", 8), AgentRole::any, &bad) == AgentRole::any);
  CHECK(bad);
}

// Found while writing the fuzz targets for the etcd v2 keys answers (fuzz_etcd_keys): a
// field of an unexpected JSON type made nlohmann's value() throw out of the parser, and a
// far-off timestamp or huge interval overflowed the time arithmetic.
TEST_CASE("fleet summaries and listings with fields of the wrong type or out of range") {
  using nlohmann::json;
  const json good = json::parse(R"({"node":"kaptan1","status":"passing",
      "published_at":"2026-11-28T08:00:00.000Z","interval_seconds":10})");
  json j = good;
  j["scope"] = 5;
  j["mode"] = json::array();
  j["checks"] = json::parse(R"([{"name":"a","status":1,"message":{}}])");
  std::optional<NodeSummary> s;
  CHECK_NOTHROW(s = summary_from_json(j));
  REQUIRE(s);
  CHECK(s->scope.empty());
  REQUIRE(s->checks.size() == 1);
  CHECK(s->checks[0].status == Status::unknown);

  std::string why;
  j = good;
  j["interval_seconds"] = 1e300;
  CHECK_FALSE(summary_from_json(j, &why));
  CHECK(why == "interval_seconds out of range");
  j["interval_seconds"] = 1e-9;
  CHECK_FALSE(summary_from_json(j));
  j = good;
  j["published_at"] = "9999-12-31T23:59:59Z";
  CHECK_FALSE(summary_from_json(j, &why));
  CHECK(why == "published_at is not a timestamp");
  CHECK_FALSE(parse_timestamp("0001-01-01T00:00:00Z"));
  CHECK(parse_timestamp("2200-01-01T00:00:00Z"));

  std::optional<std::vector<FleetKey>> keys;
  CHECK_NOTHROW(keys = parse_fleet_listing(404, R"({"errorCode":"100"})"));
  CHECK_FALSE(keys);
  CHECK_NOTHROW(keys = parse_fleet_listing(200, R"({"node":{"nodes":[
      {"key":"/fener/liman/nodes/a","dir":"yes","value":"v","ttl":-5},
      {"key":"/fener/liman/nodes/b","value":"v","ttl":18446744073709551615},
      {"key":"/fener/liman/nodes/c","value":"v","ttl":25}]}})"));
  REQUIRE(keys);
  REQUIRE(keys->size() == 3);
  CHECK_FALSE((*keys)[0].ttl_left);
  CHECK_FALSE((*keys)[1].ttl_left);
  CHECK((*keys)[2].ttl_left == 25);
}

TEST_CASE("leader key answers and Patroni's tree with fields of the wrong type") {
  LeaderKeyEvent e;
  CHECK_NOTHROW(e = parse_leader_answer(400, R"({"errorCode":300,"message":5})", 1));
  CHECK(e.kind == LeaderKeyEvent::Kind::error);
  CHECK(e.error == "etcd error 300: ");
  CHECK_NOTHROW(e = parse_leader_answer(200, R"({"action":5,"node":{"value":"kaptan1"}})", 1));
  CHECK(e.kind == LeaderKeyEvent::Kind::value);

  ClusterFacts f;
  CHECK_NOTHROW(read_dcs_tree(nlohmann::json::parse(R"({"node":5})"), f));
  CHECK_FALSE(f.leader_name);
  CHECK_NOTHROW(read_dcs_tree(nlohmann::json::parse(R"({"node":{"key":"/service/liman","nodes":[
      {"key":7,"value":"x"},
      {"key":"/service/liman/leader","value":"kaptan1"},
      {"key":"/service/liman/config","value":"{\"pause\":\"yes\"}"}]}})"),
                              f));
  CHECK(f.leader_name == "kaptan1");
  CHECK(f.paused == false);
}

// Found by fuzz_webhook: a Retry-After date far in the future overflowed the clock's
// nanoseconds in from_time_t (UBSan: signed integer overflow).
TEST_CASE("Retry-After dates far off are capped, not overflowed") {
  using namespace std::chrono;
  const auto now = system_clock::time_point(seconds(1'795'000'000));  // 2026-11-18T11:06:40Z
  CHECK(alerting::parse_retry_after("Sun, 06 Nov 3988 08:49:37 GMT", now) == hours(24 * 365));
  CHECK(alerting::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now) == Duration{0});
  CHECK(alerting::parse_retry_after("Wed, 18 Nov 2026 12:00:00 GMT", now) == seconds(3200));
}
