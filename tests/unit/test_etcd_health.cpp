#include "checks/etcd_health.hpp"

#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

using namespace fener;
using namespace std::chrono_literals;

namespace {

std::string read_data(const std::string& rel) {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/" + rel);
  REQUIRE_MESSAGE(in.good(), rel);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

HttpResult answered(long status, std::string body, std::chrono::milliseconds elapsed = 4ms) {
  HttpResult r;
  r.status = status;
  r.body = std::move(body);
  r.elapsed = elapsed;
  return r;
}

HttpResult failed(HttpError e, std::string text = "", std::chrono::milliseconds elapsed = 3000ms) {
  HttpResult r;
  r.error = e;
  r.error_text = std::move(text);
  r.elapsed = elapsed;
  return r;
}

HttpResult healthy() {
  return answered(200, read_data("etcd/health-3.5-healthy.json"));
}
HttpResult no_leader() {
  return answered(503, read_data("etcd/health-3.5-no-leader-503.json"));
}
HttpResult refused() {
  return failed(HttpError::refused, "Couldn't connect to server", 1ms);
}
HttpResult timed_out() {
  return failed(HttpError::timeout, "Operation timed out");
}
HttpResult html() {
  return answered(200, "<html><body>It works!</body></html>");
}

const std::vector<EtcdMember> kLab = {
    {"ha", {"http://127.0.1.1:2380"}, {"http://127.0.1.1:2379"}},
    {"kaptan1", {"http://127.0.1.2:2380"}, {"http://127.0.1.2:2379"}},
    {"kaptan2", {"http://127.0.1.3:2380"}, {"http://127.0.1.3:2379"}},
};
const std::vector<std::string> kLabEndpoints = {"http://127.0.1.1:2379", "http://127.0.1.2:2379",
                                                "http://127.0.1.3:2379"};

std::vector<std::string> endpoints(int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back("http://10.0.0." + std::to_string(i) + ":2379");
  return out;
}

CheckResult judge_n(const std::vector<HttpResult>& results) {
  return evaluate_etcd_health(endpoints(static_cast<int>(results.size())), results, {});
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("etcd_health: quorum arithmetic") {
  CHECK(etcd_quorum(1) == 1);
  CHECK(etcd_quorum(2) == 2);
  CHECK(etcd_quorum(3) == 2);
  CHECK(etcd_quorum(4) == 3);
  CHECK(etcd_quorum(5) == 3);
}

TEST_CASE("etcd_health: healthy bodies of 3.4 and 3.5") {
  for (const char* file : {"etcd/health-3.4-healthy.json", "etcd/health-3.5-healthy.json"}) {
    CAPTURE(file);
    auto m =
        classify_etcd_health("http://127.0.1.2:2379", answered(200, read_data(file), 7ms), kLab);
    CHECK(m.state == EtcdMemberState::healthy);
    CHECK(m.reason.empty());
    CHECK(m.name == "kaptan1");
    CHECK(m.http_status == 200);
    CHECK(m.elapsed == 7ms);
  }
}

TEST_CASE("etcd_health: unhealthy answers keep their reason") {
  auto m34 = classify_etcd_health("http://x:2379",
                                  answered(503, read_data("etcd/health-3.4-unhealthy-503.json")));
  CHECK(m34.state == EtcdMemberState::unhealthy);
  CHECK(contains(m34.reason, "\"health\":\"false\""));
  CHECK(contains(m34.reason, "HTTP 503"));

  auto raft = classify_etcd_health("http://x:2379", no_leader());
  CHECK(raft.state == EtcdMemberState::unhealthy);
  CHECK(contains(raft.reason, "RAFT NO LEADER"));
  CHECK(raft.http_status == 503);

  auto nospace = classify_etcd_health("http://x:2379",
                                      answered(503, read_data("etcd/health-3.5-nospace-503.json")));
  CHECK(nospace.state == EtcdMemberState::unhealthy);
  CHECK(contains(nospace.reason, "ALARM NOSPACE"));

  // Either sign alone is enough.
  auto false_on_200 = classify_etcd_health("http://x:2379", answered(200, R"({"health":"false"})"));
  CHECK(false_on_200.state == EtcdMemberState::unhealthy);
  auto true_on_503 = classify_etcd_health("http://x:2379", answered(503, R"({"health":"true"})"));
  CHECK(true_on_503.state == EtcdMemberState::unhealthy);
  CHECK(contains(true_on_503.reason, "HTTP 503"));
  auto bool_false = classify_etcd_health("http://x:2379", answered(503, R"({"health":false})"));
  CHECK(bool_false.state == EtcdMemberState::unhealthy);
}

TEST_CASE("etcd_health: transport failures: refused is down, the rest unreachable") {
  auto down = classify_etcd_health("http://x:2379", refused());
  CHECK(down.state == EtcdMemberState::down);
  CHECK(down.reason == "connection refused");
  CHECK(down.http_status == 0);

  for (HttpError e :
       {HttpError::timeout, HttpError::resolve, HttpError::cancelled, HttpError::other}) {
    CAPTURE(to_string(e));
    auto m = classify_etcd_health("http://x:2379", failed(e, "boom"));
    CHECK(m.state == EtcdMemberState::unreachable);
    CHECK(!m.reason.empty());
    CHECK(m.http_status == 0);
  }
  auto big = classify_etcd_health("http://x:2379", failed(HttpError::too_large, "body over 65536"));
  CHECK(big.state == EtcdMemberState::garbage);
}

TEST_CASE("etcd_health: garbage and wrong shapes never throw and are garbage") {
  const std::vector<std::string> bodies = {
      "<html><body>It works!</body></html>",
      "",
      "{\"health\":",
      "[]",
      "[{\"health\":\"true\"}]",
      "\"true\"",
      "42",
      "null",
      "true",
      R"({"healthy":"true"})",
      R"({"health":1})",
      R"({"health":"maybe"})",
      R"({"health":null})",
      R"({"health":["true"]})",
      R"({"health":{"value":"true"}})",
  };
  for (long status : {200L, 503L}) {
    for (const auto& body : bodies) {
      CAPTURE(status);
      CAPTURE(body);
      EtcdMemberHealth m;
      CHECK_NOTHROW(m = classify_etcd_health("http://x:2379", answered(status, body)));
      CHECK(m.state == EtcdMemberState::garbage);
      CHECK(contains(m.reason, "HTTP " + std::to_string(status)));
    }
  }
  auto m = classify_etcd_health("http://x:2379", html());
  CHECK(contains(m.reason, "not JSON"));
  CHECK(contains(m.reason, "It works!"));
  auto arr = classify_etcd_health("http://x:2379", answered(200, "[1,2]"));
  CHECK(contains(arr.reason, "not an etcd health answer"));
}

TEST_CASE("etcd_health: endpoint to member name") {
  CHECK(etcd_member_name("http://127.0.1.1:2379", kLab) == "ha");
  CHECK(etcd_member_name("http://127.0.1.3:2379/", kLab) == "kaptan2");
  // Another port on a host with a single member still names it.
  CHECK(etcd_member_name("http://127.0.1.2:12379", kLab) == "kaptan1");
  CHECK(etcd_member_name("http://127.0.0.1:2379", kLab).empty());
  CHECK(etcd_member_name("http://127.0.1.1:2379", {}).empty());
  // What an etcd env file gives: every member's peer URL, only its own client URL.
  const std::vector<EtcdMember> from_env = {{"ha", {"http://127.0.1.1:2380"}, {}},
                                            {"kaptan1", {"http://127.0.1.2:2380"}, {}}};
  CHECK(etcd_member_name("http://127.0.1.1:2379", from_env) == "ha");
  CHECK(etcd_member_name("http://127.0.1.9:2379", from_env).empty());

  // Two members on one host: the port decides, and a third port names nobody.
  const std::vector<EtcdMember> same_host = {{"a", {}, {"http://10.0.0.9:2379"}},
                                             {"b", {}, {"http://10.0.0.9:3379"}}};
  CHECK(etcd_member_name("http://10.0.0.9:3379", same_host) == "b");
  CHECK(etcd_member_name("http://10.0.0.9:2379", same_host) == "a");
  CHECK(etcd_member_name("http://10.0.0.9:4379", same_host).empty());

  CHECK(etcd_member_label("kaptan1", "http://127.0.1.2:2379") == "kaptan1 (http://127.0.1.2:2379)");
  CHECK(etcd_member_label("", "http://127.0.1.2:2379") == "http://127.0.1.2:2379");
}

TEST_CASE("etcd_health: N=3 passing, warning, critical, unknown") {
  SUBCASE("all healthy") {
    auto r = evaluate_etcd_health(kLabEndpoints, {healthy(), healthy(), healthy()}, kLab);
    CHECK(r.status == Status::passing);
    CHECK(r.message == "3/3 etcd members healthy (ha, kaptan1, kaptan2)");
  }
  SUBCASE("one down: quorum kept") {
    auto r = evaluate_etcd_health(kLabEndpoints, {healthy(), refused(), healthy()}, kLab);
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "2/3 etcd members healthy, quorum kept; kaptan1 (http://127.0.1.2:2379) down: "
          "connection refused");
  }
  SUBCASE("one answering garbage: quorum kept, and said so") {
    auto r = evaluate_etcd_health(kLabEndpoints, {healthy(), healthy(), html()}, kLab);
    CHECK(r.status == Status::warning);
    CHECK(contains(r.message, "kaptan2 (http://127.0.1.3:2379) answered garbage: HTTP 200"));
  }
  SUBCASE("two down: quorum lost for certain") {
    auto r = evaluate_etcd_health(kLabEndpoints, {refused(), refused(), healthy()}, kLab);
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "1/3 etcd members healthy, quorum of 2 lost"));
    CHECK(contains(r.message, "ha (http://127.0.1.1:2379) down"));
    CHECK(contains(r.message, "kaptan1 (http://127.0.1.2:2379) down"));
  }
  SUBCASE("all unhealthy: no leader") {
    auto r = evaluate_etcd_health(kLabEndpoints, {no_leader(), no_leader(), no_leader()}, kLab);
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "0/3"));
    CHECK(contains(r.message, "kaptan2 (http://127.0.1.3:2379) unhealthy: RAFT NO LEADER"));
  }
  SUBCASE("one down, one timed out: cannot tell") {
    auto r = evaluate_etcd_health(kLabEndpoints, {healthy(), refused(), timed_out()}, kLab);
    CHECK(r.status == Status::unknown);
    CHECK(contains(r.message, "1/3 etcd members healthy, quorum of 2 may be lost"));
    CHECK(contains(r.message, "1 could not be checked"));
    CHECK(contains(r.message, "kaptan2 (http://127.0.1.3:2379) unreachable"));
  }
  SUBCASE("one garbage, one unreachable: cannot tell") {
    auto r = evaluate_etcd_health(kLabEndpoints, {timed_out(), healthy(), html()}, kLab);
    CHECK(r.status == Status::unknown);
    CHECK(contains(r.message, "2 could not be checked"));
  }
  SUBCASE("none answers: cannot tell") {
    auto r = evaluate_etcd_health(kLabEndpoints, {timed_out(), timed_out(), timed_out()}, kLab);
    CHECK(r.status == Status::unknown);
  }
  SUBCASE("two unhealthy one unreachable: lost for certain") {
    auto r = evaluate_etcd_health(kLabEndpoints, {no_leader(), no_leader(), timed_out()}, kLab);
    CHECK(r.status == Status::critical);
  }
}

TEST_CASE("etcd_health: N=1") {
  CHECK(judge_n({healthy()}).status == Status::passing);
  CHECK(judge_n({refused()}).status == Status::critical);
  CHECK(judge_n({no_leader()}).status == Status::critical);
  CHECK(judge_n({timed_out()}).status == Status::unknown);
  CHECK(judge_n({html()}).status == Status::unknown);
}

TEST_CASE("etcd_health: N=2 needs both") {
  CHECK(judge_n({healthy(), healthy()}).status == Status::passing);
  CHECK(judge_n({healthy(), refused()}).status == Status::critical);
  CHECK(judge_n({healthy(), no_leader()}).status == Status::critical);
  CHECK(judge_n({healthy(), timed_out()}).status == Status::unknown);
  CHECK(judge_n({refused(), timed_out()}).status == Status::critical);
}

TEST_CASE("etcd_health: N=5") {
  auto h = healthy();
  auto d = refused();
  auto u = timed_out();
  CHECK(judge_n({h, h, h, h, h}).status == Status::passing);
  CHECK(judge_n({h, h, h, h, d}).status == Status::warning);
  CHECK(judge_n({h, h, h, d, u}).status == Status::warning);
  CHECK(judge_n({h, h, d, d, d}).status == Status::critical);
  CHECK(judge_n({h, h, u, d, d}).status == Status::unknown);   // 2 + 1 reaches 3
  CHECK(judge_n({h, u, d, d, d}).status == Status::critical);  // 1 + 1 < 3
  CHECK(judge_n({u, u, u, d, d}).status == Status::unknown);
  auto r = judge_n({h, h, d, d, d});
  CHECK(r.message.rfind("2/5 etcd members healthy, quorum of 3 lost", 0) == 0);
  CHECK(contains(r.message, "http://10.0.0.5:2379 down: connection refused"));
}

TEST_CASE("etcd_health: evidence") {
  auto r = evaluate_etcd_health(
      {"http://127.0.1.1:2379", "http://127.0.1.2:2379", "http://10.9.9.9:2379"},
      {answered(200, read_data("etcd/health-3.4-healthy.json"), 12ms), no_leader(), refused()},
      kLab);
  const auto& e = r.evidence;
  CHECK(e["healthy"] == 1);
  CHECK(e["quorum"] == 2);
  CHECK(e["total"] == 3);
  REQUIRE(e["members"].size() == 3);
  CHECK(e["members"][0]["endpoint"] == "http://127.0.1.1:2379");
  CHECK(e["members"][0]["name"] == "ha");
  CHECK(e["members"][0]["state"] == "healthy");
  CHECK(e["members"][0]["reason"] == "");
  CHECK(e["members"][0]["http_status"] == 200);
  CHECK(e["members"][0]["elapsed_ms"] == 12);
  CHECK(e["members"][1]["state"] == "unhealthy");
  CHECK(e["members"][1]["http_status"] == 503);
  CHECK(contains(e["members"][1]["reason"].get<std::string>(), "RAFT NO LEADER"));
  CHECK(e["members"][2]["state"] == "down");
  CHECK(e["members"][2]["http_status"].is_null());
  CHECK(!e["members"][2].contains("name"));
  // A member with no name is named by its URL.
  CHECK(contains(r.message, "; http://10.9.9.9:2379 down"));
}

TEST_CASE("etcd_health: missing results and no endpoints") {
  auto r = evaluate_etcd_health(endpoints(3), {healthy()}, {});
  CHECK(r.status == Status::unknown);
  CHECK(r.evidence["members"].size() == 3);
  CHECK(r.evidence["members"][2]["state"] == "unreachable");
  CHECK(evaluate_etcd_health({}, {}, {}).status == Status::unknown);
}

TEST_CASE("etcd_health: factory reads endpoints") {
  Config config;
  config.etcd_endpoints = kLabEndpoints;
  auto params_of = [](const std::string& yaml) {
    return YamlMap(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "checks.etcd");
  };

  SUBCASE("config endpoints") {
    YamlMap p = params_of("{}");
    CHECK(read_etcd_endpoints(p, config) == kLabEndpoints);
    CHECK(make_etcd_health_check(p, config) != nullptr);
  }
  SUBCASE("parameter overrides, list or comma string, trailing slash dropped") {
    YamlMap list = params_of("endpoints: [http://10.0.0.1:2379/, https://10.0.0.2:2379]");
    CHECK(read_etcd_endpoints(list, config) ==
          std::vector<std::string>{"http://10.0.0.1:2379", "https://10.0.0.2:2379"});
    YamlMap comma = params_of("endpoints: http://10.0.0.1:2379,http://10.0.0.2:2379");
    CHECK(read_etcd_endpoints(comma, config).size() == 2);
  }
  SUBCASE("bad parameters are config errors") {
    for (const char* yaml : {"endpoints: [10.0.0.1:2379]", "endpoints: []",
                             "endpoints: [http://a:2379, http://a:2379/]", "endpoints: {a: 1}"}) {
      CAPTURE(yaml);
      YamlMap p = params_of(yaml);
      CHECK_THROWS_AS(make_etcd_health_check(p, config), ConfigError);
    }
  }
  SUBCASE("nothing to check is a config error") {
    YamlMap p = params_of("{}");
    CHECK_THROWS_WITH_AS(make_etcd_health_check(p, Config{}), doctest::Contains("endpoints"),
                         ConfigError);
  }
}

TEST_CASE("etcd_health: run() asks every endpoint within ctx.timeout") {
  asio::io_context io;
  // A port that listens but never answers (times out) and one that refuses.
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::uint16_t closed_port = 0;
  {
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = a.local_endpoint().port();
  }
  const std::string silent_url =
      "http://127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  const std::string closed_url = "http://127.0.0.1:" + std::to_string(closed_port);

  Config config;
  config.etcd_endpoints = {silent_url, closed_url};
  YamlMap params(load_yaml_string("{}", "t"), "t", "checks.etcd");
  auto check = make_etcd_health_check(params, config);

  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, Duration{300}};
  std::optional<CheckResult> result;
  const auto start = std::chrono::steady_clock::now();
  asio::co_spawn(io, check->run(ctx), [&](std::exception_ptr e, CheckResult r) {
    if (!e) result = std::move(r);
  });
  io.run_for(5s);
  const auto took = std::chrono::steady_clock::now() - start;

  REQUIRE(result.has_value());
  CHECK(took < 2s);  // the 300 ms deadline was passed on, not the 3 s default
  CHECK(result->status == Status::critical);  // 0 healthy + 1 unreachable < quorum of 2
  REQUIRE(result->evidence["members"].size() == 2);
  CHECK(result->evidence["members"][0]["state"] == "unreachable");
  CHECK(result->evidence["members"][1]["state"] == "down");
}
