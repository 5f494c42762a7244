#include "remedies/fix_permissions.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "src/config_error.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

namespace fs = std::filesystem;
using namespace fener;
using namespace std::chrono_literals;

namespace {

// A scratch tree under /tmp, removed (without following symlinks) at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = "/tmp/fener-fixperm-XXXXXX";
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

struct Owner {
  uid_t uid;
  gid_t gid;
};

Owner nobody() {
  const passwd* pw = getpwnam("nobody");
  REQUIRE(pw != nullptr);
  return {pw->pw_uid, pw->pw_gid};
}

void give(const fs::path& p, Owner o) {
  REQUIRE(lchown(p.c_str(), o.uid, o.gid) == 0);
}

struct Stat {
  uid_t uid;
  gid_t gid;
  mode_t mode;
};

Stat stat_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(lstat(p.c_str(), &st) == 0);
  return {st.st_uid, st.st_gid, static_cast<mode_t>(st.st_mode & 07777)};
}

FixOptions root_owned(const fs::path& path) {
  FixOptions o;
  o.path = path.string();
  o.uid = 0;
  o.gid = 0;
  o.owner = "root";
  o.group = "root";
  o.roots = {path.string()};
  return o;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

TEST_SUITE("fix_permissions paths") {
  TEST_CASE("normal_absolute_path") {
    CHECK(normal_absolute_path("/var/lib//postgresql/15/main/") == "/var/lib/postgresql/15/main");
    CHECK(normal_absolute_path("/") == "/");
    CHECK(normal_absolute_path("//") == "/");
    CHECK_FALSE(normal_absolute_path("relative/dir"));
    CHECK_FALSE(normal_absolute_path(""));
    CHECK_FALSE(normal_absolute_path("/data/../etc"));
    CHECK_FALSE(normal_absolute_path("/data/./main"));
  }

  TEST_CASE("path_inside") {
    CHECK(path_inside("/data/pg", "/data/pg"));
    CHECK(path_inside("/data/pg/main", "/data/pg"));
    CHECK_FALSE(path_inside("/data/pgx", "/data/pg"));
    CHECK_FALSE(path_inside("/data", "/data/pg"));
    CHECK(path_inside("/anything", "/"));
  }
}

TEST_SUITE("fix_permissions tree") {
  TEST_CASE("fixes owners and modes, never through a symlink, and a second run changes nothing") {
    REQUIRE_MESSAGE(geteuid() == 0, "this test chowns files: run it as root");
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    const fs::path outside = tmp.path / "outside";
    const Owner nob = nobody();

    make_dir(outside, 0755);
    write_file(outside / "secret", 0666);
    give(outside, nob);
    give(outside / "secret", nob);

    make_dir(data, 0755);
    write_file(data / "PG_VERSION", 0644);
    make_dir(data / "base", 0755);
    make_dir(data / "base" / "1", 0755);
    write_file(data / "base" / "1" / "1259", 0644);
    write_file(data / "postgresql.conf", 0600);  // already right: left as it is
    REQUIRE(symlink(outside.c_str(), (data / "pg_wal").c_str()) == 0);
    for (const auto& p : {data, data / "PG_VERSION", data / "base", data / "base" / "1",
                          data / "base" / "1" / "1259", data / "pg_wal"})
      give(p, nob);

    const auto rep = fix_tree(root_owned(data));
    INFO(rep.summary());
    CHECK(rep.ok());
    CHECK(rep.refused.empty());
    CHECK(rep.checked == 7);
    CHECK(rep.owners_changed == 5);
    CHECK(rep.modes_changed == 5);
    CHECK(rep.entries_changed == 5);
    CHECK(rep.symlinks_skipped == 1);
    CHECK(rep.symlinks == std::vector<std::string>{(data / "pg_wal").string()});
    CHECK(rep.error_count == 0);
    CHECK(rep.changes.size() == 5);
    CHECK(rep.summary() == "fixed " + data.string() +
                               ": 5 owners and 5 modes changed to root:root 0700/0600 (7 entries)"
                               "; 1 symlink skipped, not followed");

    for (const auto& dir : {data, data / "base", data / "base" / "1"}) {
      const auto s = stat_of(dir);
      CHECK(s.uid == 0);
      CHECK(s.gid == 0);
      CHECK(s.mode == 0700);
    }
    for (const auto& file : {data / "PG_VERSION", data / "base" / "1" / "1259"}) {
      const auto s = stat_of(file);
      CHECK(s.uid == 0);
      CHECK(s.mode == 0600);
    }
    // Neither the symlink nor what it points at was touched.
    CHECK(stat_of(data / "pg_wal").uid == nob.uid);
    CHECK(stat_of(outside).uid == nob.uid);
    CHECK(stat_of(outside).mode == 0755);
    CHECK(stat_of(outside / "secret").uid == nob.uid);
    CHECK(stat_of(outside / "secret").mode == 0666);

    const auto j = rep.to_json();
    CHECK(j["changes"][0]["path"] == data.string());
    CHECK(j["changes"][0]["mode"] == "0755 -> 0700");
    CHECK(j["changes"][0]["owner"] ==
          std::to_string(nob.uid) + ":" + std::to_string(nob.gid) + " -> root:root");
    CHECK(j["owners_changed"] == 5);
    CHECK(j["symlinks"][0] == (data / "pg_wal").string());

    const auto again = fix_tree(root_owned(data));
    CHECK(again.ok());
    CHECK(again.owners_changed == 0);
    CHECK(again.modes_changed == 0);
    CHECK(again.changes.empty());
    CHECK(again.summary() == "nothing to change under " + data.string() +
                                 ": 7 entries already root:root 0700/0600; 1 symlink skipped, "
                                 "not followed");
  }

  TEST_CASE("group_access gives 0750 and 0640") {
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    make_dir(data, 0700);
    make_dir(data / "global", 0777);
    write_file(data / "global" / "pg_control", 0600);
    auto opts = root_owned(data);
    opts.uid = geteuid();
    opts.gid = getegid();
    opts.group_access = true;
    const auto rep = fix_tree(opts);
    CHECK(rep.ok());
    CHECK(rep.modes_changed == 3);
    CHECK(stat_of(data).mode == 0750);
    CHECK(stat_of(data / "global").mode == 0750);
    CHECK(stat_of(data / "global" / "pg_control").mode == 0640);
    CHECK(contains(rep.summary(), "0750/0640"));
  }

  TEST_CASE("special files are skipped, not changed") {
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    make_dir(data, 0700);
    REQUIRE(mkfifo((data / "fifo").c_str(), 0600) == 0);
    REQUIRE(chmod((data / "fifo").c_str(), 0666) == 0);
    auto opts = root_owned(data);
    opts.uid = geteuid();
    opts.gid = getegid();
    const auto rep = fix_tree(opts);
    CHECK(rep.ok());
    CHECK(rep.others_skipped == 1);
    CHECK(stat_of(data / "fifo").mode == 0666);
    CHECK(contains(rep.summary(), "1 special file skipped"));
  }

  TEST_CASE("a hard-linked file owned by someone else is left alone and reported") {
    REQUIRE_MESSAGE(geteuid() == 0, "this test chowns files: run it as root");
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    const Owner nob = nobody();
    make_dir(data, 0700);
    write_file(tmp.path / "elsewhere", 0644);
    give(tmp.path / "elsewhere", nob);
    REQUIRE(link((tmp.path / "elsewhere").c_str(), (data / "linked").c_str()) == 0);
    const auto rep = fix_tree(root_owned(data));
    CHECK_FALSE(rep.ok());
    CHECK(rep.error_count == 1);
    REQUIRE(rep.errors.size() == 1);
    CHECK(rep.errors[0].path == (data / "linked").string());
    CHECK(contains(rep.errors[0].what, "2 hard links"));
    CHECK(stat_of(tmp.path / "elsewhere").uid == nob.uid);
    CHECK(stat_of(tmp.path / "elsewhere").mode == 0644);
    CHECK(contains(rep.summary(), "1 error: " + (data / "linked").string()));
  }

  TEST_CASE("refuses /, paths outside the roots, a symlink and a file") {
    FixOptions o = root_owned("/");
    o.roots = {"/tmp"};
    auto rep = fix_tree(o);
    CHECK_FALSE(rep.ok());
    CHECK(rep.summary() == "refused to fix /: will not change the whole filesystem");

    TempDir tmp;
    make_dir(tmp.path / "data", 0755);
    o = root_owned(tmp.path / "data");
    o.roots = {(tmp.path / "elsewhere").string()};
    rep = fix_tree(o);
    CHECK_FALSE(rep.ok());
    CHECK(rep.checked == 0);
    CHECK(contains(rep.refused, "outside the allowed roots"));
    CHECK(stat_of(tmp.path / "data").mode == 0755);

    o.roots = {"/"};
    rep = fix_tree(o);
    CHECK(contains(rep.refused, "root \"/\""));

    REQUIRE(symlink((tmp.path / "data").c_str(), (tmp.path / "link").c_str()) == 0);
    rep = fix_tree(root_owned(tmp.path / "link"));
    CHECK(rep.summary() == "refused to fix " + (tmp.path / "link").string() +
                               ": it is a symlink; give the real directory's path");
    CHECK(stat_of(tmp.path / "data").mode == 0755);

    write_file(tmp.path / "file", 0644);
    rep = fix_tree(root_owned(tmp.path / "file"));
    CHECK(contains(rep.refused, "it is a regular file, not a directory"));

    rep = fix_tree(root_owned(tmp.path / "missing"));
    CHECK_FALSE(rep.ok());
    CHECK(rep.summary() ==
          "could not fix " + (tmp.path / "missing").string() + ": No such file or directory");
  }

  TEST_CASE("the real path must be inside the roots too") {
    TempDir tmp;
    make_dir(tmp.path / "allowed", 0755);
    make_dir(tmp.path / "outside", 0755);
    make_dir(tmp.path / "outside" / "data", 0755);
    REQUIRE(symlink((tmp.path / "outside").c_str(), (tmp.path / "allowed" / "escape").c_str()) ==
            0);
    auto o = root_owned(tmp.path / "allowed" / "escape" / "data");
    o.uid = geteuid();
    o.gid = getegid();
    o.roots = {(tmp.path / "allowed").string()};
    auto rep = fix_tree(o);
    CHECK(contains(rep.refused, "resolves to " + (tmp.path / "outside" / "data").string()));
    CHECK(stat_of(tmp.path / "outside" / "data").mode == 0755);

    // A symlinked parent is fine when the root resolves the same way.
    o.roots = {(tmp.path / "allowed" / "escape").string()};
    rep = fix_tree(o);
    CHECK(rep.ok());
    CHECK(stat_of(tmp.path / "outside" / "data").mode == 0700);
  }

  TEST_CASE("the walk stops at max_entries and says so") {
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    make_dir(data, 0700);
    for (int i = 0; i < 10; ++i) write_file(data / std::to_string(i), 0600);
    auto o = root_owned(data);
    o.uid = geteuid();
    o.gid = getegid();
    o.max_entries = 4;
    const auto rep = fix_tree(o);
    CHECK_FALSE(rep.ok());
    CHECK(rep.truncated);
    CHECK(rep.checked == 4);
    CHECK(contains(rep.summary(), "stopped after 4 entries, the rest was not checked"));
  }
}

namespace {

FixPermissionsParams parse(const std::string& yaml, const Config& config = Config{}) {
  YamlMap params(load_yaml_string(yaml, "test.yaml"), "test.yaml", "remedy");
  return parse_fix_permissions_params(params, config);
}

std::string config_error(const std::string& yaml, const Config& config = Config{}) {
  try {
    parse(yaml, config);
  } catch (const ConfigError& e) {
    return e.key() + ": " + e.problem();
  }
  return "no error";
}

std::optional<RemedyOutcome> run_remedy(Remedy& remedy) {
  asio::io_context io;
  HttpClient http(io);
  Worker worker;
  Config config;
  ClusterFacts facts;
  RemedyContext ctx{http, worker, config, facts, 10s};
  std::optional<RemedyOutcome> out;
  asio::co_spawn(io, remedy.run(ctx), [&](std::exception_ptr e, RemedyOutcome r) {
    if (!e) out = std::move(r);
    io.stop();
  });
  io.run_for(15s);
  return out;
}

}  // namespace

TEST_SUITE("fix_permissions config") {
  TEST_CASE("defaults come from the config") {
    Config c;
    c.pg_data_dir = "/var/lib/postgresql/15/main/";
    c.pg_owner = "postgres";
    const auto p = parse("{}", c);
    CHECK(p.path == "/var/lib/postgresql/15/main");
    CHECK(p.owner == "postgres");
    CHECK_FALSE(p.group);
    CHECK_FALSE(p.group_access);
    CHECK(p.roots == std::vector<std::string>{"/var/lib/postgresql/15/main"});
  }

  TEST_CASE("explicit parameters") {
    const auto p =
        parse("path: /data/pg/main\nowner: pg\ngroup: dba\ngroup_access: true\nroots: [/data/pg]");
    CHECK(p.path == "/data/pg/main");
    CHECK(p.owner == "pg");
    CHECK(p.group == "dba");
    CHECK(p.group_access);
    CHECK(p.roots == std::vector<std::string>{"/data/pg"});
  }

  TEST_CASE("errors") {
    CHECK(config_error("{}") ==
          "remedy.path: expected an absolute path (no data directory is known: set path or give "
          "--patroni-config)");
    CHECK(config_error("path: data/pg") ==
          "remedy.path: expected an absolute path without . or .. components, got data/pg");
    CHECK(config_error("path: /data/../etc") ==
          "remedy.path: expected an absolute path without . or .. components, got /data/../etc");
    CHECK(config_error("path: /") == "remedy.path: expected a directory other than /, got /");
    CHECK(config_error("path: /etc\nroots: [/data]") ==
          "remedy.path: expected a directory inside roots (/data), got /etc");
    CHECK(config_error("path: /data/pg\nroots: [data]") ==
          "remedy.roots: expected absolute directories without . or .. components, got data");
    CHECK(config_error("path: /data/pg\nroots: [/]") ==
          "remedy.roots: expected directories other than /, got /");
    CHECK(config_error("path: /data/pg\nroots: []") ==
          "remedy.roots: expected a list of absolute directories, got []");
    CHECK(config_error("path: /data/pg\nowner: ''") ==
          "remedy.owner: expected a user name, got \"\"");
    CHECK(config_error("path: /data/pg\ngroup: 'a:b'") ==
          "remedy.group: expected a group name, got \"a:b\"");
    CHECK(config_error("path: /data/pg\ngroup_access: maybe") ==
          "remedy.group_access: expected true or false, got \"maybe\"");
    Config c;
    c.pg_data_dir = "pgdata";
    CHECK(config_error("{}", c) ==
          "remedy.path: expected an absolute path without . or .. components, got pgdata (the "
          "data directory from patroni.yml)");
  }
}

TEST_SUITE("fix_permissions remedy") {
  TEST_CASE("plan, run and run again") {
    TempDir tmp;
    const fs::path data = tmp.path / "data";
    make_dir(data, 0755);
    write_file(data / "PG_VERSION", 0644);
    YamlMap params(load_yaml_string("path: " + data.string() + "\nowner: root", "t.yaml"), "t.yaml",
                   "remedy");
    auto remedy = make_fix_permissions_remedy(params, Config{});
    REQUIRE(remedy);
    CHECK(remedy->risk() == Risk::safe);

    asio::io_context io;
    HttpClient http(io);
    Worker worker;
    Config config;
    ClusterFacts facts;
    RemedyContext ctx{http, worker, config, facts, 10s};
    CHECK(remedy->plan(ctx) ==
          "chown -R root: and chmod 0700/0600 under " + data.string() + " (no symlinks followed)");

    auto out = run_remedy(*remedy);
    REQUIRE(out);
    CHECK(out->ok);
    CHECK(out->message == "fixed " + data.string() +
                              ": 2 modes changed to root:root 0700/0600 (2 "
                              "entries)");
    CHECK(out->details["modes_changed"] == 2);
    CHECK(stat_of(data).mode == 0700);

    out = run_remedy(*remedy);
    REQUIRE(out);
    CHECK(out->ok);
    CHECK(out->message ==
          "nothing to change under " + data.string() + ": 2 entries already root:root 0700/0600");
  }

  TEST_CASE("an owner that does not resolve is a failure, touching nothing") {
    TempDir tmp;
    make_dir(tmp.path / "data", 0755);
    YamlMap params(load_yaml_string("path: " + (tmp.path / "data").string() +
                                        "\nowner: no-such-user-fener\ngroup: dba",
                                    "t.yaml"),
                   "t.yaml", "remedy");
    auto remedy = make_fix_permissions_remedy(params, Config{});
    const auto out = run_remedy(*remedy);
    REQUIRE(out);
    CHECK_FALSE(out->ok);
    CHECK(out->message == "refused to fix " + (tmp.path / "data").string() +
                              ": user no-such-user-fener does not exist");
    CHECK(stat_of(tmp.path / "data").mode == 0755);
  }
}
