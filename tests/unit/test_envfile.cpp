#include "src/envfile.hpp"

#include <fstream>
#include <sstream>

#include <doctest/doctest.h>

using namespace fener;

namespace {

std::string read_data(const std::string& rel) {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/" + rel);
  REQUIRE(in.good());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string value_of(const EnvFile& f, std::string_view key) {
  const EnvEntry* e = f.find(key);
  REQUIRE_MESSAGE(e != nullptr, key);
  return e->value;
}

}  // namespace

TEST_CASE("envfile: the guide's etcd example") {
  EnvFile f = parse_env_file(read_data("etcd/guide-ha.env"));
  REQUIRE(f.entries.size() == 9);
  CHECK(f.entries[0].key == "ETCD_NAME");
  CHECK(f.entries[0].value == "ha");
  CHECK(f.entries[0].line == 1);
  CHECK(value_of(f, "ETCD_INITIAL_CLUSTER") ==
        "ha=http://HA_IP:2380,kaptan1=http://KAPTAN1_IP:2380,kaptan2=http://KAPTAN2_IP:2380");
  CHECK(value_of(f, "ETCD_INITIAL_CLUSTER_TOKEN") == "etcd-cluster-1");
  // ETCDCTL_API=2 is a valid (unquoted) assignment on line 9.
  const EnvEntry* api = f.find("ETCDCTL_API");
  REQUIRE(api != nullptr);
  CHECK(api->value == "2");
  CHECK(api->line == 9);
  // enable-v2: true sets nothing, and the reason says what to write.
  REQUIRE(f.ignored.size() == 1);
  CHECK(f.ignored[0].line == 10);
  CHECK(f.ignored[0].text == "enable-v2: true");
  CHECK(f.ignored[0].reason.find("ETCD_ENABLE_V2=\"true\"") != std::string::npos);
  CHECK(f.ignored[0].reason.find("YAML") != std::string::npos);
  CHECK(f.find("ETCD_ENABLE_V2") == nullptr);
  CHECK(f.warnings.empty());
}

TEST_CASE("envfile: comments and blank lines") {
  EnvFile f = parse_env_file("# a comment\n\n   \n; another\n  # indented\nA=1\n");
  REQUIRE(f.entries.size() == 1);
  CHECK(f.entries[0].key == "A");
  CHECK(f.entries[0].line == 6);
  CHECK(f.ignored.empty());
  CHECK(f.warnings.empty());
}

TEST_CASE("envfile: '#' inside a value is not a comment") {
  EnvFile f = parse_env_file("A=foo #bar\n");
  CHECK(value_of(f, "A") == "foo #bar");
}

TEST_CASE("envfile: unquoted values lose surrounding whitespace, keys too") {
  EnvFile f = parse_env_file("  KEY  =   some value   \t\nB=\n");
  CHECK(value_of(f, "KEY") == "some value");
  CHECK(value_of(f, "B") == "");
  CHECK(f.entries[0].line == 1);
  CHECK(f.entries[1].line == 2);
}

TEST_CASE("envfile: unquoted backslash escapes the next character") {
  EnvFile f = parse_env_file("A=foo\\ \\ \nB=C:\\path\n");
  CHECK(value_of(f, "A") == "foo  ");  // escaped spaces are kept
  CHECK(value_of(f, "B") == "C:path");
}

TEST_CASE("envfile: double quotes with escapes") {
  EnvFile f = parse_env_file(R"(A="say \"hi\" \\ \$HOME \` \n done"
B="  spaced  "
C="x"y
)");
  CHECK(value_of(f, "A") == R"(say "hi" \ $HOME ` \n done)");
  CHECK(value_of(f, "B") == "  spaced  ");
  CHECK(value_of(f, "C") == "xy");  // quoted and unquoted parts join, as in the shell
}

TEST_CASE("envfile: single quotes are literal") {
  EnvFile f = parse_env_file("A='a \\\" $b'\n");
  CHECK(value_of(f, "A") == "a \\\" $b");
}

TEST_CASE("envfile: line continuation") {
  EnvFile f = parse_env_file("A=one\\\ntwo\nB=\"x\\\ny\"\nC=3\n");
  CHECK(value_of(f, "A") == "onetwo");
  CHECK(value_of(f, "B") == "xy");
  CHECK(f.find("A")->line == 1);
  CHECK(f.find("B")->line == 3);
  CHECK(f.find("C")->line == 5);
  CHECK(f.warnings.empty());
}

TEST_CASE("envfile: CRLF line ends") {
  EnvFile f = parse_env_file("A=1\r\nB=\"two\"\r\n");
  CHECK(value_of(f, "A") == "1");
  CHECK(value_of(f, "B") == "two");
  CHECK(f.find("B")->line == 2);
  CHECK(f.ignored.empty());
}

TEST_CASE("envfile: last assignment wins, and the repeat is noted") {
  EnvFile f = parse_env_file("A=1\nA=2\n");
  CHECK(f.entries.size() == 2);
  CHECK(value_of(f, "A") == "2");
  CHECK(f.find("A")->line == 2);
  REQUIRE(f.warnings.size() == 1);
  CHECK(f.warnings[0].line == 2);
  CHECK(f.warnings[0].reason.find("first on line 1") != std::string::npos);
}

TEST_CASE("envfile: export prefix is not systemd syntax") {
  EnvFile f = parse_env_file("export ETCD_NAME=\"ha\"\n");
  CHECK(f.entries.empty());
  REQUIRE(f.ignored.size() == 1);
  CHECK(f.ignored[0].line == 1);
  CHECK(f.ignored[0].text == "export ETCD_NAME=\"ha\"");
  CHECK(f.ignored[0].reason.find("'export'") != std::string::npos);
  CHECK(f.ignored[0].reason.find("write ETCD_NAME=\"ha\"") != std::string::npos);
}

TEST_CASE("envfile: invalid names and lines without '='") {
  EnvFile f = parse_env_file("1ABC=x\nFOO-BAR=y\njust words\n=value\nOK=1\nlast");
  REQUIRE(f.ignored.size() == 5);
  CHECK(f.ignored[0].line == 1);
  CHECK(f.ignored[0].reason.find("invalid variable name '1ABC'") != std::string::npos);
  CHECK(f.ignored[1].reason.find("invalid variable name 'FOO-BAR'") != std::string::npos);
  CHECK(f.ignored[2].line == 3);
  CHECK(f.ignored[2].reason.find("no '='") != std::string::npos);
  CHECK(f.ignored[3].reason.find("no variable name") != std::string::npos);
  CHECK(f.ignored[4].line == 6);  // no final newline
  CHECK(f.ignored[4].text == "last");
  REQUIRE(f.entries.size() == 1);
  CHECK(f.entries[0].line == 5);
}

TEST_CASE("envfile: YAML-style lines suggest the environment form") {
  EnvFile f = parse_env_file(
      "listen-client-urls: http://127.0.0.1:2379\n"
      "  initial-cluster-token: 'tok'\n"
      "ETCD_NAME: ha # comment\n"
      "data-dir:\n"
      "http://x:1\n");
  REQUIRE(f.ignored.size() == 5);
  CHECK(f.ignored[0].reason.find("write ETCD_LISTEN_CLIENT_URLS=\"http://127.0.0.1:2379\"") !=
        std::string::npos);
  CHECK(f.ignored[1].reason.find("write ETCD_INITIAL_CLUSTER_TOKEN=\"tok\"") != std::string::npos);
  CHECK(f.ignored[2].reason.find("write ETCD_NAME=\"ha\"") != std::string::npos);
  CHECK(f.ignored[3].reason.find("write ETCD_DATA_DIR=\"\"") != std::string::npos);
  CHECK(f.ignored[4].reason.find("YAML") == std::string::npos);  // a URL is no mapping
}

TEST_CASE("envfile: YAML line containing '=' is still recognised") {
  EnvFile f = parse_env_file("initial-cluster: ha=http://10.0.0.1:2380\n");
  REQUIRE(f.ignored.size() == 1);
  CHECK(f.ignored[0].reason.find("write ETCD_INITIAL_CLUSTER=\"ha=http://10.0.0.1:2380\"") !=
        std::string::npos);
}

TEST_CASE("envfile: command-line flag syntax") {
  EnvFile f = parse_env_file("--enable-v2=true\n");
  REQUIRE(f.ignored.size() == 1);
  CHECK(f.ignored[0].reason.find("write ETCD_ENABLE_V2=\"true\"") != std::string::npos);
}

TEST_CASE("envfile: unterminated quote runs to the end, with a warning") {
  EnvFile f = parse_env_file("A=\"open\nB=2\n");
  REQUIRE(f.entries.size() == 1);
  CHECK(f.entries[0].key == "A");
  CHECK(f.entries[0].value == "open\nB=2\n");
  CHECK(f.find("B") == nullptr);
  REQUIRE(f.warnings.size() == 1);
  CHECK(f.warnings[0].line == 1);
  CHECK(f.warnings[0].reason.find("unterminated double quote") != std::string::npos);
}

TEST_CASE("envfile: a quote closed lines later swallows them, with a warning") {
  EnvFile f = parse_env_file("A='x\nB=2'\nC=3\n");
  CHECK(value_of(f, "A") == "x\nB=2");
  CHECK(f.find("B") == nullptr);
  CHECK(value_of(f, "C") == "3");
  REQUIRE(f.warnings.size() == 1);
  CHECK(f.warnings[0].reason.find("spans lines 1-2") != std::string::npos);
}

TEST_CASE("envfile: comment ending in a backslash") {
  EnvFile f = parse_env_file("# note \\\nA=1\n");
  CHECK(value_of(f, "A") == "1");  // systemd v254+ reads it
  REQUIRE(f.warnings.size() == 1);
  CHECK(f.warnings[0].line == 1);
  CHECK(f.warnings[0].reason.find("line 2") != std::string::npos);
}

TEST_CASE("envfile: control characters make an assignment invalid") {
  EnvFile f = parse_env_file("A=\"x\x01y\"\nB=\"tab\there\"\n");
  CHECK(f.find("A") == nullptr);
  REQUIRE(f.ignored.size() == 1);
  CHECK(f.ignored[0].reason.find("control character") != std::string::npos);
  CHECK(value_of(f, "B") == "tab\there");
}

TEST_CASE("envfile: value at end of file without newline") {
  EnvFile f = parse_env_file("A=1\nB=  two  ");
  CHECK(value_of(f, "B") == "two");
  CHECK(f.find("B")->line == 2);
  EnvFile g = parse_env_file("C=");
  CHECK(value_of(g, "C") == "");
}

TEST_CASE("envfile: etcd_env_name_for_flag") {
  CHECK(etcd_env_name_for_flag("enable-v2") == "ETCD_ENABLE_V2");
  CHECK(etcd_env_name_for_flag("some-flag") == "ETCD_SOME_FLAG");
  CHECK(etcd_env_name_for_flag("ETCD_NAME") == "ETCD_NAME");
  CHECK(etcd_env_name_for_flag("name") == "ETCD_NAME");
}

TEST_CASE("envfile: looks_like_yaml") {
  CHECK(looks_like_yaml("enable-v2: true"));
  CHECK(looks_like_yaml("  name:"));
  CHECK_FALSE(looks_like_yaml("A=1"));
  CHECK_FALSE(looks_like_yaml("http://host:2379"));
  CHECK_FALSE(looks_like_yaml("# enable-v2: true"));
}

TEST_CASE("initial cluster: the guide's value") {
  InitialCluster c = parse_initial_cluster(
      "ha=http://127.0.1.1:2380,kaptan1=http://127.0.1.2:2380,kaptan2=http://127.0.1.3:2380");
  CHECK(c.errors.empty());
  REQUIRE(c.members.size() == 3);
  CHECK(c.members[1].name == "kaptan1");
  CHECK(c.members[1].url == "http://127.0.1.2:2380");
  CHECK(c.names() == std::vector<std::string>{"ha", "kaptan1", "kaptan2"});
}

TEST_CASE("initial cluster: a name with several URLs") {
  InitialCluster c =
      parse_initial_cluster("a=http://10.0.0.1:2380, a=https://[fd00::1]:2380 ,b=http://h:2380,");
  CHECK(c.errors.empty());
  CHECK(c.members.size() == 3);
  CHECK(c.names() == std::vector<std::string>{"a", "b"});
  CHECK(c.urls_of("a") ==
        std::vector<std::string>{"http://10.0.0.1:2380", "https://[fd00::1]:2380"});
  CHECK(c.urls_of("zzz").empty());
}

TEST_CASE("initial cluster: malformed items are reported, good ones kept") {
  InitialCluster c = parse_initial_cluster(
      "noequals,=http://x:2380,bad=notaurl,noport=http://x,path=http://x:2380/p,ok=http://y:2380");
  REQUIRE(c.errors.size() == 5);
  CHECK(c.errors[0].find("'noequals' has no '='") != std::string::npos);
  CHECK(c.errors[1].find("no member name") != std::string::npos);
  CHECK(c.errors[2].find("'notaurl' is not a URL") != std::string::npos);
  CHECK(c.errors[3].find("no port") != std::string::npos);
  CHECK(c.errors[4].find("has a path") != std::string::npos);
  REQUIRE(c.members.size() == 1);
  CHECK(c.members[0].name == "ok");
}

TEST_CASE("split_url_list") {
  CHECK(split_url_list("http://a:1, http://b:2,,") ==
        std::vector<std::string>{"http://a:1", "http://b:2"});
  CHECK(split_url_list("").empty());
  CHECK(split_url_list(" x ") == std::vector<std::string>{"x"});
}

TEST_CASE("parse_url") {
  auto u = parse_url("http://127.0.1.1:2379");
  REQUIRE(u);
  CHECK(u->scheme == "http");
  CHECK(u->host == "127.0.1.1");
  CHECK(u->port == 2379);
  CHECK(u->path.empty());
  auto v6 = parse_url("HTTPS://user@[::1]:8008/patroni");
  REQUIRE(v6);
  CHECK(v6->scheme == "https");
  CHECK(v6->host == "::1");
  CHECK(v6->port == 8008);
  CHECK(v6->path == "/patroni");
  auto noport = parse_url("http://localhost");
  REQUIRE(noport);
  CHECK(noport->port == 0);
  CHECK_FALSE(parse_url("127.0.0.1:2379"));
  CHECK_FALSE(parse_url("http://:2379"));
  CHECK_FALSE(parse_url("http://h:99999"));
  CHECK_FALSE(parse_url("http://h:x"));
  CHECK_FALSE(parse_url("http://::1:2379"));
}
