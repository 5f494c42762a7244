#include "checks/etcd_members.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

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

HttpResult answered(long status, std::string body) {
  HttpResult r;
  r.status = status;
  r.body = std::move(body);
  r.elapsed = 3ms;
  return r;
}

HttpResult failed(HttpError e) {
  HttpResult r;
  r.error = e;
  r.error_text = "boom";
  r.elapsed = 3000ms;
  return r;
}

HttpResult data(long status, const std::string& file) {
  return answered(status, read_data("etcd/" + file));
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

const std::vector<EtcdMember> kLab = {
    {"ha", {"http://127.0.1.1:2380"}, {"http://127.0.1.1:2379"}},
    {"kaptan1", {"http://127.0.1.2:2380"}, {"http://127.0.1.2:2379"}},
    {"kaptan2", {"http://127.0.1.3:2380"}, {"http://127.0.1.3:2379"}},
};

EtcdMemberInfo info(std::string name, std::string peer, std::string client, bool learner = false) {
  EtcdMemberInfo m;
  m.id = "1";
  m.name = std::move(name);
  if (!peer.empty()) m.peer_urls = {std::move(peer)};
  if (!client.empty()) m.client_urls = {std::move(client)};
  m.learner = learner;
  return m;
}

std::vector<EtcdMemberInfo> lab_actual() {
  return {info("ha", "http://127.0.1.1:2380", "http://127.0.1.1:2379"),
          info("kaptan1", "http://127.0.1.2:2380", "http://127.0.1.2:2379"),
          info("kaptan2", "http://127.0.1.3:2380", "http://127.0.1.3:2379")};
}

// An endpoint that serves v2 with a leader.
EtcdMembersAnswer v2_answer(const std::string& endpoint,
                            const std::string& members = "v2-members.json") {
  EtcdMembersAnswer a;
  a.endpoint = endpoint;
  a.v2_members = data(200, members);
  a.v2_leader = data(200, "v2-leader.json");
  return a;
}

// An endpoint with v2 disabled that answers the v3 gateway.
EtcdMembersAnswer v3_answer(const std::string& endpoint,
                            const std::string& members = "v3-member-list.json",
                            const std::string& status = "v3-status.json") {
  EtcdMembersAnswer a;
  a.endpoint = endpoint;
  a.v2_members = data(404, "v2-disabled-404.txt");
  a.v2_leader = data(404, "v2-disabled-404.txt");
  a.v3_members = data(200, members);
  a.v3_status = data(200, status);
  return a;
}

EtcdMembersAnswer down_answer(const std::string& endpoint) {
  EtcdMembersAnswer a;
  a.endpoint = endpoint;
  a.v2_members = failed(HttpError::refused);
  a.v2_leader = failed(HttpError::refused);
  return a;
}

std::vector<Status> statuses(const std::vector<EtcdFinding>& f) {
  std::vector<Status> out;
  for (const auto& x : f) out.push_back(x.status);
  return out;
}

const EtcdFinding* find(const std::vector<EtcdFinding>& f, const std::string& part) {
  for (const auto& x : f) {
    if (contains(x.message, part)) return &x;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("etcd_members: v2 member list") {
  auto l = parse_etcd_v2_members(data(200, "v2-members.json"));
  REQUIRE(l.ok);
  REQUIRE(l.members.size() == 3);
  CHECK(l.members[0].id == "8e9e05c52164694d");
  CHECK(l.members[1].name == "kaptan1");
  CHECK(l.members[1].peer_urls == std::vector<std::string>{"http://127.0.1.2:2380"});
  CHECK(l.members[2].client_urls == std::vector<std::string>{"http://127.0.1.3:2379"});
  CHECK(!l.members[2].learner);

  auto unstarted = parse_etcd_v2_members(data(200, "v2-members-unstarted.json"));
  REQUIRE(unstarted.ok);
  CHECK(unstarted.members[2].name.empty());
  CHECK(unstarted.members[2].client_urls.empty());
}

TEST_CASE("etcd_members: v3 member list with string and number IDs") {
  auto l = parse_etcd_v3_members(data(200, "v3-member-list.json"));
  REQUIRE(l.ok);
  REQUIRE(l.members.size() == 3);
  CHECK(l.members[0].id == "10276657743932975437");
  CHECK(l.members[2].name == "kaptan2");

  // The gateway omits empty fields: a learner not yet started has neither name nor clients.
  auto learner = parse_etcd_v3_members(data(200, "v3-member-list-learner.json"));
  REQUIRE(learner.ok);
  CHECK(learner.members[2].learner);
  CHECK(learner.members[2].name.empty());
  CHECK(learner.members[2].client_urls.empty());
  CHECK(!learner.members[0].learner);

  auto numeric = parse_etcd_v3_members(answered(
      200,
      R"({"members":[{"ID":10276657743932975437,"name":"ha","peerURLs":["http://a:2380"]}]})"));
  REQUIRE(numeric.ok);
  CHECK(numeric.members[0].id == "10276657743932975437");
}

TEST_CASE("etcd_members: unusable member lists never throw") {
  const std::vector<std::string> bodies = {
      "<html>nope</html>",
      "",
      "[]",
      "\"members\"",
      "7",
      "null",
      R"({"members":{}})",
      R"({"members":"ha"})",
      R"({"members":[]})",
      R"({"members":[1,2]})",
      R"({"members":[["ha"]]})",
      R"({"members":[{"name":"ha"}]})",
      R"({"members":[{"id":"1","ID":"1","name":7}]})",
      R"({"members":[{"id":"1","ID":"1","peerURLs":"http://a:2380"}]})",
      R"({"members":[{"id":"1","ID":"1","clientURLs":[1]}]})",
      R"({"members":[{"id":-3,"ID":-3}]})",
      R"({"members":[{"id":"","ID":""}]})",
  };
  for (const auto& body : bodies) {
    CAPTURE(body);
    EtcdMemberList v2, v3;
    CHECK_NOTHROW(v2 = parse_etcd_v2_members(answered(200, body)));
    CHECK_NOTHROW(v3 = parse_etcd_v3_members(answered(200, body)));
    CHECK(!v2.ok);
    CHECK(!v3.ok);
    CHECK(contains(v2.problem, "HTTP 200"));
    CHECK(v2.members.empty());
  }
  auto learner = parse_etcd_v3_members(
      answered(200, R"({"members":[{"ID":"1","name":"a","isLearner":"yes"}]})"));
  CHECK(!learner.ok);

  auto refused = parse_etcd_v2_members(failed(HttpError::refused));
  CHECK(!refused.ok);
  CHECK(refused.problem == "connection refused");
  auto err = parse_etcd_v2_members(answered(500, "etcdserver: request timed out"));
  CHECK(!err.ok);
  CHECK(contains(err.problem, "HTTP 500"));
  CHECK(contains(err.problem, "request timed out"));
}

TEST_CASE("etcd_members: v2 disabled is a 404 answer, not a failure to connect") {
  CHECK(etcd_v2_disabled(data(404, "v2-disabled-404.txt")));
  CHECK(!etcd_v2_disabled(data(200, "v2-members.json")));
  CHECK(!etcd_v2_disabled(failed(HttpError::refused)));
  CHECK(!etcd_v2_disabled(failed(HttpError::timeout)));
}

TEST_CASE("etcd_members: v2 leader") {
  auto l = parse_etcd_v2_leader(data(200, "v2-leader.json"));
  CHECK(l.state == EtcdLeader::State::known);
  CHECK(l.name == "kaptan1");
  CHECK(l.id == "91bc3c398fb3c146");

  auto election = parse_etcd_v2_leader(data(503, "v2-leader-election-503.json"));
  CHECK(election.state == EtcdLeader::State::none);
  CHECK(contains(election.detail, "During election"));
  CHECK(contains(election.detail, "503"));

  CHECK(parse_etcd_v2_leader(failed(HttpError::timeout)).state == EtcdLeader::State::unknown);
  CHECK(parse_etcd_v2_leader(answered(500, "x")).state == EtcdLeader::State::unknown);
  for (const char* body : {"[]", "\"kaptan1\"", "5", "{}", R"({"id":[1]})", "<html>"}) {
    CAPTURE(body);
    EtcdLeader x;
    CHECK_NOTHROW(x = parse_etcd_v2_leader(answered(200, body)));
    CHECK(x.state == EtcdLeader::State::unknown);
  }
  // A 503 whose body is not JSON still means no leader.
  CHECK(parse_etcd_v2_leader(answered(503, "")).state == EtcdLeader::State::none);
}

TEST_CASE("etcd_members: v3 maintenance status leader") {
  auto members = parse_etcd_v3_members(data(200, "v3-member-list.json")).members;
  auto l = parse_etcd_v3_status(data(200, "v3-status.json"), members);
  CHECK(l.state == EtcdLeader::State::known);
  CHECK(l.id == "10501334649042878790");
  CHECK(l.name == "kaptan1");

  auto none = parse_etcd_v3_status(data(200, "v3-status-no-leader.json"), members);
  CHECK(none.state == EtcdLeader::State::none);
  CHECK(parse_etcd_v3_status(answered(200, R"({"leader":"0"})"), members).state ==
        EtcdLeader::State::none);
  CHECK(parse_etcd_v3_status(answered(200, R"({"leader":0})"), members).state ==
        EtcdLeader::State::none);
  auto numeric = parse_etcd_v3_status(answered(200, R"({"leader":10276657743932975437})"), members);
  CHECK(numeric.state == EtcdLeader::State::known);
  CHECK(numeric.name == "ha");
  // A leader not in the list is still a leader, just unnamed.
  auto stranger = parse_etcd_v3_status(answered(200, R"({"leader":"42"})"), members);
  CHECK(stranger.state == EtcdLeader::State::known);
  CHECK(stranger.name.empty());

  for (const char* body : {R"({"leader":"abc"})", R"({"leader":{}})", R"({"leader":-1})",
                           R"({"leader":"12x"})", "[]", "\"x\"", "3", "not json"}) {
    CAPTURE(body);
    EtcdLeader x;
    CHECK_NOTHROW(x = parse_etcd_v3_status(answered(200, body), members));
    CHECK(x.state == EtcdLeader::State::unknown);
  }
  CHECK(parse_etcd_v3_status(failed(HttpError::timeout), members).state ==
        EtcdLeader::State::unknown);
  CHECK(parse_etcd_v3_status(answered(404, ""), members).state == EtcdLeader::State::unknown);
}

TEST_CASE("etcd_members: membership as expected has no findings") {
  CHECK(compare_etcd_members(lab_actual(), kLab).empty());
  // Trailing slashes and order do not matter.
  auto actual = lab_actual();
  std::swap(actual[0], actual[2]);
  actual[1].peer_urls = {"http://127.0.1.2:2380/"};
  CHECK(compare_etcd_members(actual, kLab).empty());
}

TEST_CASE("etcd_members: missing and unexpected members") {
  auto actual = lab_actual();
  actual.pop_back();
  auto f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::critical);
  CHECK(f[0].message ==
        "expected etcd member kaptan2 (peer http://127.0.1.3:2380) is missing from the member "
        "list");

  actual = lab_actual();
  actual.push_back(info("kaptan3", "http://127.0.1.4:2380", "http://127.0.1.4:2379"));
  f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::warning);
  CHECK(f[0].message == "unexpected etcd member kaptan3 (peer http://127.0.1.4:2380)");
}

TEST_CASE("etcd_members: names that differ or are empty") {
  auto actual = lab_actual();
  actual[1].name = "default";  // ETCD_NAME never set
  auto f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::warning);
  CHECK(contains(f[0].message, "is named \"default\", expected \"kaptan1\""));

  auto unstarted = parse_etcd_v2_members(data(200, "v2-members-unstarted.json")).members;
  f = compare_etcd_members(unstarted, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::warning);
  CHECK(contains(f[0].message, "kaptan2"));
  CHECK(contains(f[0].message, "not started yet"));

  // Without expectations an empty name is still worth a warning.
  f = compare_etcd_members(unstarted, {});
  REQUIRE(f.size() == 1);
  CHECK(contains(f[0].message, "not started yet"));

  // kaptan2's machine calls itself kaptan1: paired by peer URL, and the duplicate shows.
  actual = lab_actual();
  actual[2].name = "kaptan1";
  f = compare_etcd_members(actual, kLab);
  CHECK(statuses(f) == std::vector<Status>{Status::warning, Status::warning});
  CHECK(find(f, "is named \"kaptan1\", expected \"kaptan2\"") != nullptr);
  CHECK(find(f, "2 etcd members are named \"kaptan1\"") != nullptr);
}

TEST_CASE("etcd_members: peer and client URLs") {
  auto actual = lab_actual();
  actual[0].peer_urls = {"http://127.0.0.1:2380"};  // advertises localhost
  auto f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::critical);
  CHECK(f[0].message ==
        "etcd member ha peer URLs [http://127.0.0.1:2380] differ from the expected "
        "[http://127.0.1.1:2380]");

  actual = lab_actual();
  actual[1].client_urls = {"http://127.0.1.9:2379"};
  f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::warning);
  CHECK(contains(f[0].message, "client URLs"));

  actual = lab_actual();
  actual[2].client_urls.clear();
  f = compare_etcd_members(actual, kLab);
  REQUIRE(f.size() == 1);
  CHECK(f[0].status == Status::warning);
  CHECK(f[0].message == "etcd member kaptan2 advertises no client URLs");
}

TEST_CASE("etcd_members: ports and learners") {
  auto actual = lab_actual();
  actual[0].client_urls = {"http://127.0.1.1:4001"};
  actual[1].peer_urls = {"http://127.0.1.2:7001"};
  actual[2].learner = true;
  // Structure only: no expectations.
  auto f = compare_etcd_members(actual, {});
  REQUIRE(f.size() == 3);
  CHECK(statuses(f) == std::vector<Status>(3, Status::warning));
  CHECK(f[0].message ==
        "etcd member ha client URL http://127.0.1.1:4001 is not on port 2379; the guide expects "
        "2379 for clients, 2380 for peers");
  CHECK(contains(f[1].message, "kaptan1 peer URL http://127.0.1.2:7001 is not on port 2380"));
  CHECK(f[2].message == "etcd member kaptan2 is a learner (non-voting)");
  // A URL without a port is on 80, not on 2379.
  actual = lab_actual();
  actual[0].client_urls = {"http://127.0.1.1"};
  CHECK(compare_etcd_members(actual, {}).size() == 1);
}

TEST_CASE("etcd_members: judge v2 passing") {
  auto r = judge_etcd_members({v2_answer("http://127.0.1.1:2379")}, kLab, true);
  CHECK(r.status == Status::passing);
  CHECK(r.message == "3 etcd members as expected (ha, kaptan1, kaptan2), leader kaptan1");
  CHECK(r.evidence["api"] == "v2");
  CHECK(r.evidence["endpoint"] == "http://127.0.1.1:2379");
  CHECK(r.evidence["members"].size() == 3);
  CHECK(r.evidence["members"][0]["name"] == "ha");
  CHECK(r.evidence["leader"]["name"] == "kaptan1");
  CHECK(r.evidence["findings"].empty());
  CHECK(r.evidence["v2_disabled"].empty());

  auto bare = judge_etcd_members({v2_answer("http://127.0.1.1:2379")}, {}, true);
  CHECK(bare.status == Status::passing);
  CHECK(contains(bare.message, "no expected membership"));
}

TEST_CASE("etcd_members: the first endpoint that answers is used") {
  auto r = judge_etcd_members(
      {down_answer("http://127.0.1.1:2379"), v2_answer("http://127.0.1.2:2379")}, kLab, true);
  CHECK(r.status == Status::passing);
  CHECK(r.evidence["endpoint"] == "http://127.0.1.2:2379");
  REQUIRE(r.evidence["attempts"].size() == 1);
  CHECK(r.evidence["attempts"][0]["endpoint"] == "http://127.0.1.1:2379");
  CHECK(r.evidence["attempts"][0]["problem"] == "connection refused");
}

TEST_CASE("etcd_members: v3 fallback when v2 is disabled") {
  SUBCASE("Patroni does not need v2: noted only") {
    auto r = judge_etcd_members({v3_answer("http://127.0.1.1:2379")}, kLab, false);
    CHECK(r.status == Status::passing);
    CHECK(r.evidence["api"] == "v3");
    CHECK(r.evidence["leader"]["name"] == "kaptan1");
    CHECK(r.evidence["v2_disabled"] == json::array({"http://127.0.1.1:2379"}));
    CHECK(contains(r.message, "leader kaptan1"));
  }
  SUBCASE("Patroni's etcd: section needs v2: critical") {
    auto r = judge_etcd_members({v3_answer("http://127.0.1.1:2379")}, kLab, true);
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "v2 API disabled on ha (http://127.0.1.1:2379) but Patroni's etcd: section needs it; "
          "start etcd with --enable-v2=true / ETCD_ENABLE_V2=\"true\"");
    CHECK(r.evidence["api"] == "v3");
  }
  SUBCASE("v2 off on a later member only") {
    auto r = judge_etcd_members(
        {v2_answer("http://127.0.1.1:2379"), v3_answer("http://127.0.1.3:2379")}, kLab, true);
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "v2 API disabled on kaptan2 (http://127.0.1.3:2379)"));
    CHECK(r.evidence["api"] == "v2");
  }
  SUBCASE("no leader per v3 status") {
    auto r = judge_etcd_members(
        {v3_answer("http://127.0.1.1:2379", "v3-member-list.json", "v3-status-no-leader.json")},
        kLab, false);
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "no etcd leader according to ha (http://127.0.1.1:2379)"));
  }
  SUBCASE("v3 gateway not asked (no time left)") {
    auto a = v3_answer("http://127.0.1.1:2379");
    a.v3_members.reset();
    a.v3_status.reset();
    auto r = judge_etcd_members({a}, kLab, false);
    CHECK(r.status == Status::unknown);
    CHECK(contains(r.message, "v3 gateway not asked"));
  }
  SUBCASE("learner and unstarted member through v3") {
    auto r = judge_etcd_members({v3_answer("http://127.0.1.1:2379", "v3-member-list-learner.json")},
                                kLab, false);
    CHECK(r.status == Status::warning);
    CHECK(r.evidence["findings"].size() == 2);
    CHECK(contains(r.message, "(+1 more)"));
  }
}

TEST_CASE("etcd_members: no leader and unreadable leader") {
  auto a = v2_answer("http://127.0.1.2:2379");
  a.v2_leader = data(503, "v2-leader-election-503.json");
  auto r = judge_etcd_members({a}, kLab, true);
  CHECK(r.status == Status::critical);
  CHECK(r.message ==
        "no etcd leader according to kaptan1 (http://127.0.1.2:2379): /v2/members/leader "
        "answered HTTP 503 (During election)");
  CHECK(r.evidence["leader"]["state"] == "none");

  a.v2_leader = failed(HttpError::timeout);
  r = judge_etcd_members({a}, kLab, true);
  CHECK(r.status == Status::unknown);
  CHECK(contains(r.message, "etcd leader could not be read from kaptan1"));
}

TEST_CASE("etcd_members: worst finding first, the rest counted") {
  auto a = v2_answer("http://127.0.1.1:2379", "v2-members-unstarted.json");
  a.v2_leader = data(503, "v2-leader-election-503.json");
  auto r = judge_etcd_members({a}, kLab, true);
  CHECK(r.status == Status::critical);
  CHECK(r.message.rfind("no etcd leader", 0) == 0);
  CHECK(contains(r.message, "(+1 more)"));
  REQUIRE(r.evidence["findings"].size() == 2);
  CHECK(r.evidence["findings"][0]["status"] == "critical");
  CHECK(r.evidence["findings"][1]["status"] == "warning");
}

TEST_CASE("etcd_members: no usable answer is unknown, each endpoint says why") {
  auto garbage = v2_answer("http://127.0.1.2:2379");
  garbage.v2_members = answered(200, "[\"ha\",\"kaptan1\"]");
  auto timeout = down_answer("http://127.0.1.3:2379");
  timeout.v2_members = failed(HttpError::timeout);
  auto r = judge_etcd_members({down_answer("http://127.0.1.1:2379"), garbage, timeout}, kLab, true);
  CHECK(r.status == Status::unknown);
  CHECK(contains(r.message, "no etcd endpoint gave its member list: "));
  CHECK(contains(r.message, "ha (http://127.0.1.1:2379): connection refused"));
  CHECK(contains(r.message, "kaptan1 (http://127.0.1.2:2379): HTTP 200, not a member list"));
  CHECK(contains(r.message, "kaptan2 (http://127.0.1.3:2379): "));
  CHECK(r.evidence["api"].is_null());
  CHECK(r.evidence["leader"].is_null());
  CHECK(r.evidence["attempts"].size() == 3);

  CHECK(judge_etcd_members({}, kLab, true).status == Status::unknown);

  // Even without a member list, v2 disabled is a definite finding.
  auto off = v3_answer("http://127.0.1.1:2379");
  off.v3_members = failed(HttpError::timeout);
  r = judge_etcd_members({off}, kLab, true);
  CHECK(r.status == Status::critical);
  CHECK(contains(r.message, "v2 API disabled"));
  CHECK(contains(r.message, "(+1 more)"));
}

TEST_CASE("etcd_members: factory parameters") {
  Config config;
  config.etcd_endpoints = {"http://127.0.1.1:2379"};
  config.etcd_members = kLab;
  auto build = [&](const std::string& yaml) {
    YamlMap p(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "checks.etcd_members");
    return make_etcd_members_check(p, config);
  };
  CHECK(build("{}") != nullptr);
  CHECK(build("expect: []") != nullptr);
  CHECK(build("expect: [{name: ha, peer_urls: [http://10.0.0.1:2380], client_urls: "
              "'http://10.0.0.1:2379'}]") != nullptr);
  for (const char* yaml : {
           "expect: [{peer_urls: [http://10.0.0.1:2380]}]",     // no name
           "expect: [{name: ha, peer_url: http://a:2380}]",     // typo
           "expect: [{name: ha, peer_urls: [10.0.0.1:2380]}]",  // not a URL
           "expect: [{name: ha}, {name: ha}]",                  // twice
           "expect: {name: ha}",                                // not a list
           "endpoints: []",
       }) {
    CAPTURE(yaml);
    CHECK_THROWS_AS(build(yaml), ConfigError);
  }
}

namespace {

// A canned etcd on a loopback port: answers "METHOD /path" from a table, records requests.
class FakeEtcd {
 public:
  explicit FakeEtcd(asio::io_context& io)
      : acceptor_(io, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io, serve(), asio::detached);
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }
  std::map<std::string, std::pair<int, std::string>> routes;
  std::vector<std::string> seen;  // "METHOD /path body"

 private:
  asio::awaitable<void> serve() {
    for (;;) {
      auto sock = co_await acceptor_.async_accept(asio::use_awaitable);
      asio::co_spawn(acceptor_.get_executor(), handle(std::move(sock)), asio::detached);
    }
  }
  asio::awaitable<void> handle(asio::ip::tcp::socket sock) {
    std::string buf;
    auto n = co_await asio::async_read_until(sock, asio::dynamic_buffer(buf), "\r\n\r\n",
                                             asio::use_awaitable);
    const std::string head = buf.substr(0, n);
    std::size_t length = 0;
    for (const char* h : {"Content-Length: ", "content-length: "}) {
      if (auto p = head.find(h); p != std::string::npos) {
        length = std::stoul(head.substr(p + std::strlen(h)));
      }
    }
    if (buf.size() - n < length) {
      co_await asio::async_read(sock, asio::dynamic_buffer(buf),
                                asio::transfer_exactly(length - (buf.size() - n)),
                                asio::use_awaitable);
    }
    const std::string line = head.substr(0, head.find(' ', head.find(' ') + 1));
    seen.push_back(line + " " + buf.substr(n, length));
    auto it = routes.find(line);
    const auto [status, body] =
        it != routes.end() ? it->second : std::pair<int, std::string>{404, "404 page not found\n"};
    std::string out = "HTTP/1.1 " + std::to_string(status) +
                      " X\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body;
    co_await asio::async_write(sock, asio::buffer(out), asio::use_awaitable);
  }

  asio::ip::tcp::acceptor acceptor_;
};

std::optional<CheckResult> run_check(asio::io_context& io, Check& check) {
  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, Duration{2000}};
  std::optional<CheckResult> result;
  asio::co_spawn(io, check.run(ctx), [&](std::exception_ptr e, CheckResult r) {
    if (!e) result = std::move(r);
    io.stop();
  });
  io.run_for(10s);
  return result;
}

}  // namespace

TEST_CASE("etcd_members: run() falls back to the v3 gateway over HTTP") {
  asio::io_context io;
  FakeEtcd etcd(io);  // v2 routes absent: 404, as with --enable-v2=false
  etcd.routes["POST /v3/cluster/member/list"] = {200, read_data("etcd/v3-member-list.json")};
  etcd.routes["POST /v3/maintenance/status"] = {200, read_data("etcd/v3-status.json")};

  Config config;
  config.etcd_endpoints = {etcd.url()};
  config.patroni_dcs = "etcd";
  YamlMap params(load_yaml_string("expect: [{name: ha, peer_urls: [http://127.0.1.1:2380]}]", "t"),
                 "t", "checks.etcd_members");
  auto check = make_etcd_members_check(params, config);
  auto r = run_check(io, *check);

  REQUIRE(r.has_value());
  CHECK(r->evidence["api"] == "v3");
  CHECK(r->evidence["leader"]["name"] == "kaptan1");
  CHECK(r->status == Status::critical);  // v2 off while Patroni needs it
  // kaptan1 and kaptan2 were not expected by the `expect:` override.
  CHECK(r->evidence["findings"].size() == 3);
  CHECK(std::find(etcd.seen.begin(), etcd.seen.end(), "GET /v2/members ") != etcd.seen.end());
  CHECK(std::find(etcd.seen.begin(), etcd.seen.end(), "POST /v3/cluster/member/list {}") !=
        etcd.seen.end());
  CHECK(std::find(etcd.seen.begin(), etcd.seen.end(), "POST /v3/maintenance/status {}") !=
        etcd.seen.end());
}

TEST_CASE("etcd_members: run() uses v2 when served and skips the v3 gateway") {
  asio::io_context io;
  FakeEtcd etcd(io);
  etcd.routes["GET /v2/members"] = {200, read_data("etcd/v2-members.json")};
  etcd.routes["GET /v2/members/leader"] = {200, read_data("etcd/v2-leader.json")};

  Config config;
  config.etcd_endpoints = {etcd.url()};
  config.etcd_members = kLab;
  config.patroni_dcs = "etcd";
  YamlMap params(load_yaml_string("{}", "t"), "t", "checks.etcd_members");
  auto check = make_etcd_members_check(params, config);
  auto r = run_check(io, *check);

  REQUIRE(r.has_value());
  CHECK(r->status == Status::passing);
  CHECK(r->evidence["api"] == "v2");
  CHECK(etcd.seen.size() == 2);
}
