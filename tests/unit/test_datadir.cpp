#include "checks/datadir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

namespace fs = std::filesystem;
using namespace fener;

namespace {

constexpr uid_t kPgUid = 101;
constexpr gid_t kPgGid = 104;
const std::string kRoot = "/data/patroni";

DatadirExpect pg_expect(GroupAccess g = GroupAccess::automatic) {
  return DatadirExpect{kPgUid, kPgGid, "postgres", "postgres", g};
}

DatadirEntry entry(const std::string& rel, EntryType type, mode_t mode, uid_t uid = kPgUid,
                   gid_t gid = kPgGid) {
  DatadirEntry e;
  e.path = rel.empty() ? kRoot : kRoot + "/" + rel;
  e.type = type;
  e.mode = mode;
  e.uid = uid;
  e.gid = gid;
  return e;
}

DatadirScan good_scan(mode_t root_mode = 0700) {
  DatadirScan s;
  s.path = kRoot;
  s.max_entries = 10000;
  s.root = entry("", EntryType::directory, root_mode);
  s.entries = {
      entry("PG_VERSION", EntryType::file, 0600),
      entry("base", EntryType::directory, 0700),
      entry("base/1", EntryType::directory, 0700),
      entry("base/1/1259", EntryType::file, 0600),
  };
  return s;
}

std::vector<std::string> paths_of(const fener::json& j) {
  std::vector<std::string> out;
  for (const auto& p : j) out.push_back(p.get<std::string>());
  return out;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_SUITE("datadir evaluate") {
  TEST_CASE("an empty, correct data directory passes") {
    DatadirScan s;
    s.path = kRoot;
    s.max_entries = 10000;
    s.root = entry("", EntryType::directory, 0700);
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::passing);
    CHECK(r.message ==
          "data directory /data/patroni: owner postgres:postgres, mode 0700, 0 entries ok");
    CHECK(r.evidence["mode"] == "0700");
    CHECK(r.evidence["entries_scanned"] == 0);
    CHECK(r.evidence["truncated"] == false);
  }

  TEST_CASE("a correct tree passes; a symlinked pg_wal is recorded, not judged") {
    auto s = good_scan();
    auto wal = entry("pg_wal", EntryType::symlink, 0777, 0, 0);  // made by root, as initdb -X might
    wal.target = "/wal/pg_wal";
    s.entries.push_back(wal);
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::passing);
    CHECK(r.message ==
          "data directory /data/patroni: owner postgres:postgres, mode 0700, 5 entries ok");
    REQUIRE(r.evidence["symlinks"].size() == 1);
    CHECK(r.evidence["symlinks"][0]["path"] == "/data/patroni/pg_wal");
    CHECK(r.evidence["symlinks"][0]["target"] == "/wal/pg_wal");
    CHECK(r.evidence["symlink_count"] == 1);
    CHECK(r.evidence["counts"]["wrong_owner"] == 0);
  }

  TEST_CASE("root mode 0750 passes with auto and true, fails with false") {
    CHECK(evaluate_datadir(good_scan(0750), pg_expect()).status == Status::passing);
    CHECK(evaluate_datadir(good_scan(0750), pg_expect(GroupAccess::on)).status == Status::passing);
    const auto r = evaluate_datadir(good_scan(0750), pg_expect(GroupAccess::off));
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "data directory /data/patroni has mode 0750; group_access: false wants 0700");
  }

  TEST_CASE("root mode 0700 with group_access true is critical") {
    const auto r = evaluate_datadir(good_scan(0700), pg_expect(GroupAccess::on));
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "wants 0750"));
  }

  TEST_CASE("root mode 0755 is the guide's outage") {
    const auto r = evaluate_datadir(good_scan(0755), pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "data directory /data/patroni has mode 0755; PostgreSQL requires 0700 or 0750");
    CHECK(r.evidence["mode"] == "0755");
    CHECK(r.evidence["allowed_modes"] == fener::json::array({"0700", "0750"}));
  }

  TEST_CASE("root modes PostgreSQL accepts but that are neither 0700 nor 0750 are critical") {
    const auto r = evaluate_datadir(good_scan(0740), pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message == "data directory /data/patroni has mode 0740; expected 0700 or 0750");
    CHECK(evaluate_datadir(good_scan(0500), pg_expect()).status == Status::critical);
  }

  TEST_CASE("missing root is critical") {
    DatadirScan s;
    s.path = kRoot;
    s.root_error = DatadirScanError{kRoot, ENOENT, "No such file or directory"};
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message == "data directory /data/patroni does not exist");
    CHECK(r.evidence["exists"] == false);
  }

  TEST_CASE("root that cannot be stat'ed is unknown") {
    DatadirScan s;
    s.path = kRoot;
    s.root_error = DatadirScanError{kRoot, EACCES, "Permission denied"};
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::unknown);
    CHECK(r.message == "data directory /data/patroni could not be checked: Permission denied");
  }

  TEST_CASE("root that exists but cannot be listed is unknown, unless already critical") {
    DatadirScan s;
    s.path = kRoot;
    s.root = entry("", EntryType::directory, 0700);
    s.root_error = DatadirScanError{kRoot, EACCES, "Permission denied"};
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::unknown);
    CHECK(r.message == "data directory /data/patroni could not be read: Permission denied");

    s.root->mode = 0777;  // a definite problem outranks not knowing the rest
    r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "has mode 0777"));
    CHECK(contains(r.message, "could not be read"));
  }

  TEST_CASE("root that is a symlink or a file is critical") {
    DatadirScan s;
    s.path = kRoot;
    s.root = entry("", EntryType::symlink, 0777);
    s.root->target = "/elsewhere";
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "is a symlink to /elsewhere"));
    CHECK(r.evidence["target"] == "/elsewhere");

    s.root = entry("", EntryType::file, 0600);
    r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message == "data directory /data/patroni is a file, not a directory");
  }

  TEST_CASE("root owned by another user or group is critical") {
    auto s = good_scan();
    s.root->uid = 0;
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "data directory /data/patroni has wrong ownership: uid 0, expected postgres (uid 101)");
    CHECK(r.evidence["uid"] == 0);

    s = good_scan();
    s.root->gid = 0;
    r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(contains(r.message, "has group gid 0, expected postgres (gid 104)"));
  }

  TEST_CASE("entries owned by another user: count, 3 paths in the message, 20 in evidence") {
    auto s = good_scan();
    for (int i = 0; i < 25; ++i)
      s.entries.push_back(entry("base/1/" + std::to_string(2000 + i), EntryType::file, 0600, 0));
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "data directory /data/patroni: 25 entries not owned by postgres: "
          "/data/patroni/base/1/2000, /data/patroni/base/1/2001, /data/patroni/base/1/2002, ...");
    CHECK(r.evidence["counts"]["wrong_owner"] == 25);
    CHECK(r.evidence["counts"]["wrong_group"] == 0);
    CHECK(r.evidence["examples"]["wrong_owner"].size() == 20);
    CHECK(r.evidence["entries_scanned"] == 29);
  }

  TEST_CASE("entries in another group are critical") {
    auto s = good_scan();
    s.entries.push_back(entry("postgresql.auto.conf", EntryType::file, 0600, kPgUid, 0));
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message ==
          "data directory /data/patroni: 1 entry not in group postgres: "
          "/data/patroni/postgresql.auto.conf");
    CHECK(paths_of(r.evidence["examples"]["wrong_group"]) ==
          std::vector<std::string>{"/data/patroni/postgresql.auto.conf"});
  }

  TEST_CASE("entries without owner read/write are critical") {
    auto s = good_scan();
    s.entries.push_back(entry("PG_VERSION2", EntryType::file, 0400));
    s.entries.push_back(entry("global", EntryType::directory, 0600));  // no x: cannot enter
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.evidence["counts"]["no_owner_access"] == 2);
    CHECK(contains(r.message, "2 entries without owner read/write"));

    s = good_scan();
    s.entries.push_back(entry("global", EntryType::directory, 0700));
    CHECK(evaluate_datadir(s, pg_expect()).status == Status::passing);
  }

  TEST_CASE("group/world-writable entries are a warning; world-readable ones only evidence") {
    auto s = good_scan();
    s.entries.push_back(entry("postgresql.conf", EntryType::file, 0644));
    s.entries.push_back(entry("pg_stat_tmp", EntryType::directory, 0770));
    s.entries.push_back(entry("pg_log", EntryType::directory, 0702));  // world- but not group-
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "data directory /data/patroni: 2 entries group- or world-writable: "
          "/data/patroni/pg_stat_tmp, /data/patroni/pg_log");
    CHECK(r.evidence["counts"]["writable_by_others"] == 2);
    CHECK(r.evidence["counts"]["world_readable"] == 1);

    // Patroni's own 0644 config files alone leave the check passing.
    auto readable = good_scan();
    readable.entries.push_back(entry("postgresql.conf", EntryType::file, 0644));
    auto rr = evaluate_datadir(readable, pg_expect());
    CHECK(rr.status == Status::passing);
    CHECK(rr.evidence["counts"]["world_readable"] == 1);

    // Group-readable files are what initdb -g makes: fine.
    s = good_scan(0750);
    s.entries.push_back(entry("postgresql.conf", EntryType::file, 0640));
    CHECK(evaluate_datadir(s, pg_expect()).status == Status::passing);
  }

  TEST_CASE("critical findings come before warnings in the message") {
    auto s = good_scan();
    s.entries.push_back(entry("a", EntryType::file, 0666));
    s.entries.push_back(entry("b", EntryType::file, 0600, 0));
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::critical);
    CHECK(r.message.rfind("data directory /data/patroni: 1 entry not owned by postgres", 0) == 0);
    CHECK(contains(r.message, "world-writable"));
  }

  TEST_CASE("errors below the root are a warning naming them") {
    auto s = good_scan();
    s.errors.push_back({kRoot + "/base/2", EACCES, "Permission denied"});
    const auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::warning);
    CHECK(r.message ==
          "data directory /data/patroni: 1 entry could not be read: "
          "/data/patroni/base/2 (Permission denied)");
    CHECK(r.evidence["errors"][0]["path"] == "/data/patroni/base/2");
    CHECK(r.evidence["counts"]["unreadable"] == 1);
  }

  TEST_CASE("truncation is noted but does not change the status") {
    auto s = good_scan();
    s.truncated = true;
    s.max_entries = 4;
    auto r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::passing);
    CHECK(r.message ==
          "data directory /data/patroni: owner postgres:postgres, mode 0700, 4 entries ok; walk "
          "stopped at max_entries 4, the rest was not checked");
    CHECK(r.evidence["truncated"] == true);
    CHECK(r.evidence["max_entries"] == 4);

    s.entries.push_back(entry("x", EntryType::file, 0602));
    r = evaluate_datadir(s, pg_expect());
    CHECK(r.status == Status::warning);
    CHECK(contains(r.message, "walk stopped at max_entries 4"));
  }
}

namespace {

// A scratch tree under /tmp, removed (without following symlinks) at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = "/tmp/fener-datadir-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

void write_file(const fs::path& p, mode_t mode) {
  std::ofstream(p) << "x";
  REQUIRE(chmod(p.c_str(), mode) == 0);
}

void make_dir(const fs::path& p, mode_t mode) {
  REQUIRE(mkdir(p.c_str(), mode) == 0);
  REQUIRE(chmod(p.c_str(), mode) == 0);  // not subject to the umask
}

const DatadirEntry* find(const DatadirScan& s, const fs::path& p) {
  for (const auto& e : s.entries)
    if (e.path == p.string()) return &e;
  return nullptr;
}

DatadirExpect me() {
  return DatadirExpect{geteuid(), getegid(), "me", "mine", GroupAccess::automatic};
}

}  // namespace

TEST_SUITE("datadir scan") {
  TEST_CASE("scans a real tree without following a symlink out of it") {
    TempDir tmp;
    const fs::path root = tmp.path / "data";
    const fs::path outside = tmp.path / "outside";
    make_dir(root, 0700);
    make_dir(outside, 0755);
    write_file(outside / "secret", 0666);  // would be a warning if followed
    write_file(root / "PG_VERSION", 0600);
    make_dir(root / "base", 0700);
    make_dir(root / "base" / "1", 0700);
    write_file(root / "base" / "1" / "1259", 0600);
    REQUIRE(symlink(outside.c_str(), (root / "pg_wal").c_str()) == 0);

    const auto s = scan_datadir(root.string() + "/", 100);  // trailing slash is dropped
    CHECK(s.path == root.string());
    REQUIRE(s.root);
    CHECK(s.root->type == EntryType::directory);
    CHECK(s.root->mode == 0700);
    CHECK_FALSE(s.root_error);
    CHECK(s.errors.empty());
    CHECK_FALSE(s.truncated);
    CHECK(s.entries.size() == 5);
    const auto* wal = find(s, root / "pg_wal");
    REQUIRE(wal != nullptr);
    CHECK(wal->type == EntryType::symlink);
    CHECK(wal->target == outside.string());
    CHECK(find(s, root / "pg_wal" / "secret") == nullptr);
    const auto* rel = find(s, root / "base" / "1" / "1259");
    REQUIRE(rel != nullptr);
    CHECK(rel->type == EntryType::file);
    CHECK(rel->mode == 0600);
    CHECK(rel->uid == geteuid());
    CHECK(find(s, root / "base" / "1") != nullptr);

    const auto r = evaluate_datadir(s, me());
    CHECK(r.status == Status::passing);
    CHECK(r.evidence["symlinks"][0]["path"] == (root / "pg_wal").string());
  }

  TEST_CASE("detects chown'ed and chmod'ed entries on disk") {
    REQUIRE_MESSAGE(geteuid() == 0, "this test chowns files: run it as root");
    TempDir tmp;
    const fs::path root = tmp.path / "data";
    make_dir(root, 0700);
    make_dir(root / "global", 0700);
    write_file(root / "global" / "pg_control", 0600);
    write_file(root / "foreign", 0600);
    REQUIRE(chown((root / "foreign").c_str(), 12345, 12345) == 0);
    write_file(root / "postgresql.conf", 0644);
    write_file(root / "readonly", 0400);

    const auto s = scan_datadir(root.string(), 100);
    const auto* foreign = find(s, root / "foreign");
    REQUIRE(foreign != nullptr);
    CHECK(foreign->uid == 12345);
    CHECK(foreign->gid == 12345);

    const auto r = evaluate_datadir(s, me());
    CHECK(r.status == Status::critical);
    CHECK(r.evidence["counts"]["wrong_owner"] == 1);
    CHECK(r.evidence["counts"]["wrong_group"] == 1);
    CHECK(r.evidence["counts"]["no_owner_access"] == 1);
    CHECK(r.evidence["counts"]["world_readable"] == 1);
    CHECK(paths_of(r.evidence["examples"]["wrong_owner"]) ==
          std::vector<std::string>{(root / "foreign").string()});
    CHECK(contains(r.message, "1 entry not owned by me: " + (root / "foreign").string()));

    // And the guide's outage on a real directory.
    REQUIRE(chmod(root.c_str(), 0755) == 0);
    const auto r2 = evaluate_datadir(scan_datadir(root.string(), 100), me());
    CHECK(r2.status == Status::critical);
    CHECK(contains(r2.message, root.string() + " has mode 0755; PostgreSQL requires 0700 or 0750"));
  }

  TEST_CASE("the walk stops at max_entries") {
    TempDir tmp;
    const fs::path root = tmp.path / "data";
    make_dir(root, 0700);
    make_dir(root / "sub", 0700);
    for (int i = 0; i < 30; ++i) write_file(root / "sub" / std::to_string(i), 0600);

    auto s = scan_datadir(root.string(), 10);
    CHECK(s.truncated);
    CHECK(s.entries.size() == 10);

    s = scan_datadir(root.string(), 31);  // exactly everything: not truncated
    CHECK_FALSE(s.truncated);
    CHECK(s.entries.size() == 31);

    s = scan_datadir(root.string(), 30);
    CHECK(s.truncated);
    const auto r = evaluate_datadir(s, me());
    CHECK(r.status == Status::passing);
    CHECK(contains(r.message, "walk stopped at max_entries 30"));
  }

  TEST_CASE("a missing root, a root symlink and a root file") {
    TempDir tmp;
    auto s = scan_datadir((tmp.path / "nope").string(), 10);
    CHECK_FALSE(s.root);
    REQUIRE(s.root_error);
    CHECK(s.root_error->error == ENOENT);
    CHECK(evaluate_datadir(s, me()).status == Status::critical);

    make_dir(tmp.path / "real", 0700);
    write_file(tmp.path / "real" / "f", 0600);
    REQUIRE(symlink((tmp.path / "real").c_str(), (tmp.path / "link").c_str()) == 0);
    s = scan_datadir((tmp.path / "link").string(), 10);
    REQUIRE(s.root);
    CHECK(s.root->type == EntryType::symlink);
    CHECK(s.entries.empty());  // not followed
    CHECK(evaluate_datadir(s, me()).status == Status::critical);

    s = scan_datadir((tmp.path / "real" / "f").string(), 10);
    REQUIRE(s.root);
    CHECK(s.root->type == EntryType::file);
    CHECK(evaluate_datadir(s, me()).message ==
          "data directory " + (tmp.path / "real" / "f").string() + " is a file, not a directory");
  }
}

TEST_CASE("resolve_datadir_expect") {
  const auto root = resolve_datadir_expect("root", std::nullopt, GroupAccess::off);
  CHECK(root.uid == 0);
  CHECK(root.gid == 0);
  CHECK(root.owner == "root");
  CHECK(root.group == "root");
  CHECK(root.group_access == GroupAccess::off);
  CHECK_THROWS_WITH(
      resolve_datadir_expect("no-such-user-fener", std::nullopt, GroupAccess::automatic),
      "user no-such-user-fener does not exist");
  CHECK_THROWS_WITH(
      resolve_datadir_expect("root", std::string("no-such-group-fener"), GroupAccess::automatic),
      "group no-such-group-fener does not exist");
}

namespace {

DatadirParams parse(const std::string& yaml, const Config& config = Config{}) {
  YamlMap params(load_yaml_string(yaml, "test.yaml"), "test.yaml", "checks.datadir");
  return parse_datadir_params(params, config);
}

std::string config_error(const std::string& yaml, const Config& config = Config{}) {
  try {
    parse(yaml, config);
  } catch (const ConfigError& e) {
    return e.key() + ": " + e.problem();
  }
  return "no error";
}

}  // namespace

TEST_CASE("datadir parameters") {
  Config config;
  config.pg_data_dir = "/data/patroni";

  auto p = parse("{}", config);
  CHECK(p.path == "/data/patroni");
  CHECK(p.owner == "postgres");
  CHECK_FALSE(p.group);
  CHECK(p.group_access == GroupAccess::automatic);
  CHECK(p.max_entries == 10000);

  p = parse(
      "path: /srv/pg\nowner: pg\ngroup: dba\ngroup_access: true\nmax_entries: 50\n"
      "interval: 5s\n",
      config);
  CHECK(p.path == "/srv/pg");
  CHECK(p.owner == "pg");
  CHECK(p.group == "dba");
  CHECK(p.group_access == GroupAccess::on);
  CHECK(p.max_entries == 50);
  CHECK(parse("group_access: false", config).group_access == GroupAccess::off);
  CHECK(parse("group_access: auto", config).group_access == GroupAccess::automatic);

  CHECK(config_error("{}") ==
        "checks.datadir: no data directory: set path or give --patroni-config");
  CHECK(config_error("path: data/patroni") ==
        "checks.datadir.path: expected an absolute path, got data/patroni");
  CHECK(config_error("group_access: sometimes", config) ==
        "checks.datadir.group_access: expected auto, true or false");
  CHECK(contains(config_error("max_entries: 0", config), "checks.datadir.max_entries"));
  CHECK(contains(config_error("owner: ''", config), "checks.datadir.owner"));
}

namespace {

// One run on a private loop. The guard keeps run() going while the scan is on the worker:
// offload() itself holds no work on the caller's executor.
CheckResult run_check(Check& check) {
  asio::io_context io;
  HttpClient http(io);
  Worker worker;
  CheckContext ctx{http, worker, std::chrono::seconds(5)};
  std::optional<CheckResult> out;
  auto guard = asio::make_work_guard(io);
  asio::co_spawn(io, check.run(ctx), [&](std::exception_ptr e, CheckResult r) {
    guard.reset();
    if (e) std::rethrow_exception(e);
    out = std::move(r);
  });
  io.run();
  REQUIRE(out);
  return *out;
}

}  // namespace

TEST_CASE("datadir check runs the scan on the worker") {
  TempDir tmp;
  Config config;
  config.pg_data_dir = tmp.path.string();  // mkdtemp makes it 0700, owned by us
  YamlMap params(load_yaml_string("owner: root", "test.yaml"), "test.yaml", "checks.datadir");
  auto check = make_datadir_check(params, config);
  write_file(tmp.path / "PG_VERSION", 0600);
  auto r = run_check(*check);
  CHECK(r.status == Status::passing);
  CHECK(r.message ==
        "data directory " + tmp.path.string() + ": owner root:root, mode 0700, 1 entries ok");

  YamlMap bad(load_yaml_string("owner: no-such-user-fener", "test.yaml"), "test.yaml",
              "checks.datadir");
  r = run_check(*make_datadir_check(bad, config));
  CHECK(r.status == Status::unknown);
  CHECK(r.message ==
        "data directory " + tmp.path.string() + ": user no-such-user-fener does not exist");
}
