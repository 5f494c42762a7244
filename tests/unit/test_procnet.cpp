#include "src/procnet.hpp"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <doctest/doctest.h>

using namespace fener;
namespace fs = std::filesystem;

namespace {

std::string read_data(const std::string& rel) {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/" + rel);
  REQUIRE(in.good());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

const TcpListener* by_inode(const std::vector<TcpListener>& v, std::uint64_t inode) {
  for (const auto& l : v) {
    if (l.inode == inode) return &l;
  }
  return nullptr;
}

const ListeningSocket* by_inode(const std::vector<ListeningSocket>& v, std::uint64_t inode) {
  for (const auto& l : v) {
    if (l.inode == inode) return &l;
  }
  return nullptr;
}

// A copy of tests/data/proc in a temp dir, with fd symlinks (git keeps no dangling links
// well, and tests must not depend on it).
struct FakeProc {
  fs::path root;
  FakeProc() {
    std::string tmpl = (fs::temp_directory_path() / "fener-proc-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    root = tmpl;
    fs::copy(fs::path(FENER_TEST_DATA) / "proc", root, fs::copy_options::recursive);
  }
  ~FakeProc() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  void fd(int pid, int fd, const std::string& target) {
    fs::path dir = root / std::to_string(pid) / "fd";
    fs::create_directories(dir);
    fs::create_symlink(target, dir / std::to_string(fd));
  }
};

}  // namespace

TEST_CASE("procnet: decode addresses") {
  CHECK(decode_proc_address("0301007F") == "127.0.1.3");
  CHECK(decode_proc_address("00000000") == "0.0.0.0");
  CHECK(decode_proc_address("00000000000000000000000000000000") == "::");
  CHECK(decode_proc_address("00000000000000000000000001000000") == "::1");
  CHECK(decode_proc_address("0000000000000000FFFF00000201007F") == "::ffff:127.0.1.2");
  CHECK(decode_proc_address("000000FD000000000000000002000000") == "fd00::2");
  CHECK(decode_proc_address("000080FE00000000FF00FC00010000FE") == "fe80::fc:ff:fe00:1");
  CHECK_FALSE(decode_proc_address("0301007"));
  CHECK_FALSE(decode_proc_address("0301007G"));
  CHECK_FALSE(decode_proc_address(""));
}

TEST_CASE("procnet: parse a real /proc/net/tcp") {
  ProcNetTable t = parse_proc_net_tcp(read_data("proc/net/tcp"));
  CHECK(t.errors.empty());
  REQUIRE(t.listeners.size() == 4);  // the two ESTABLISHED (01) lines are left out
  const TcpListener* pg = by_inode(t.listeners, 6971);
  REQUIRE(pg);
  CHECK(pg->address == "127.0.1.3");
  CHECK(pg->port == 5432);
  const TcpListener* etcd = by_inode(t.listeners, 6973);
  REQUIRE(etcd);
  CHECK(etcd->address == "127.0.1.1");
  CHECK(etcd->port == 2379);
  const TcpListener* any = by_inode(t.listeners, 6972);
  REQUIRE(any);
  CHECK(any->address == "0.0.0.0");
  CHECK(any->port == 8008);
  CHECK_FALSE(by_inode(t.listeners, 19395));
  CHECK_FALSE(by_inode(t.listeners, 19396));
}

TEST_CASE("procnet: parse a real /proc/net/tcp6") {
  ProcNetTable t = parse_proc_net_tcp(read_data("proc/net/tcp6"));
  CHECK(t.errors.empty());
  REQUIRE(t.listeners.size() == 5);
  CHECK(by_inode(t.listeners, 6975)->address == "::1");
  CHECK(by_inode(t.listeners, 6975)->port == 5433);
  CHECK(by_inode(t.listeners, 6974)->address == "::");
  CHECK(by_inode(t.listeners, 6974)->port == 2380);
  CHECK(by_inode(t.listeners, 6996)->address == "::ffff:127.0.1.2");
  CHECK(by_inode(t.listeners, 19446)->address == "fd00::2");
  CHECK(by_inode(t.listeners, 19446)->port == 9100);
  CHECK_FALSE(by_inode(t.listeners, 19397));  // established
}

TEST_CASE("procnet: malformed lines are reported, good lines kept") {
  std::string text =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
      "timeout inode\n"
      "   0: 0301007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 6971 1\n"
      "garbage\n"
      "   2: 0301007X:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 7 1\n"
      "   3: 0301007F:15 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 8 1\n"
      "   4: 0301007F:1538 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000 0 0 9 1\n"
      "   5: 0301007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1\n"
      "   6: 0301007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 10 1\n"
      "\n";
  ProcNetTable t = parse_proc_net_tcp(text);
  REQUIRE(t.listeners.size() == 1);
  CHECK(t.listeners[0].inode == 6971);
  REQUIRE(t.errors.size() == 6);
  CHECK(t.errors[0].starts_with("line 3: "));
  CHECK(t.errors[1].find("bad local address '0301007X:1538'") != std::string::npos);
  CHECK(t.errors[2].find("bad local address") != std::string::npos);
  CHECK(t.errors[3].find("bad state 'ZZ'") != std::string::npos);
  CHECK(t.errors[4].find("bad inode 'x'") != std::string::npos);
  CHECK(t.errors[5].starts_with("line 8: "));
}

TEST_CASE("procnet: error list is capped") {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "junk\n";
  ProcNetTable t = parse_proc_net_tcp(text);
  REQUIRE(t.errors.size() == 21);
  CHECK(t.errors.back() == "and 10 more malformed lines");
}

TEST_CASE("procnet: empty and header-only text") {
  CHECK(parse_proc_net_tcp("").listeners.empty());
  ProcNetTable t = parse_proc_net_tcp("  sl  local_address rem_address st\n");
  CHECK(t.listeners.empty());
  CHECK(t.errors.empty());
}

TEST_CASE("procnet: normalize_address") {
  CHECK(normalize_address("127.0.0.1") == "127.0.0.1");
  CHECK(normalize_address("::ffff:127.0.0.1") == "127.0.0.1");
  CHECK(normalize_address("[0:0::1]") == "::1");
  CHECK(normalize_address("fe80::1%eth0") == "fe80::1");
  CHECK_FALSE(normalize_address("localhost"));
  CHECK_FALSE(normalize_address(""));
  CHECK(is_wildcard_address("0.0.0.0"));
  CHECK(is_wildcard_address("::"));
  CHECK_FALSE(is_wildcard_address("::1"));
}

TEST_CASE("procnet: listener_matches") {
  TcpListener exact{"127.0.1.3", 5432, 1};
  CHECK(listener_matches(exact, "127.0.1.3", 5432));
  CHECK_FALSE(listener_matches(exact, "127.0.1.3", 5433));
  CHECK_FALSE(listener_matches(exact, "127.0.1.2", 5432));
  CHECK(listener_matches(exact, "::ffff:127.0.1.3", 5432));
  CHECK(listener_matches(exact, "", 5432));

  TcpListener any4{"0.0.0.0", 2379, 2};
  CHECK(listener_matches(any4, "127.0.1.1", 2379));
  CHECK(listener_matches(any4, "::ffff:10.0.0.1", 2379));
  CHECK_FALSE(listener_matches(any4, "::1", 2379));  // an IPv4 socket takes no IPv6
  CHECK_FALSE(listener_matches(any4, "127.0.1.1", 2380));

  TcpListener any6{"::", 2380, 3};
  CHECK(listener_matches(any6, "127.0.1.1", 2380));
  CHECK(listener_matches(any6, "fd00::2", 2380));

  TcpListener mapped{"::ffff:127.0.1.2", 8008, 4};
  CHECK(listener_matches(mapped, "127.0.1.2", 8008));
  CHECK_FALSE(listener_matches(mapped, "127.0.1.3", 8008));
}

TEST_CASE("procnet: find_listener prefers the exact address") {
  std::vector<ListeningSocket> v(3);
  v[0].address = "0.0.0.0";
  v[0].port = 5432;
  v[0].inode = 1;
  v[1].address = "127.0.1.3";
  v[1].port = 5432;
  v[1].inode = 2;
  v[2].address = "::1";
  v[2].port = 5432;
  v[2].inode = 3;
  REQUIRE(find_listener(v, "127.0.1.3", 5432));
  CHECK(find_listener(v, "127.0.1.3", 5432)->inode == 2);
  REQUIRE(find_listener(v, "127.0.1.9", 5432));
  CHECK(find_listener(v, "127.0.1.9", 5432)->inode == 1);
  CHECK(find_listener(v, "::1", 5432)->inode == 3);
  CHECK_FALSE(find_listener(v, "fd00::2", 5432));
  CHECK_FALSE(find_listener(v, "127.0.1.3", 2379));
}

TEST_CASE("procnet: scanner on a fake /proc") {
  FakeProc p;
  p.fd(100, 0, "/dev/null");
  p.fd(100, 3, "socket:[6973]");  // 127.0.1.1:2379
  p.fd(100, 4, "socket:[6974]");  // :::2380
  p.fd(100, 5, "pipe:[1]");
  p.fd(100, 6, "socket:[99999]");  // not a listener
  p.fd(200, 3, "socket:[6971]");   // 127.0.1.3:5432, the postmaster
  p.fd(1000, 3, "socket:[6971]");  // a child holding the same socket: higher pid loses
  p.fd(300, 7, "socket:[6996]");
  // pid 400 has no fd directory (exited, or not ours to read).

  ScanOptions opt;
  opt.proc_root = p.root.string();
  ListenScan s = scan_listening_sockets(opt);
  CHECK(s.tables_read == 2);
  CHECK(s.notes.empty());
  REQUIRE(s.sockets.size() == 9);

  const ListeningSocket* etcd = by_inode(s.sockets, 6973);
  REQUIRE(etcd);
  CHECK(etcd->pid == 100);
  CHECK(etcd->comm == "etcd");
  CHECK(etcd->address == "127.0.1.1");
  CHECK(by_inode(s.sockets, 6974)->comm == "etcd");
  CHECK(by_inode(s.sockets, 6971)->pid == 200);
  CHECK(by_inode(s.sockets, 6971)->comm == "postgres");
  CHECK(by_inode(s.sockets, 6996)->comm == "patroni");
  CHECK(by_inode(s.sockets, 6996)->port == 8008);
  const ListeningSocket* unknown = by_inode(s.sockets, 1065);
  REQUIRE(unknown);
  CHECK(unknown->pid == 0);
  CHECK(unknown->comm.empty());

  const ListeningSocket* pg = find_listener(s.sockets, "127.0.1.3", 5432);
  REQUIRE(pg);
  CHECK(pg->comm == "postgres");
  const ListeningSocket* patroni = find_listener(s.sockets, "127.0.1.2", 8008);
  REQUIRE(patroni);
  CHECK(patroni->inode == 6996);  // the mapped exact address beats 0.0.0.0:8008
}

TEST_CASE("procnet: only wanted ports are resolved; last owners are asked first") {
  FakeProc p;
  p.fd(100, 3, "socket:[6973]");  // 127.0.1.1:2379, not wanted
  p.fd(200, 3, "socket:[6971]");  // 127.0.1.3:5432
  p.fd(1000, 3, "socket:[6971]");

  OwnerCache cache;
  ScanOptions opt;
  opt.proc_root = p.root.string();
  opt.ports = {5432};
  opt.cache = &cache;
  ListenScan s = scan_listening_sockets(opt);
  CHECK(by_inode(s.sockets, 6971)->pid == 200);
  CHECK(by_inode(s.sockets, 6973)->pid == 0);  // port 2379 was not asked for
  REQUIRE(cache.owners.count(6971) == 1);
  CHECK(cache.owners[6971].first == 200);

  // The cached owner is looked at first, even where a full walk would pick another.
  cache.owners[6971] = {1000, "postgres"};
  CHECK(by_inode(scan_listening_sockets(opt).sockets, 6971)->pid == 1000);

  // A cached owner that no longer holds the socket falls back to the walk.
  std::filesystem::remove(p.root / "1000" / "fd" / "3");
  std::filesystem::remove(p.root / "200" / "fd" / "3");
  p.fd(500, 9, "socket:[6971]");
  s = scan_listening_sockets(opt);
  CHECK(by_inode(s.sockets, 6971)->pid == 500);
  CHECK(cache.owners[6971].first == 500);
}

TEST_CASE("procnet: scanner stops at the fd budget") {
  FakeProc p;
  p.fd(100, 3, "socket:[6973]");
  p.fd(200, 3, "socket:[6971]");
  ScanOptions opt;
  opt.proc_root = p.root.string();
  opt.max_fds = 1;
  ListenScan s = scan_listening_sockets(opt);
  CHECK(by_inode(s.sockets, 6973)->pid == 100);
  CHECK(by_inode(s.sockets, 6971)->pid == 0);
  REQUIRE(s.notes.size() == 1);
  CHECK(s.notes[0].find("stopped after reading 1 file descriptors") != std::string::npos);
}

TEST_CASE("procnet: scanner without tcp6, and without any table") {
  FakeProc p;
  fs::remove(p.root / "net" / "tcp6");
  ScanOptions opt;
  opt.proc_root = p.root.string();
  ListenScan s = scan_listening_sockets(opt);
  CHECK(s.tables_read == 1);
  CHECK(s.sockets.size() == 4);
  REQUIRE(s.notes.size() == 1);
  CHECK(s.notes[0].find("net/tcp6: No such file or directory") != std::string::npos);
  CHECK(s.complete);  // no tcp6 means no IPv6: nothing can be listening there

  fs::remove(p.root / "net" / "tcp");
  ListenScan none = scan_listening_sockets(opt);
  CHECK(none.tables_read == 0);
  CHECK(none.sockets.empty());
  CHECK(none.notes.size() == 2);
}

TEST_CASE("procnet: a table that exists but cannot be read makes the scan incomplete") {
  FakeProc p;
  fs::remove(p.root / "net" / "tcp6");
  fs::create_directory(p.root / "net" / "tcp6");  // read() fails with EISDIR
  ScanOptions opt;
  opt.proc_root = p.root.string();
  ListenScan s = scan_listening_sockets(opt);
  CHECK(s.tables_read == 1);
  CHECK_FALSE(s.complete);
  REQUIRE(s.notes.size() == 1);
  CHECK(s.notes[0].find("net/tcp6: Is a directory") != std::string::npos);
}

TEST_CASE("procnet: scanner on this machine's /proc does not fail") {
  ListenScan s = scan_listening_sockets();
  CHECK(s.tables_read >= 1);
}
