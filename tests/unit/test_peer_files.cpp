// The peer file allow-list: names, listing and reading a tmp directory with symlinks,
// FIFOs and directories planted in it, the comparison, and the two routes.
#include "src/peer_files.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/local/stream_protocol.hpp>

#include <doctest/doctest.h>

#include "src/http_client.hpp"
#include "src/sha256.hpp"
#include "src/worker.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using json = nlohmann::json;
using fener::test::local_options;
using fener::test::raw_exchange;
using fener::test::RawReply;
using fener::test::run_co;
using fener::test::TempDir;

namespace {

const std::string kToken = "0123456789abcdef-secret";

PeerFileRoot swp_root(const std::string& dir) {
  return PeerFileRoot{"data_dir", dir, {".*.swp"}};
}

PeerFile file(const std::string& name, const std::string& content, const std::string& mode) {
  return PeerFile{name, static_cast<std::int64_t>(content.size()), mode, sha256_hex(content)};
}

PeerListing listing(const std::string& node, std::vector<PeerFile> files,
                    const std::string& root = "data_dir") {
  return PeerListing{node, {PeerRootListing{root, std::move(files), ""}}};
}

// The tmp dir every routing test serves: two swap files, and things never to be served.
void plant(const TempDir& d) {
  d.write(".a.swp", "alpha", 0600);
  d.write(".b.swp", "bravo!", 0640);
  d.write("postgresql.conf", "secret = 1", 0600);
  REQUIRE(::symlink("/etc/passwd", d.file(".link.swp").c_str()) == 0);
  REQUIRE(::mkdir(d.file(".dir.swp").c_str(), 0700) == 0);
  REQUIRE(::mkfifo(d.file(".fifo.swp").c_str(), 0600) == 0);
}

}  // namespace

TEST_CASE("sha256_hex") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("invalid_name_reason refuses everything but plain allow-listed names") {
  CHECK_FALSE(invalid_name_reason(".a.swp"));
  CHECK(invalid_name_reason("")->find("empty") != std::string::npos);
  CHECK(invalid_name_reason("..")->find("traversal") != std::string::npos);
  CHECK(invalid_name_reason("../x")->find("traversal") != std::string::npos);
  CHECK(invalid_name_reason("a/../../x")->find("traversal") != std::string::npos);
  CHECK(invalid_name_reason("."));
  CHECK(invalid_name_reason("/etc/passwd")->find("absolute path") != std::string::npos);
  CHECK(invalid_name_reason("a/b")->find("separator") != std::string::npos);
  CHECK(invalid_name_reason("a%2Fb")->find("encoded separator") != std::string::npos);
  CHECK(invalid_name_reason("a%2fb")->find("encoded separator") != std::string::npos);
  CHECK(invalid_name_reason(std::string("a\0b", 3))->find("NUL") != std::string::npos);
  CHECK(invalid_name_reason("a\nb")->find("control") != std::string::npos);
  CHECK(invalid_name_reason(std::string(256, 'a')));
  CHECK(invalid_name_reason("..\\x")->find("backslash") != std::string::npos);
  CHECK(invalid_name_reason("a\\b.swp")->find("backslash") != std::string::npos);
  CHECK(invalid_name_reason("%2e%2e")->find("double encoding") != std::string::npos);
  CHECK(invalid_name_reason("%5c.swp")->find("double encoding") != std::string::npos);
  // Overlong forms of '.' and '/', a lone continuation byte, a truncated sequence, a
  // UTF-16 surrogate: never names. Real UTF-8 is fine.
  CHECK(invalid_name_reason("\xC0\xAE\xC0\xAE")->find("UTF-8") != std::string::npos);
  CHECK(invalid_name_reason("\xC0\xAF.swp")->find("UTF-8") != std::string::npos);
  CHECK(invalid_name_reason("\xE0\x80\xAE.swp")->find("UTF-8") != std::string::npos);
  CHECK(invalid_name_reason("\x80.swp"));
  CHECK(invalid_name_reason(".a\xC3"));
  CHECK(invalid_name_reason("\xED\xA0\x80.swp"));
  CHECK_FALSE(
      invalid_name_reason(".\xC3\xA7"
                          "ay.swp"));  // .çay.swp

  const PeerFileRoot root = swp_root("/data");
  CHECK_FALSE(invalid_name_reason(".a.swp", root));
  CHECK(invalid_name_reason("postgresql.conf", root)->find("not allow-listed") !=
        std::string::npos);
  CHECK(invalid_name_reason("a.swp", root));  // the pattern wants a leading dot
  CHECK(invalid_name_reason("../.a.swp", root)->find("traversal") != std::string::npos);
}

TEST_CASE("mode strings") {
  CHECK(mode_string(0600) == "0600");
  CHECK(mode_string(04755) == "4755");
  CHECK(parse_mode_string("0640") == 0640u);
  CHECK(parse_mode_string("644") == 0644u);
  CHECK_FALSE(parse_mode_string("0800"));
  CHECK_FALSE(parse_mode_string("12"));
  CHECK_FALSE(parse_mode_string("rw-r--r--"));
}

TEST_CASE("listing a root: regular allow-listed files only, hashed; symlinks never") {
  TempDir d;
  plant(d);
  const PeerRootListing l = list_peer_root(swp_root(d.path));
  CHECK(l.error.empty());
  REQUIRE(l.files.size() == 2);
  CHECK(l.files[0].name == ".a.swp");
  CHECK(l.files[0].size == 5);
  CHECK(l.files[0].mode == "0600");
  CHECK(l.files[0].sha256 == sha256_hex("alpha"));
  CHECK(l.files[1].name == ".b.swp");
  CHECK(l.files[1].mode == "0640");

  CHECK(list_peer_root(swp_root(d.path), 5).files.size() == 1);  // .b.swp is over the cap
  CHECK_FALSE(list_peer_root(swp_root(d.file("missing"))).error.empty());
}

TEST_CASE("a root that is itself a symlink is not listed") {
  TempDir d;
  plant(d);
  TempDir other;
  REQUIRE(::symlink(d.path.c_str(), other.file("root").c_str()) == 0);
  CHECK_FALSE(list_peer_root(swp_root(other.file("root"))).error.empty());
  CHECK(read_peer_file(swp_root(other.file("root")), ".a.swp").refusal == PeerFileRefusal::symlink);
}

TEST_CASE("reading one file safely") {
  TempDir d;
  plant(d);
  const PeerFileRoot root = swp_root(d.path);
  auto ok = read_peer_file(root, ".b.swp");
  REQUIRE(ok.ok());
  CHECK(ok.bytes == "bravo!");
  CHECK(ok.file.mode == "0640");
  CHECK(ok.file.sha256 == sha256_hex("bravo!"));

  auto link = read_peer_file(root, ".link.swp");
  CHECK(link.refusal == PeerFileRefusal::symlink);
  CHECK(link.error.find("symlink") != std::string::npos);
  CHECK(read_peer_file(root, ".dir.swp").refusal == PeerFileRefusal::not_regular);
  CHECK(read_peer_file(root, ".fifo.swp").refusal == PeerFileRefusal::not_regular);
  CHECK(read_peer_file(root, ".none.swp").refusal == PeerFileRefusal::not_found);
  CHECK(read_peer_file(root, "postgresql.conf").refusal == PeerFileRefusal::not_allow_listed);
  CHECK(read_peer_file(root, "../.a.swp").refusal == PeerFileRefusal::bad_name);
  auto big = read_peer_file(root, ".b.swp", 5);
  CHECK(big.refusal == PeerFileRefusal::too_large);
  CHECK(big.error.find("too large") != std::string::npos);
  CHECK(http_status(big.refusal) == 413);
}

TEST_CASE("listing JSON round trip and garbage") {
  const PeerListing l = listing("kaptan1", {file(".a.swp", "alpha", "0600")});
  std::string why;
  auto back = parse_peer_listing(to_json(l), &why);
  REQUIRE(back.has_value());
  CHECK(back->node == "kaptan1");
  REQUIRE(back->roots.size() == 1);
  REQUIRE(back->roots[0].files.size() == 1);
  CHECK(back->roots[0].files[0].sha256 == sha256_hex("alpha"));

  CHECK_FALSE(parse_peer_listing(json::array(), &why));
  CHECK_FALSE(parse_peer_listing(json{{"node", "x"}}, &why));
  CHECK(why.find("roots") != std::string::npos);
  json bad = to_json(l);
  bad["roots"][0]["files"][0]["sha256"] = "xyz";
  CHECK_FALSE(parse_peer_listing(bad, &why));
  bad = to_json(l);
  bad["roots"][0]["files"][0]["mode"] = "rw";
  CHECK_FALSE(parse_peer_listing(bad, &why));
}

TEST_CASE("peer_file_path percent-encodes names") {
  CHECK(peer_file_path("data_dir", ".a.swp") == "/v1/peer/files/data_dir/.a.swp");
  CHECK(peer_file_path("data_dir", "a b/c") == "/v1/peer/files/data_dir/a%20b%2Fc");
}

TEST_CASE("compare_peer_files: missing, differing, identical, refused, unknown") {
  const std::vector<PeerFileRoot> roots = {swp_root("/data")};
  const PeerListing leader = listing("kaptan1", {
                                                    file(".a.swp", "alpha", "0600"),
                                                    file(".b.swp", "bravo", "0600"),
                                                    file(".c.swp", "charlie", "0600"),
                                                    file(".d.swp", "delta", "0600"),
                                                    file("../x", "x", "0600"),
                                                    file("postgresql.conf", "x", "0600"),
                                                });
  const PeerListing local = listing("kaptan2", {
                                                   file(".b.swp", "bravo", "0600"),
                                                   file(".c.swp", "CHARLIE", "0600"),
                                                   file(".d.swp", "delta", "0640"),
                                                   file(".mine.swp", "only here", "0600"),
                                               });
  const auto cmp = compare_peer_files(leader, local, roots);
  REQUIRE(cmp.missing.size() == 1);
  CHECK(cmp.missing[0].leader.name == ".a.swp");
  CHECK_FALSE(cmp.missing[0].local);
  REQUIRE(cmp.differing.size() == 2);
  CHECK(cmp.differing[0].leader.name == ".c.swp");
  CHECK(cmp.differing[0].content_differs);
  CHECK_FALSE(cmp.differing[0].mode_differs);
  CHECK(cmp.differing[1].leader.name == ".d.swp");
  CHECK_FALSE(cmp.differing[1].content_differs);
  CHECK(cmp.differing[1].mode_differs);
  CHECK(cmp.identical == 1);
  REQUIRE(cmp.refused.size() == 2);
  CHECK(cmp.refused[0].reason.find("traversal") != std::string::npos);
  CHECK(cmp.refused[1].reason.find("not allow-listed") != std::string::npos);
  CHECK(cmp.unknown.empty());

  const auto no_root = compare_peer_files(listing("kaptan1", {}, "other"), local, roots);
  REQUIRE(no_root.unknown.size() == 1);
  CHECK(no_root.unknown[0].find("does not serve") != std::string::npos);
  PeerListing broken = leader;
  broken.roots[0].error = "cannot open /data: Permission denied";
  CHECK(compare_peer_files(broken, local, roots).unknown.size() == 1);
  CHECK(compare_peer_files(leader, local, {}).missing.empty());
}

TEST_CASE("peer file routes: listing, bytes with headers, and every refusal") {
  TempDir d;
  plant(d);
  Config config;
  config.node_name = "kaptan1";
  config.peer_files = {swp_root(d.path)};
  asio::io_context io;
  Worker worker;
  ApiServer server(io, local_options(kToken));
  add_peer_file_routes(server, config, worker, 5);  // .b.swp (6 bytes) is over this cap
  server.start();
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  const std::string auth = "Authorization: Bearer " + kToken;
  HttpClient http(io);
  std::vector<HttpResult> r;
  RawReply dotdot, absolute, encoded;
  run_co(io, [&]() -> asio::awaitable<void> {
    std::vector<HttpRequest> reqs = {
        {.url = base + "/v1/peer/files", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/.a.swp", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/.link.swp", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/postgresql.conf", .headers = {auth}},
        {.url = base + "/v1/peer/files/etc/passwd", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/.b.swp", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/.none.swp", .headers = {auth}},
        {.url = base + "/v1/peer/files/data_dir/.a.swp"},
        {.url = base + "/v1/peer/files/data_dir/.fifo.swp", .headers = {auth}},
    };
    r = co_await fetch_all(http, std::move(reqs));
    const auto port = server.port();
    const std::string tail = " HTTP/1.1\r\nHost: x\r\n" + auth + "\r\nConnection: close\r\n\r\n";
    std::string a = "GET /v1/peer/files/data_dir/../.a.swp" + tail;
    dotdot = co_await raw_exchange(port, std::move(a), 2s);
    std::string b = "GET /v1/peer/files/data_dir//etc/passwd" + tail;
    absolute = co_await raw_exchange(port, std::move(b), 2s);
    std::string c = "GET /v1/peer/files/data_dir/a%2Fb.swp" + tail;
    encoded = co_await raw_exchange(port, std::move(c), 2s);
  });
  REQUIRE(r.size() == 9);
  REQUIRE(r[0].status == 200);
  auto body = parse_json(r[0].body);
  REQUIRE(body);
  CHECK((*body)["node"] == "kaptan1");
  REQUIRE((*body)["roots"].size() == 1);
  CHECK((*body)["roots"][0]["name"] == "data_dir");
  REQUIRE((*body)["roots"][0]["files"].size() == 1);  // .b.swp is over the cap
  CHECK((*body)["roots"][0]["files"][0]["name"] == ".a.swp");
  CHECK((*body)["roots"][0]["files"][0]["mode"] == "0600");

  CHECK(r[1].status == 200);
  CHECK(r[1].body == "alpha");
  CHECK(r[1].header("content-type") == "application/octet-stream");
  CHECK(r[1].header("x-fener-mode") == "0600");
  CHECK(r[1].header("x-fener-sha256") == sha256_hex("alpha"));
  CHECK(r[1].header("x-fener-node") == "kaptan1");

  auto error_of = [](const HttpResult& x) {
    auto j = parse_json(x.body);
    return j ? j->value("error", std::string()) : std::string();
  };
  CHECK(r[2].status == 403);
  CHECK(error_of(r[2]).find("symlink") != std::string::npos);
  CHECK(r[3].status == 403);
  CHECK(error_of(r[3]).find("not allow-listed") != std::string::npos);
  CHECK(r[4].status == 404);
  CHECK(error_of(r[4]).find("unknown root") != std::string::npos);
  CHECK(r[5].status == 413);
  CHECK(error_of(r[5]).find("too large") != std::string::npos);
  CHECK(r[6].status == 404);
  CHECK(r[7].status == 401);
  CHECK(r[8].status == 403);

  CHECK(dotdot.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(dotdot.bytes.find("traversal") != std::string::npos);
  CHECK(absolute.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(absolute.bytes.find("absolute path") != std::string::npos);
  CHECK(encoded.bytes.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(encoded.bytes.find("encoded separator") != std::string::npos);
}

namespace {

// A root below a parent that holds an allow-listed name ("../.outside.swp" would reach
// it if traversal worked), and a file outside with a marker that must never be served.
struct Jail {
  Jail() {
    REQUIRE(::mkdir(parent.file("root").c_str(), 0700) == 0);
    root = parent.file("root");
    parent.write(".outside.swp", kOutside, 0600);
    std::ofstream(root + "/.a.swp") << "alpha";
    ::chmod((root + "/.a.swp").c_str(), 0600);
  }
  static constexpr const char* kOutside = "OUTSIDE-MARKER-5f1c";
  TempDir parent;
  std::string root;
};

std::string status_line(const RawReply& r) {
  return r.bytes.substr(0, r.bytes.find("\r\n"));
}

}  // namespace

TEST_CASE("peer file route: traversal, encodings, absolute paths never leave the root") {
  Jail j;
  Config config;
  config.node_name = "kaptan1";
  config.peer_files = {swp_root(j.root)};
  asio::io_context io;
  Worker worker;
  ApiServer server(io, local_options(kToken));
  add_peer_file_routes(server, config, worker);
  server.start();
  // target -> the status expected
  const std::vector<std::pair<std::string, int>> cases = {
      {"/v1/peer/files/data_dir/..", 400},
      {"/v1/peer/files/data_dir/../.outside.swp", 400},
      {"/v1/peer/files/data_dir/../..", 400},
      {"/v1/peer/files/data_dir/%2e%2e/.outside.swp", 400},
      {"/v1/peer/files/data_dir/%2E%2E%2F.outside.swp", 400},
      {"/v1/peer/files/data_dir/%252e%252e%252f.outside.swp", 400},
      {"/v1/peer/files/data_dir/..%5C.outside.swp", 400},
      {"/v1/peer/files/data_dir/..\\.outside.swp", 400},
      {"/v1/peer/files/data_dir/.a.swp%00", 400},
      {"/v1/peer/files/data_dir/%00", 400},
      {"/v1/peer/files/data_dir/%C0%AE%C0%AE%C0%AF.outside.swp", 400},
      {"/v1/peer/files/data_dir/%C0%AE%C0%AE", 400},
      {"/v1/peer/files/data_dir//.a.swp", 400},
      {"/v1/peer/files/data_dir/.a.swp/", 400},
      {"/v1/peer/files/data_dir/", 400},
      {"/v1/peer/files/data_dir/./.a.swp", 400},
      {"/v1/peer/files/data_dir/%2Fetc%2Fpasswd", 400},
      {"/v1/peer/files/data_dir//etc/passwd", 400},
      {"/v1/peer/files/%2Fetc%2Fpasswd", 400},
      {"/v1/peer/files//etc/passwd", 404},
      {"/v1/peer/files/../../etc/passwd", 404},
      {"/v1/peer/files/data_dir", 404},
      {"/etc/passwd", 404},
      {"/v1/peer/files/data_dir/%zz", 400},
  };
  std::vector<RawReply> replies;
  RawReply plain;
  run_co(io, [&]() -> asio::awaitable<void> {
    const auto port = server.port();
    const std::string tail =
        " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kToken + "\r\nConnection: close\r\n\r\n";
    for (const auto& [target, status] : cases) {
      std::string req = "GET " + target + tail;
      replies.push_back(co_await raw_exchange(port, std::move(req), 2s));
    }
    std::string ok = "GET /v1/peer/files/data_dir/.a.swp" + tail;
    plain = co_await raw_exchange(port, std::move(ok), 2s);
  });
  REQUIRE(replies.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].first, " -> ", status_line(replies[i]));
    CHECK(status_line(replies[i]).rfind("HTTP/1.1 " + std::to_string(cases[i].second), 0) == 0);
    CHECK(replies[i].bytes.find(Jail::kOutside) == std::string::npos);
    CHECK(replies[i].bytes.find("root:") == std::string::npos);  // /etc/passwd
  }
  CHECK(status_line(plain) == "HTTP/1.1 200 OK");  // the control: the route does serve
}

TEST_CASE("peer files: symlinks, hard links, FIFOs, sockets, directories are refused at once") {
  Jail j;
  const std::string outside = j.parent.file(".outside.swp");
  const std::string inside = j.root + "/.a.swp";
  // A name in the allow-list pointing outside, and one pointing at a served file: both
  // refused (O_NOFOLLOW); fener never resolves links, so it never has to judge targets.
  REQUIRE(::symlink(outside.c_str(), (j.root + "/.out.swp").c_str()) == 0);
  REQUIRE(::symlink(inside.c_str(), (j.root + "/.in.swp").c_str()) == 0);
  // A hard link to the outside file, and a second link to a file inside.
  REQUIRE(::link(outside.c_str(), (j.root + "/.hard.swp").c_str()) == 0);
  std::ofstream(j.root + "/.twin.swp") << "twin";
  REQUIRE(::link((j.root + "/.twin.swp").c_str(), (j.root + "/.twin2.swp").c_str()) == 0);
  REQUIRE(::mkfifo((j.root + "/.fifo.swp").c_str(), 0600) == 0);
  REQUIRE(::mkdir((j.root + "/.dir.swp").c_str(), 0700) == 0);
  // A unix socket (open gives ENXIO) and, where the sandbox allows it, a device.
  asio::io_context sio;
  asio::local::stream_protocol::acceptor sock(
      sio, asio::local::stream_protocol::endpoint(j.root + "/.sock.swp"));
  const bool have_device =
      ::mknod((j.root + "/.null.swp").c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0;
  const PeerFileRoot root = swp_root(j.root);

  const auto start = std::chrono::steady_clock::now();
  CHECK(read_peer_file(root, ".out.swp").refusal == PeerFileRefusal::symlink);
  CHECK(read_peer_file(root, ".in.swp").refusal == PeerFileRefusal::symlink);
  const auto hard = read_peer_file(root, ".hard.swp");
  CHECK(hard.refusal == PeerFileRefusal::hard_link);
  CHECK(hard.error.find("hard links") != std::string::npos);
  CHECK(hard.bytes.empty());
  CHECK(read_peer_file(root, ".twin.swp").refusal == PeerFileRefusal::hard_link);
  CHECK(read_peer_file(root, ".fifo.swp").refusal == PeerFileRefusal::not_regular);
  CHECK(read_peer_file(root, ".dir.swp").refusal == PeerFileRefusal::not_regular);
  CHECK(read_peer_file(root, ".sock.swp").refusal == PeerFileRefusal::not_regular);
  if (have_device) CHECK(read_peer_file(root, ".null.swp").refusal == PeerFileRefusal::not_regular);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed < 2s);  // a FIFO without a writer did not block the open
  CHECK(http_status(PeerFileRefusal::hard_link) == 403);
  CHECK(read_peer_file(root, ".a.swp").ok());

  // The listing offers none of them.
  const PeerRootListing l = list_peer_root(root);
  REQUIRE(l.files.size() == 1);
  CHECK(l.files[0].name == ".a.swp");

  // A root whose last component is a symlink is refused too; one through a symlinked
  // parent directory is the operator's configuration and is followed.
  REQUIRE(::symlink(j.root.c_str(), j.parent.file("via").c_str()) == 0);
  CHECK(read_peer_file(swp_root(j.parent.file("via")), ".a.swp").refusal ==
        PeerFileRefusal::symlink);
  CHECK(read_peer_file(swp_root(j.parent.file("via") + "/"), ".a.swp").ok());
}

TEST_CASE("peer files: a symlink swapped in between check and open never serves its target") {
  // One thread keeps replacing .race.swp, atomically (rename), by a regular file or by a
  // symlink to the outside file; many requests go to the real server meanwhile. Every
  // answer must be the inside content or a refusal; never the outside marker.
  Jail j;
  const std::string race = j.root + "/.race.swp";
  std::ofstream(race) << "INSIDE";
  Config config;
  config.node_name = "kaptan1";
  config.peer_files = {swp_root(j.root)};
  asio::io_context io;
  Worker worker;
  ApiServer server(io, local_options(kToken));
  add_peer_file_routes(server, config, worker);
  server.start();

  std::atomic<bool> stop{false};
  std::atomic<long> swaps{0};
  std::thread swapper([&] {
    const std::string reg = j.root + "/.race.reg.tmp", lnk = j.root + "/.race.lnk.tmp";
    const std::string outside = j.parent.file(".outside.swp");
    while (!stop.load()) {
      { std::ofstream(reg) << "INSIDE"; }
      ::rename(reg.c_str(), race.c_str());
      ::symlink(outside.c_str(), lnk.c_str());
      ::rename(lnk.c_str(), race.c_str());
      swaps += 2;
    }
  });
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  const std::string auth = "Authorization: Bearer " + kToken;
  HttpClient http(io);
  std::vector<HttpResult> results;
  run_co(
      io,
      [&]() -> asio::awaitable<void> {
        for (int round = 0; round < 40; ++round) {
          std::vector<HttpRequest> reqs;
          for (int i = 0; i < 10; ++i)
            reqs.push_back({.url = base + "/v1/peer/files/data_dir/.race.swp", .headers = {auth}});
          reqs.push_back({.url = base + "/v1/peer/files", .headers = {auth}});
          auto batch = co_await fetch_all(http, std::move(reqs));
          for (auto& r : batch) results.push_back(std::move(r));
        }
      },
      60s);
  stop = true;
  swapper.join();
  int served = 0, refused = 0, other = 0;
  for (const auto& r : results) {
    CHECK(r.body.find(Jail::kOutside) == std::string::npos);
    CHECK(r.body.find(sha256_hex(Jail::kOutside)) == std::string::npos);
    if (r.status == 200 && r.body == "INSIDE")
      ++served;
    else if (r.status == 403 || r.status == 404)
      ++refused;
    else if (r.status != 200)
      ++other;
  }
  MESSAGE("race: ", results.size(), " answers, ", served, " inside content, ", refused,
          " refused, ", other, " other; ", swaps.load(), " swaps");
  CHECK(results.size() == 440);
  CHECK(other == 0);
  CHECK(served > 0);  // both sides of the swap were seen: the race did happen
  CHECK(refused > 0);
}
