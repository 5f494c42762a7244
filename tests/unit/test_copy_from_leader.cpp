// copy_from_leader against a real ApiServer over a tmp "leader" directory (and fake
// leaders that lie), installing into a tmp "replica" directory on 127.0.0.1.
#include "remedies/copy_from_leader.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>

#include "src/api_server.hpp"
#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/sha256.hpp"
#include "src/worker.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using fener::test::local_options;
using fener::test::TempDir;

namespace {

const std::string kToken = "0123456789abcdef-secret";

PeerFileRoot swp_root(const std::string& dir) {
  return PeerFileRoot{"data_dir", dir, {".*.swp"}};
}

std::string me() {
  const passwd* pw = ::getpwuid(::geteuid());
  REQUIRE(pw != nullptr);
  return pw->pw_name;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

bool is_symlink(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

YamlMap params_of(const std::string& yaml) {
  return YamlMap(load_yaml_string(yaml, "fener.yaml"), "fener.yaml", "rules.x.ladder[0]");
}

// A leader (kaptan1) on 127.0.0.1 and a replica (kaptan2) whose remedy copies from it.
struct Lab {
  explicit Lab(const std::string& served_as = "kaptan1")
      : server(io, local_options(kToken, served_as)) {
    leader.node_name = served_as;
    leader.peer_files = {swp_root(leader_dir.path)};
    replica.node_name = "kaptan2";
    replica.api.token = kToken;
    replica.pg_owner = me();
    replica.peer_files = {swp_root(replica_dir.path)};
    facts.self_name = "kaptan2";
    facts.leader_name = "kaptan1";
    facts.leader_host = "127.0.0.1";
  }
  void serve_real_files() {
    add_peer_file_routes(server, leader, server_worker);
    server.start();
  }
  std::unique_ptr<Remedy> remedy() {
    YamlMap p = params_of("{port: " + std::to_string(server.port()) + "}");
    auto r = make_copy_from_leader_remedy(p, replica);
    p.finish();
    return r;
  }
  RemedyOutcome run() {
    auto r = remedy();
    HttpClient http(io);
    Worker worker;
    RemedyContext ctx{http, worker, replica, facts, 5s};
    std::optional<RemedyOutcome> out;
    asio::co_spawn(io, r->run(ctx), [&](std::exception_ptr e, RemedyOutcome o) {
      if (!e) out = std::move(o);
      io.stop();
    });
    io.run_for(8s);
    io.restart();
    REQUIRE(out.has_value());
    return *out;
  }
  asio::io_context io;
  TempDir leader_dir, replica_dir;
  Worker server_worker;
  ApiServer server;
  Config leader, replica;
  ClusterFacts facts;
};

}  // namespace

TEST_CASE("copy_mode_allowed: read/write bits within 0644 only") {
  for (unsigned m : {0600u, 0640u, 0644u, 0400u, 0440u, 0444u}) CHECK(copy_mode_allowed(m));
  for (unsigned m : {0700u, 0755u, 0660u, 0666u, 04600u, 02640u, 01644u, 0200u, 0000u})
    CHECK_FALSE(copy_mode_allowed(m));
}

TEST_CASE("copies missing and different files with the leader's bytes and mode") {
  Lab lab;
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  lab.leader_dir.write(".b.swp", "bravo", 0640);
  lab.leader_dir.write("postgresql.conf", "never copied", 0600);
  lab.replica_dir.write(".b.swp", "old bravo", 0600);
  lab.serve_real_files();
  auto out = lab.run();
  INFO(out.message);
  CHECK(out.ok);
  const std::string endpoint = "127.0.0.1:" + std::to_string(lab.server.port());
  CHECK(out.message == "copied .a.swp, .b.swp from leader kaptan1 (" + endpoint + ") into " +
                           lab.replica_dir.path);
  CHECK(lab.replica_dir.read(".a.swp") == "alpha");
  CHECK(lab.replica_dir.read(".b.swp") == "bravo");
  CHECK(mode_of(lab.replica_dir.file(".a.swp")) == 0600);
  CHECK(mode_of(lab.replica_dir.file(".b.swp")) == 0640);
  CHECK(names_in(lab.replica_dir.path) == std::vector<std::string>{".a.swp", ".b.swp"});
  REQUIRE(out.details["copied"].size() == 2);
  const json& a = out.details["copied"][0];
  CHECK(a["name"] == ".a.swp");
  CHECK(a["bytes"] == 5);
  CHECK(a["sha256"] == sha256_hex("alpha"));
  CHECK(a["mode"] == "0600");
  CHECK(a["owner"] == me());
  CHECK(out.details["refused"].empty());
}

TEST_CASE("identical files are left alone") {
  Lab lab;
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  lab.replica_dir.write(".a.swp", "alpha", 0600);
  struct stat before {};
  REQUIRE(::stat(lab.replica_dir.file(".a.swp").c_str(), &before) == 0);
  lab.serve_real_files();
  auto out = lab.run();
  CHECK(out.ok);
  CHECK(out.message.find("nothing to copy") != std::string::npos);
  CHECK(out.details["copied"].empty());
  CHECK(out.details["identical"] == 1);
  struct stat after {};
  REQUIRE(::stat(lab.replica_dir.file(".a.swp").c_str(), &after) == 0);
  CHECK(before.st_ino == after.st_ino);
}

TEST_CASE("refuses a source that is not the leader") {
  Lab lab("kaptan3");  // the fener at the leader's address answers as kaptan3
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  lab.serve_real_files();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  CHECK(out.message.find("not the leader kaptan1") != std::string::npos);
  CHECK(names_in(lab.replica_dir.path).empty());
}

TEST_CASE("refuses when the leader is unknown or is this node") {
  Lab lab;
  lab.serve_real_files();
  lab.facts.leader_host.reset();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  CHECK(out.message.find("leader unknown") != std::string::npos);
  lab.facts.leader_host = "127.0.0.1";
  lab.facts.leader_name = "kaptan2";
  out = lab.run();
  CHECK_FALSE(out.ok);
  CHECK(out.message.find("is the leader") != std::string::npos);
}

TEST_CASE("refuses traversal names a lying leader lists, before touching the disk") {
  Lab lab;
  int file_requests = 0;
  const std::string leader_dir = lab.leader_dir.path;
  lab.server.add_route(
      "GET", "/v1/peer/files", false, true, [](const ApiRequest&) -> asio::awaitable<ApiResponse> {
        json files = json::array();
        for (const std::string name : {"../x.swp", "/etc/passwd", "a%2Fb.swp"})
          files.push_back(
              {{"name", name}, {"size", 1}, {"mode", "0600"}, {"sha256", sha256_hex("x")}});
        json body = {{"node", "kaptan1"}, {"roots", {{{"name", "data_dir"}, {"files", files}}}}};
        co_return ApiResponse::json_body(200, body);
      });
  lab.server.add_route("GET", "/v1/peer/files/", true, true,
                       [&file_requests](const ApiRequest&) -> asio::awaitable<ApiResponse> {
                         ++file_requests;
                         ApiResponse r;
                         r.body = "x";
                         co_return r;
                       });
  lab.server.start();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  CHECK(file_requests == 0);
  REQUIRE(out.details["refused"].size() == 3);
  CHECK(out.details["refused"][0]["reason"].get<std::string>().find("traversal") !=
        std::string::npos);
  CHECK(out.details["refused"][1]["reason"].get<std::string>().find("absolute path") !=
        std::string::npos);
  CHECK(out.details["refused"][2]["reason"].get<std::string>().find("encoded separator") !=
        std::string::npos);
  CHECK(names_in(lab.replica_dir.path).empty());
  CHECK_FALSE(
      std::filesystem::exists(std::filesystem::path(lab.replica_dir.path) / ".." / "x.swp"));
}

TEST_CASE("a file swapped for a symlink on the leader after listing is refused") {
  Lab lab;
  TempDir listed;  // what the leader listed: a regular file
  listed.write(".a.swp", "alpha", 0600);
  REQUIRE(::symlink("/etc/passwd", lab.leader_dir.file(".a.swp").c_str()) == 0);
  const PeerFileRoot listed_root = swp_root(listed.path);
  const PeerFileRoot served_root = swp_root(lab.leader_dir.path);
  lab.server.add_route("GET", "/v1/peer/files", false, true,
                       [listed_root](const ApiRequest&) -> asio::awaitable<ApiResponse> {
                         co_return ApiResponse::json_body(
                             200, to_json(list_peer_roots("kaptan1", {listed_root})));
                       });
  lab.server.add_route("GET", "/v1/peer/files/data_dir/", true, true,
                       [served_root](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
                         auto read = read_peer_file(served_root, req.path.substr(24));
                         co_return ApiResponse::error(http_status(read.refusal), read.error);
                       });
  lab.server.start();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  REQUIRE(out.details["refused"].size() == 1);
  const std::string reason = out.details["refused"][0]["reason"];
  CHECK(reason.find("HTTP 403") != std::string::npos);
  CHECK(reason.find("symlink") != std::string::npos);
  CHECK(names_in(lab.replica_dir.path).empty());
}

TEST_CASE("a symlink at the destination name is not replaced nor followed") {
  Lab lab;
  TempDir elsewhere;
  elsewhere.write("target", "precious", 0600);
  lab.leader_dir.write(".a.swp", "alpha", 0600);
  REQUIRE(::symlink(elsewhere.file("target").c_str(), lab.replica_dir.file(".a.swp").c_str()) == 0);
  lab.serve_real_files();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  REQUIRE(out.details["refused"].size() == 1);
  CHECK(out.details["refused"][0]["reason"].get<std::string>().find("symlink") !=
        std::string::npos);
  CHECK(is_symlink(lab.replica_dir.file(".a.swp")));
  CHECK(elsewhere.read("target") == "precious");
  CHECK(names_in(lab.replica_dir.path) == std::vector<std::string>{".a.swp"});  // no temp left
}

TEST_CASE("install_peer_file refuses bad modes, names and owners") {
  TempDir d;
  CHECK(install_peer_file(d.path, ".a.swp", "x", 0600, me()).ok);
  CHECK(d.read(".a.swp") == "x");
  auto exec = install_peer_file(d.path, ".b.swp", "x", 0755, me());
  CHECK_FALSE(exec.ok);
  CHECK(exec.error.find("not allowed") != std::string::npos);
  CHECK_FALSE(install_peer_file(d.path, ".b.swp", "x", 04600, me()).ok);
  CHECK_FALSE(install_peer_file(d.path, "../.b.swp", "x", 0600, me()).ok);
  auto nobody = install_peer_file(d.path, ".b.swp", "x", 0600, "no-such-user-fener");
  CHECK_FALSE(nobody.ok);
  CHECK(nobody.error.find("no user") != std::string::npos);
  REQUIRE(::mkdir(d.file(".dir.swp").c_str(), 0700) == 0);
  CHECK(install_peer_file(d.path, ".dir.swp", "x", 0600, me()).error.find("not a regular file") !=
        std::string::npos);
  CHECK(names_in(d.path) == std::vector<std::string>{".a.swp", ".dir.swp"});
}

TEST_CASE("plan says what would be copied, from where, into where") {
  Lab lab;
  lab.serve_real_files();
  auto r = lab.remedy();
  CHECK(r->risk() == Risk::safe);
  HttpClient http(lab.io);
  Worker worker;
  RemedyContext ctx{http, worker, lab.replica, lab.facts, 5s};
  CHECK(r->plan(ctx) ==
        "copy files matching .*.swp that are missing or differ from leader "
        "kaptan1 (127.0.0.1:" +
            std::to_string(lab.server.port()) + ") into " + lab.replica_dir.path);
  CHECK(describe_copy({".a.swp", ".b.swp"}, "kaptan1", "127.0.1.2:8009", {"/data/x"}) ==
        "copy .a.swp, .b.swp from leader kaptan1 (127.0.1.2:8009) into /data/x");
  lab.facts.leader_name.reset();
  CHECK(r->plan(ctx).find("unknown") != std::string::npos);
}

TEST_CASE("copy_from_leader parameters") {
  Config config;
  config.peer_files = {swp_root("/data")};
  config.pg_owner = "postgres";
  {
    YamlMap p = params_of("{owner: '', port: 1}");
    CHECK_THROWS_AS(make_copy_from_leader_remedy(p, config), ConfigError);
  }
  {
    YamlMap p = params_of("{roots: [other]}");
    CHECK_THROWS_AS(make_copy_from_leader_remedy(p, config), ConfigError);
  }
  {
    YamlMap p = params_of("{timeout: 10s, owner: pg, roots: data_dir}");
    CHECK(make_copy_from_leader_remedy(p, config) != nullptr);
    p.finish();
  }
}

TEST_CASE("the client enforces api.max_file_size and the listed size and SHA-256") {
  // A lying leader: lists .big.swp over the cap (never requested), .small.swp as 5 bytes
  // but sends 4 KiB (over the cap: curl stops reading), .short.swp as "alpha" but sends
  // "alpho" (same size, other SHA-256).
  Lab lab;
  lab.replica.api.max_file_size = 1024;
  std::vector<std::string> requested;
  lab.server.add_route(
      "GET", "/v1/peer/files", false, true, [](const ApiRequest&) -> asio::awaitable<ApiResponse> {
        json files = json::array();
        files.push_back({{"name", ".big.swp"},
                         {"size", 2048},
                         {"mode", "0600"},
                         {"sha256", sha256_hex(std::string(2048, 'b'))}});
        for (const std::string name : {".small.swp", ".short.swp"})
          files.push_back(
              {{"name", name}, {"size", 5}, {"mode", "0600"}, {"sha256", sha256_hex("alpha")}});
        json body = {{"node", "kaptan1"}, {"roots", {{{"name", "data_dir"}, {"files", files}}}}};
        co_return ApiResponse::json_body(200, body);
      });
  lab.server.add_route("GET", "/v1/peer/files/", true, true,
                       [&requested](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
                         requested.push_back(req.path);
                         ApiResponse r;
                         r.content_type = "application/octet-stream";
                         const bool small = req.path.find(".small.swp") != std::string::npos;
                         r.body = small ? std::string(4096, 'x') : "alpho";
                         r.headers.emplace_back("X-Fener-Mode", "0600");
                         r.headers.emplace_back("X-Fener-Sha256", sha256_hex("alpha"));
                         co_return r;
                       });
  lab.server.start();
  auto out = lab.run();
  CHECK_FALSE(out.ok);
  REQUIRE(out.details["refused"].size() == 3);
  auto reason_of = [&](const std::string& name) {
    for (const auto& r : out.details["refused"])
      if (r["name"] == name) return r["reason"].get<std::string>();
    return std::string("(not refused)");
  };
  CHECK(reason_of(".big.swp").find("too large (2048 bytes)") != std::string::npos);
  CHECK(reason_of(".small.swp").find("larger than 1024") != std::string::npos);
  CHECK(reason_of(".short.swp").find("SHA-256 mismatch") != std::string::npos);
  CHECK(std::none_of(requested.begin(), requested.end(),
                     [](const std::string& p) { return p.find(".big.swp") != std::string::npos; }));
  CHECK(names_in(lab.replica_dir.path).empty());
}
