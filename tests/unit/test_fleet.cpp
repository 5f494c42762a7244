// The fleet view: summary documents and their bounds, the etcd PUT form, reading etcd's
// listing, judging fresh/stale/missing with an injected clock, the table, and the
// publisher against a fake etcd on loopback (endpoint rotation, periodic and poked writes).
#include "src/fleet.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/steady_timer.hpp>

#include "src/api_server.hpp"
#include "src/http_client.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using fener::test::local_options;
using fener::test::run_co;

namespace {

SystemTime at(const char* iso) {
  auto t = parse_timestamp(iso);
  REQUIRE_MESSAGE(t.has_value(), iso);
  return *t;
}

NodeSummary summary(std::string node, Status status, const char* when) {
  NodeSummary s;
  s.node = std::move(node);
  s.scope = "liman";
  s.mode = "safe";
  s.version = "0.1.0";
  s.status = status;
  s.checks = {{"etcd_health", Status::passing, "3/3 etcd members healthy"},
              {"datadir", status, status == Status::passing ? "ok" : "mode 0755"}};
  s.published_at = at(when);
  s.interval = 10s;
  return s;
}

std::string value_of(const NodeSummary& s) {
  return summary_to_json(s).dump();
}

// Decodes application/x-www-form-urlencoded.
std::string form_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("summary_to_json: the exact document, and it reads back") {
  const auto s = summary("kaptan1", Status::critical, "2026-11-28T08:00:00.000Z");
  const json j = summary_to_json(s);
  CHECK(j == json::parse(R"({"node":"kaptan1","scope":"liman","mode":"safe","version":"0.1.0",
      "status":"critical","published_at":"2026-11-28T08:00:00.000Z","interval_seconds":10.0,
      "ttl_seconds":100,"checks":[
        {"name":"etcd_health","status":"passing","message":"3/3 etcd members healthy"},
        {"name":"datadir","status":"critical","message":"mode 0755"}]})"));
  auto back = summary_from_json(j);
  REQUIRE(back.has_value());
  CHECK(back->node == "kaptan1");
  CHECK(back->status == Status::critical);
  CHECK(back->published_at == s.published_at);
  CHECK(back->interval == Duration(10s));
  REQUIRE(back->checks.size() == 2);
  CHECK(back->checks[1].message == "mode 0755");

  std::string why;
  CHECK_FALSE(summary_from_json(json::array(), &why));
  CHECK(why == "not a JSON object");
  json bad = j;
  bad["status"] = "sad";
  CHECK_FALSE(summary_from_json(bad, &why));
  CHECK(why == "unknown status \"sad\"");
  bad = j;
  bad.erase("published_at");
  CHECK_FALSE(summary_from_json(bad, &why));
  CHECK(why == "no \"published_at\"");
}

TEST_CASE("summary_to_json is bounded: long messages cut, too many checks left out") {
  auto s = summary("kaptan1", Status::warning, "2026-11-28T08:00:00.000Z");
  s.checks.clear();
  for (int i = 0; i < 100; ++i)
    s.checks.push_back({"check" + std::to_string(i) + std::string(150, 'n'), Status::warning,
                        std::string(5000, 'x')});
  const json j = summary_to_json(s);
  CHECK(j["checks"].size() == kFleetMaxChecks);
  CHECK(j["checks_omitted"] == 36);
  CHECK(j.dump().size() <= kFleetMaxValue);
  // 64 long names and messages do not fit in 16 KiB: the messages go, names and statuses stay.
  CHECK_FALSE(j["checks"][0].contains("message"));
  s.checks.resize(3);
  const json k = summary_to_json(s);
  CHECK(k["checks"][0]["message"] == std::string(kFleetMaxMessage, 'x') + "...");
}

TEST_CASE("keys and the PUT form") {
  CHECK(fleet_dir("liman") == "/fener/liman/nodes");
  CHECK(fleet_key("liman", "kaptan1") == "/fener/liman/nodes/kaptan1");
  CHECK(fleet_key("my scope", "a/b") == "/fener/my%20scope/nodes/a%2Fb");
  CHECK(fleet_ttl_seconds(10s) == 100);
  CHECK(fleet_ttl_seconds(50ms) == 1);
  const auto s = summary("kaptan1", Status::passing, "2026-11-28T08:00:00.000Z");
  const std::string form = fleet_put_form(s);
  REQUIRE(form.rfind("value=", 0) == 0);
  const auto amp = form.rfind("&ttl=");
  REQUIRE(amp != std::string::npos);
  CHECK(form.substr(amp) == "&ttl=100");
  const std::string value = form.substr(6, amp - 6);
  CHECK(value.find_first_of("{}\":& ") == std::string::npos);  // all encoded
  CHECK(json::parse(form_decode(value)) == summary_to_json(s));
}

TEST_CASE("parse_fleet_listing: a listing, an absent directory, and garbage") {
  const std::string listing = R"({"action":"get","node":{"key":"/fener/liman/nodes","dir":true,
    "nodes":[{"key":"/fener/liman/nodes/kaptan1","value":"{}","expiration":"x","ttl":95,
              "modifiedIndex":9,"createdIndex":9},
             {"key":"/fener/liman/nodes/ha","value":"v","modifiedIndex":8,"createdIndex":8},
             {"key":"/fener/liman/nodes/sub","dir":true}]}})";
  auto keys = parse_fleet_listing(200, listing);
  REQUIRE(keys.has_value());
  REQUIRE(keys->size() == 2);
  CHECK((*keys)[0].node == "kaptan1");
  CHECK((*keys)[0].value == "{}");
  CHECK((*keys)[0].ttl_left == 95);
  CHECK((*keys)[1].node == "ha");
  CHECK_FALSE((*keys)[1].ttl_left.has_value());

  auto none = parse_fleet_listing(
      404, R"({"errorCode":100,"message":"Key not found","cause":"/fener","index":7})");
  REQUIRE(none.has_value());
  CHECK(none->empty());
  auto empty = parse_fleet_listing(
      200, R"({"action":"get","node":{"key":"/fener/liman/nodes","dir":true}})");
  REQUIRE(empty.has_value());
  CHECK(empty->empty());

  std::string why;
  CHECK_FALSE(parse_fleet_listing(200, "<html>", &why));
  CHECK(why == "not an etcd v2 listing: <html>");
  CHECK_FALSE(parse_fleet_listing(503, "busy", &why));
  CHECK(why == "HTTP 503: busy");

  CHECK(parse_member_names(R"({"node":{"key":"/service/liman/members","dir":true,"nodes":[
    {"key":"/service/liman/members/kaptan1","value":"{}"},
    {"key":"/service/liman/members/kaptan2","value":"{}"}]}})") ==
        std::vector<std::string>{"kaptan1", "kaptan2"});
  CHECK(parse_member_names("nope").empty());
}

TEST_CASE("judge_fleet: fresh, stale after three intervals, missing, invalid; the table") {
  const auto now = at("2026-11-28T08:01:00.000Z");
  std::vector<FleetKey> keys = {
      // Age from etcd's remaining TTL: 100 - 96 = 4 s, whatever the clocks say.
      {"kaptan1", value_of(summary("kaptan1", Status::critical, "2026-11-28T07:00:00.000Z")), 96},
      // No TTL given: age from published_at; 31 s > 3 x 10 s.
      {"kaptan2", value_of(summary("kaptan2", Status::passing, "2026-11-28T08:00:29.000Z")), {}},
      {"ha", value_of(summary("ha", Status::passing, "2026-11-28T08:00:58.000Z")), {}},
      {"odd", "not json", {}},
  };
  const FleetView v = judge_fleet("liman", keys, {"ha", "kaptan1", "kaptan2", "kaptan3"}, now);
  REQUIRE(v.nodes.size() == 5);
  CHECK(v.nodes[0].node == "ha");
  CHECK(v.nodes[0].state == FleetState::fresh);
  CHECK(v.nodes[0].age == 2s);
  CHECK(v.nodes[1].node == "kaptan1");
  CHECK(v.nodes[1].state == FleetState::fresh);
  CHECK(v.nodes[1].age == 4s);
  CHECK(v.nodes[1].status() == Status::critical);
  CHECK(v.nodes[2].node == "kaptan2");
  CHECK(v.nodes[2].state == FleetState::stale);
  CHECK(v.nodes[2].status() == Status::unknown);
  CHECK(v.nodes[3].node == "kaptan3");
  CHECK(v.nodes[3].state == FleetState::missing);
  CHECK(v.nodes[4].node == "odd");
  CHECK(v.nodes[4].state == FleetState::invalid);
  CHECK(v.status == Status::critical);

  CHECK(fleet_table(v) ==
        "scope liman: critical (5 nodes)\n"
        "NODE     STATUS    AGE     CHECKS\n"
        "ha       passing   2s      2/2 passing\n"
        "kaptan1  critical  4s      datadir critical\n"
        "kaptan2  STALE     31s     no update for 31s; last: passing, 2/2 passing\n"
        "kaptan3  MISSING   -       no summary in etcd\n"
        "odd      INVALID   -       not JSON: not json\n");

  const json j = fleet_json(v);
  CHECK(j["scope"] == "liman");
  CHECK(j["status"] == "critical");
  CHECK(j["nodes"][2]["state"] == "stale");
  CHECK(j["nodes"][2]["status"] == "unknown");
  CHECK(j["nodes"][2]["age_seconds"] == 31);
  CHECK(j["nodes"][2]["summary"]["status"] == "passing");
  CHECK(j["nodes"][3] == json{{"node", "kaptan3"},
                              {"state", "missing"},
                              {"status", "unknown"},
                              {"problem", "no summary in etcd"}});

  // Exactly three intervals old is still fresh; nothing known at all is unknown.
  keys = {{"ha", value_of(summary("ha", Status::passing, "2026-11-28T08:00:30.000Z")), {}}};
  CHECK(judge_fleet("liman", keys, {}, now).nodes[0].state == FleetState::fresh);
  CHECK(judge_fleet("liman", {}, {}, now).status == Status::unknown);
}

TEST_CASE("make_summary takes the published statuses of a snapshot") {
  StatusSnapshot s;
  s.node = "kaptan1";
  s.scope = "liman";
  s.mode = Mode::full;
  s.version = "0.1.0";
  s.now = at("2026-11-28T08:00:00.000Z");
  CheckState a;
  a.name = "datadir";
  a.published = Status::warning;
  a.last = CheckResult::make(Status::critical, "mode 0755");
  CheckState b;
  b.name = "etcd_health";
  s.checks = {a, b};
  const NodeSummary n = make_summary(s, 5s);
  CHECK(n.node == "kaptan1");
  CHECK(n.mode == "full");
  CHECK(n.status == Status::unknown);  // etcd_health has no result yet
  REQUIRE(n.checks.size() == 2);
  CHECK(n.checks[0].status == Status::warning);
  CHECK(n.checks[0].message == "mode 0755");
  CHECK(n.checks[1].status == Status::unknown);
  CHECK(n.published_at == s.now);
  CHECK(n.interval == Duration(5s));
}

namespace {

// An etcd v2 keys endpoint that records every PUT.
struct FakeEtcd {
  struct Put {
    std::string path, content_type, body;
  };
  explicit FakeEtcd(asio::io_context& io) : server(io, local_options()) {
    server.add_route(
        "PUT", "/v2/keys/", true, false,
        [this](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
          puts.push_back({req.path, req.header("content-type").value_or(""), req.body});
          co_return ApiResponse::json_body(fail ? 500 : 201, {{"action", "set"}});
        });
    server.start();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
  ApiServer server;
  std::vector<Put> puts;
  bool fail = false;
};

// Runs the loop until pred() or the deadline.
template <class Pred>
bool run_until(asio::io_context& io, Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    io.run_for(10ms);
    io.restart();
  }
  return pred();
}

}  // namespace

TEST_CASE("publisher: PUTs the form to the key, rotating past a dead endpoint") {
  asio::io_context io;
  FakeEtcd etcd(io);
  HttpClient http(io);
  Status current = Status::passing;
  int summaries = 0;
  auto make = [&] {
    ++summaries;
    return summary("kaptan1", current, "2026-11-28T08:00:00.000Z");
  };
  // 127.0.0.1:1: nothing listens there (connection refused).
  FleetPublisher pub(io, http, {"http://127.0.0.1:1", etcd.url()}, "liman", "kaptan1", 10s, make);
  bool ok = false;
  run_co(io, [&]() -> asio::awaitable<void> { ok = co_await pub.publish_once(); });
  CHECK(ok);
  REQUIRE(etcd.puts.size() == 1);
  CHECK(etcd.puts[0].path == "/v2/keys/fener/liman/nodes/kaptan1");
  CHECK(etcd.puts[0].content_type == "application/x-www-form-urlencoded");
  CHECK(etcd.puts[0].body ==
        fleet_put_form(summary("kaptan1", current, "2026-11-28T08:00:00.000Z")));
  CHECK(pub.stats().ok == 1);
  CHECK(pub.stats().failed == 0);

  // The endpoint that worked is asked first next time.
  etcd.fail = true;
  run_co(io, [&]() -> asio::awaitable<void> { ok = co_await pub.publish_once(); });
  CHECK_FALSE(ok);
  CHECK(etcd.puts.size() == 2);
  CHECK(pub.stats().failed == 1);
  CHECK(pub.stats().last_error.find("http://127.0.0.1:1: ") == 0);  // tried last

  MetricsRegistry m;
  pub.contribute(m);
  const std::string text = m.render();
  CHECK(text.find("fener_fleet_publications_total{outcome=\"failed\"} 1\n") != std::string::npos);
  CHECK(text.find("fener_fleet_publications_total{outcome=\"ok\"} 1\n") != std::string::npos);
  CHECK(text.find("fener_fleet_last_publication_timestamp_seconds ") != std::string::npos);
}

TEST_CASE("publisher loop: writes at start, again soon after a change, then stops") {
  asio::io_context io;
  FakeEtcd etcd(io);
  HttpClient http(io);
  Status current = Status::passing;
  auto make = [&] { return summary("kaptan1", current, "2026-11-28T08:00:00.000Z"); };
  // An hour's interval: every write after the first comes from poke().
  FleetPublisher pub(io, http, {etcd.url()}, "liman", "kaptan1", 1h, make, 50ms);
  pub.start();
  REQUIRE(run_until(io, [&] { return etcd.puts.size() == 1; }));
  CHECK(pub.active() == 1);
  current = Status::critical;
  pub.poke();
  pub.poke();  // a burst of changes: one write
  REQUIRE(run_until(io, [&] { return etcd.puts.size() == 2; }));
  CHECK(form_decode(etcd.puts[1].body).find("\"status\":\"critical\"") != std::string::npos);
  io.run_for(200ms);
  io.restart();
  CHECK(etcd.puts.size() == 2);
  pub.stop();
  REQUIRE(run_until(io, [&] { return pub.active() == 0; }));
  pub.poke();  // after stop: nothing
  io.run_for(100ms);
  CHECK(etcd.puts.size() == 2);
}

TEST_CASE("read_fleet: the listing and Patroni's members from the first etcd that answers") {
  asio::io_context io;
  ApiServer etcd(io, local_options());
  const std::string value =
      value_of(summary("kaptan1", Status::passing, "2026-11-28T08:00:00.000Z"));
  etcd.add_route(
      "GET", "/v2/keys/fener/liman/nodes", false, false,
      [&](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
        CHECK(req.query == "recursive=true");
        json listing = {
            {"action", "get"},
            {"node",
             {{"key", "/fener/liman/nodes"},
              {"dir", true},
              {"nodes",
               {{{"key", "/fener/liman/nodes/kaptan1"}, {"value", value}, {"ttl", 99}}}}}}};
        co_return ApiResponse::json_body(200, listing);
      });
  etcd.add_route("GET", "/v2/keys/service/liman/members", false, false,
                 [](const ApiRequest&) -> asio::awaitable<ApiResponse> {
                   json members = {{"node",
                                    {{"key", "/service/liman/members"},
                                     {"dir", true},
                                     {"nodes",
                                      {{{"key", "/service/liman/members/kaptan1"}},
                                       {{"key", "/service/liman/members/kaptan2"}}}}}}};
                   co_return ApiResponse::json_body(200, members);
                 });
  etcd.start();
  HttpClient http(io);
  const std::string good = "http://127.0.0.1:" + std::to_string(etcd.port());
  FleetRead r;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<std::string> endpoints = {"http://127.0.0.1:1", good};
    std::string scope = "liman";
    TlsSettings tls;
    r = co_await read_fleet(http, std::move(endpoints), std::move(scope), 2s, std::move(tls));
  });
  REQUIRE(r.keys.has_value());
  CHECK(r.error.empty());
  CHECK(r.endpoint == good);
  REQUIRE(r.keys->size() == 1);
  CHECK((*r.keys)[0].ttl_left == 99);
  CHECK(r.patroni_members == std::vector<std::string>{"kaptan1", "kaptan2"});

  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<std::string> endpoints = {"http://127.0.0.1:1"};
    std::string scope = "liman";
    TlsSettings tls;
    r = co_await read_fleet(http, std::move(endpoints), std::move(scope), 2s, std::move(tls));
  });
  CHECK_FALSE(r.keys.has_value());
  CHECK(r.error.find("http://127.0.0.1:1: connection refused") == 0);
}
