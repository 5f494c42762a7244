// leader_files: the pure judge, the leader from /cluster, and the whole check against a
// fake Patroni and a real ApiServer serving a tmp "leader" directory.
#include "checks/leader_files.hpp"

#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "src/api_server.hpp"
#include "src/config_error.hpp"
#include "src/sha256.hpp"
#include "src/worker.hpp"
#include "tests/unit/api_support.hpp"
#include "tests/unit/support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using fener::test::FakePatroni;
using fener::test::local_options;
using fener::test::run_check;
using fener::test::TempDir;

namespace {

const std::string kToken = "0123456789abcdef-secret";

PeerFileRoot swp_root(const std::string& dir) {
  return PeerFileRoot{"data_dir", dir, {".*.swp"}};
}

PeerFile file(const std::string& name, const std::string& content, const std::string& mode) {
  return PeerFile{name, static_cast<std::int64_t>(content.size()), mode, sha256_hex(content)};
}

std::string cluster_body(const std::string& leader, const std::string& leader_host) {
  json members = json::array();
  for (const std::string name : {"kaptan1", "kaptan2"}) {
    const bool lead = name == leader;
    members.push_back({{"name", name},
                       {"role", lead ? "leader" : "replica"},
                       {"state", lead ? "running" : "streaming"},
                       {"host", lead ? leader_host : "127.0.9.9"},
                       {"timeline", 1}});
  }
  return json{{"members", members}}.dump();
}

YamlMap params_of(const std::string& yaml) {
  return YamlMap(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "checks.leader_files");
}

// A leader (kaptan1) serving its tmp dir, a replica (kaptan2) with its own, and Patroni.
struct Lab {
  Lab() : patroni(io), server(io, local_options(kToken, "kaptan1")) {
    Config leader_config;
    leader_config.node_name = "kaptan1";
    leader_config.peer_files = {swp_root(leader_dir.path)};
    add_peer_file_routes(server, leader_config, server_worker);
    server.start();
    patroni.bodies["/cluster"] = cluster_body("kaptan1", "127.0.0.1");
    replica.node_name = "kaptan2";
    replica.patroni_url = patroni.url();
    replica.api.token = kToken;
    replica.peer_files = {swp_root(replica_dir.path)};
  }
  CheckResult run(const std::string& yaml = "") {
    YamlMap p = params_of(yaml.empty() ? "{port: " + std::to_string(server.port()) + "}" : yaml);
    auto check = make_leader_files_check(p, replica);
    p.finish();
    auto r = run_check(io, *check, 3s);
    REQUIRE(r.has_value());
    return *r;
  }
  asio::io_context io;
  TempDir leader_dir, replica_dir;
  Worker server_worker;
  FakePatroni patroni;
  ApiServer server;
  Config replica;
};

}  // namespace

TEST_CASE("find_cluster_leader takes the single leader and its host") {
  std::string why;
  auto l = find_cluster_leader(json::parse(cluster_body("kaptan1", "10.0.0.2")), &why);
  REQUIRE(l);
  CHECK(l->name == "kaptan1");
  CHECK(l->host == "10.0.0.2");
  json none = json::parse(cluster_body("nobody", "x"));
  CHECK_FALSE(find_cluster_leader(none, &why));
  CHECK(why == "no leader in /cluster");
  json two = json::parse(cluster_body("kaptan1", "x"));
  two["members"][1]["role"] = "standby_leader";
  CHECK_FALSE(find_cluster_leader(two, &why));
  CHECK(why.find("more than one") != std::string::npos);
  CHECK_FALSE(find_cluster_leader(json::array(), &why));
  CHECK(peer_api_url("fe80::1", 8009) == "http://[fe80::1]:8009");
  CHECK(peer_api_url("10.0.0.2", 8009) == "http://10.0.0.2:8009");
}

TEST_CASE("judge_leader_files: critical for missing, warning for differing, passing when same") {
  PeerFilesComparison cmp;
  auto r = judge_leader_files(cmp, "kaptan1", "http://10.0.0.2:8009/v1/peer/files");
  CHECK(r.status == Status::passing);
  CHECK(r.message.find("no allow-listed files") != std::string::npos);

  cmp.identical = 2;
  r = judge_leader_files(cmp, "kaptan1", "src");
  CHECK(r.status == Status::passing);
  CHECK(r.message == "2 allow-listed files same as on leader kaptan1");

  cmp.differing.push_back(
      {"data_dir", file(".b.swp", "b", "0600"), file(".b.swp", "b", "0640"), false, true});
  r = judge_leader_files(cmp, "kaptan1", "src");
  CHECK(r.status == Status::warning);
  CHECK(r.message.find("data_dir/.b.swp (mode 0640 here, 0600 on the leader)") !=
        std::string::npos);

  cmp.missing.push_back({"data_dir", file(".a.swp", "alpha", "0600"), std::nullopt, true, true});
  r = judge_leader_files(cmp, "kaptan1", "src");
  CHECK(r.status == Status::critical);
  CHECK(r.message.find("1 file of leader kaptan1 missing here: data_dir/.a.swp") !=
        std::string::npos);
  REQUIRE(r.evidence["missing"].size() == 1);
  CHECK(r.evidence["missing"][0]["root"] == "data_dir");
  CHECK(r.evidence["missing"][0]["name"] == ".a.swp");
  CHECK(r.evidence["missing"][0]["size"] == 5);
  CHECK(r.evidence["missing"][0]["mode"] == "0600");
  CHECK(r.evidence["missing"][0]["sha256"] == sha256_hex("alpha"));
  CHECK(r.evidence["leader"] == "kaptan1");
  CHECK(r.evidence["source"] == "src");

  PeerFilesComparison only_unknown;
  only_unknown.unknown.push_back("data_dir: the leader does not serve this root");
  CHECK(judge_leader_files(only_unknown, "kaptan1", "src").status == Status::unknown);
}

TEST_CASE("leader_files check: a file the leader has is missing here -> critical") {
  Lab lab;
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  lab.leader_dir.write(".b.swp", "bravo", 0640);
  lab.replica_dir.write(".b.swp", "bravo", 0640);
  auto r = lab.run();
  CHECK(r.status == Status::critical);
  CHECK(r.message.find("data_dir/.a.swp") != std::string::npos);
  REQUIRE(r.evidence["missing"].size() == 1);
  CHECK(r.evidence["missing"][0]["name"] == ".a.swp");
  CHECK(r.evidence["leader"] == "kaptan1");
  CHECK(r.evidence["source"] ==
        "http://127.0.0.1:" + std::to_string(lab.server.port()) + "/v1/peer/files");
}

TEST_CASE("leader_files check: same files -> passing; another mode -> warning") {
  Lab lab;
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  lab.replica_dir.write(".a.swp", "alpha", 0600);
  lab.replica_dir.write(".extra.swp", "only here", 0600);
  auto r = lab.run();
  CHECK(r.status == Status::passing);
  CHECK(r.message == "1 allow-listed file same as on leader kaptan1");

  Lab lab2;
  lab2.leader_dir.write(".a.swp", "alpha", 0600);
  lab2.replica_dir.write(".a.swp", "alpha", 0644);
  r = lab2.run();
  CHECK(r.status == Status::warning);
}

TEST_CASE("leader_files check: this node is the leader -> passing") {
  Lab lab;
  lab.patroni.bodies["/cluster"] = cluster_body("kaptan2", "127.0.0.1");
  auto r = lab.run();
  CHECK(r.status == Status::passing);
  CHECK(r.message == "this node is the leader");
}

TEST_CASE("leader_files check: unknown when it cannot tell") {
  SUBCASE("no token") {
    Lab lab;
    lab.replica.api.token.clear();
    auto r = lab.run();
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find("no api.token") != std::string::npos);
  }
  SUBCASE("wrong token") {
    Lab lab;
    lab.replica.api.token = "another-token-0123456789";
    auto r = lab.run();
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find("HTTP 401") != std::string::npos);
  }
  SUBCASE("leader's fener not listening") {
    Lab lab;
    lab.server.stop();
    auto r = lab.run();
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find("connection refused") != std::string::npos);
  }
  SUBCASE("Patroni answers garbage") {
    Lab lab;
    lab.patroni.bodies["/cluster"] = "<html>";
    auto r = lab.run();
    CHECK(r.status == Status::unknown);
  }
  SUBCASE("no leader") {
    Lab lab;
    lab.patroni.bodies["/cluster"] = cluster_body("nobody", "127.0.0.1");
    auto r = lab.run();
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find("no leader") != std::string::npos);
  }
  SUBCASE("the answer comes from another node than the leader") {
    Lab lab;
    // Patroni says kaptan1 leads; the fener at the port asked is kaptan3.
    ApiServer impostor(lab.io, local_options(kToken, "kaptan3"));
    Config c;
    c.node_name = "kaptan3";
    c.peer_files = {swp_root(lab.leader_dir.path)};
    add_peer_file_routes(impostor, c, lab.server_worker);
    impostor.start();
    auto r = lab.run("{port: " + std::to_string(impostor.port()) + "}");
    CHECK(r.status == Status::unknown);
    CHECK(r.message.find("not the leader kaptan1") != std::string::npos);
  }
}

TEST_CASE("leader_files parameters") {
  Config config;
  config.patroni_url = "http://127.0.0.1:8008";
  config.peer_files = {swp_root("/data"), PeerFileRoot{"conf", "/etc/x", {"*.conf"}}};
  {
    YamlMap p = params_of("{roots: [conf]}");
    CHECK(make_leader_files_check(p, config) != nullptr);
  }
  {
    YamlMap p = params_of("{roots: [nope]}");
    CHECK_THROWS_AS(make_leader_files_check(p, config), ConfigError);
  }
  {
    YamlMap p = params_of("{port: 70000}");
    CHECK_THROWS_AS(make_leader_files_check(p, config), ConfigError);
  }
  {
    Config no_patroni = config;
    no_patroni.patroni_url.clear();
    YamlMap p = params_of("{}");
    CHECK_THROWS_AS(make_leader_files_check(p, no_patroni), ConfigError);
  }
}

TEST_CASE("port parameter defaults to api.listen's port, else 8009") {
  Config config;
  YamlMap p = params_of("{}");
  CHECK(read_peer_port_param(p, config) == kDefaultApiPort);
  config.api.listen = "10.0.0.2:9010";
  YamlMap q = params_of("{}");
  CHECK(read_peer_port_param(q, config) == 9010);
}
