// The HAProxy agent-check: the answer policy (roles, leader key, lag hysteresis, remedies,
// "cannot tell"), the listener against real sockets (agent-send line, silent and hostile
// clients, the connection cap), and the leader-key watch against a fake etcd v2.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "src/agent_policy.hpp"
#include "src/agent_server.hpp"
#include "src/http_client.hpp"
#include "src/leader_watch.hpp"
#include "tests/unit/api_support.hpp"

using namespace fener;
using namespace std::chrono_literals;
using fener::test::raw_exchange;
using fener::test::run_co;

namespace {

CheckResult patroni(const std::string& role, const std::string& state, json lag = nullptr) {
  const bool running = state == "running";
  json ev = {{"role", role},
             {"state", state},
             {"state_kind", running ? "running" : "failed"},
             {"lag", lag}};
  return CheckResult::make(running ? Status::passing : Status::critical, "x", ev);
}

AgentFacts facts(const CheckResult* r, std::optional<std::string> leader,
                 std::string node = "kaptan1") {
  AgentFacts f;
  f.node = std::move(node);
  f.patroni = r;
  f.leader_key = std::move(leader);
  return f;
}

}  // namespace

TEST_CASE("agent-send words name the backend's role") {
  CHECK(agent_role_from_string("primary\n") == AgentRole::primary);
  CHECK(agent_role_from_string(" Master \r\n") == AgentRole::primary);
  CHECK(agent_role_from_string("read-write") == AgentRole::primary);
  CHECK(agent_role_from_string("replica") == AgentRole::replica);
  CHECK(agent_role_from_string("read-only") == AgentRole::read_only);
  CHECK(agent_role_from_string("ANY") == AgentRole::any);
  CHECK_FALSE(agent_role_from_string("primary replica"));
  CHECK_FALSE(agent_role_from_string(""));
}

TEST_CASE("answer lines are what HAProxy parses: words, then # and a one-line reason") {
  CHECK(AgentAnswer{AgentVerdict::up, ""}.line() == "up ready\n");
  CHECK(AgentAnswer{AgentVerdict::down, "not the leader"}.line() == "down ready #not the leader\n");
  CHECK(AgentAnswer{AgentVerdict::drain, "a\nb#c"}.line() == "drain #a b c\n");
  CHECK(AgentAnswer{AgentVerdict::none, "x"}.line().empty());
}

TEST_CASE("primary: up only on the leader with PostgreSQL running") {
  AgentPolicy p;
  auto leader = patroni("master", "running");
  auto replica = patroni("replica", "running", 0);
  CHECK(p.answer(AgentRole::primary, facts(&leader, "kaptan1")).verdict == AgentVerdict::up);
  CHECK(p.answer(AgentRole::primary, facts(&replica, "kaptan2")).line() ==
        "down ready #not the leader (leader: kaptan2)\n");
  // Patroni 4 says primary.
  auto p4 = patroni("primary", "running");
  CHECK(p.answer(AgentRole::primary, facts(&p4, "kaptan1")).verdict == AgentVerdict::up);
}

TEST_CASE("primary: the leader key wins over a stale Patroni answer") {
  AgentPolicy p;
  auto leader = patroni("master", "running");
  // Demoted in etcd, Patroni not polled since: down at once.
  CHECK(p.answer(AgentRole::primary, facts(&leader, "kaptan2")).verdict == AgentVerdict::down);
  CHECK(p.answer(AgentRole::primary, facts(&leader, "")).line() ==
        "down ready #the cluster has no leader\n");
  // Key ours but Patroni still a replica (promotion in progress): not yet.
  auto replica = patroni("replica", "running", 0);
  CHECK(p.answer(AgentRole::primary, facts(&replica, "kaptan1")).verdict == AgentVerdict::down);
  // etcd unreadable: Patroni's role alone decides.
  CHECK(p.answer(AgentRole::primary, facts(&leader, std::nullopt)).verdict == AgentVerdict::up);
}

TEST_CASE("primary: leader whose PostgreSQL does not run is down (Patroni's /primary says 200)") {
  AgentPolicy p;
  auto failed = patroni("master", "start failed");
  CHECK(p.answer(AgentRole::primary, facts(&failed, "kaptan1")).line() ==
        "down ready #PostgreSQL start failed (role master)\n");
}

TEST_CASE("cannot tell is never down: the last definite answer, or no line at all") {
  AgentPolicy p;
  CHECK(p.answer(AgentRole::primary, facts(nullptr, std::nullopt)).line().empty());
  auto timeout = CheckResult::make(Status::unknown, "no answer", {{"error", "timeout"}});
  CHECK(p.answer(AgentRole::primary, facts(&timeout, "kaptan1")).line().empty());
  auto leader = patroni("master", "running");
  CHECK(p.answer(AgentRole::primary, facts(&leader, "kaptan1")).verdict == AgentVerdict::up);
  CHECK(p.answer(AgentRole::primary, facts(&timeout, "kaptan1")).verdict == AgentVerdict::up);
  // Patroni's own SQL probe failing on the leader is not a verdict either.
  auto unknown_state = patroni("master", "unknown");
  CHECK(p.answer(AgentRole::primary, facts(&unknown_state, "kaptan1")).verdict == AgentVerdict::up);
  // But Patroni refusing connections is: nothing keeps the role safe.
  auto refused = CheckResult::make(Status::critical, "refused", {{"error", "refused"}});
  CHECK(p.answer(AgentRole::primary, facts(&refused, "kaptan1")).verdict == AgentVerdict::down);
}

TEST_CASE("replica: lag drains with hysteresis, so a catching-up replica does not flap") {
  AgentPolicy p({/*drain*/ 100, /*ready*/ 10, true});
  auto at = [&](json lag) {
    auto r = patroni("replica", "running", lag);
    return p.answer(AgentRole::replica, facts(&r, "kaptan2")).verdict;
  };
  CHECK(at(0) == AgentVerdict::up);
  CHECK(at(100) == AgentVerdict::up);
  CHECK(at(101) == AgentVerdict::drain);
  CHECK(at(50) == AgentVerdict::drain);  // under drain, not yet under ready
  CHECK(at(11) == AgentVerdict::drain);
  CHECK(at("unknown") == AgentVerdict::drain);  // lag not known: stays drained
  CHECK(at(10) == AgentVerdict::up);
  CHECK(at(50) == AgentVerdict::up);  // back in: only over drain leaves again
}

TEST_CASE("replica: new thresholds (a reload) keep a drained replica drained") {
  AgentPolicy p({/*drain*/ 100, /*ready*/ 10, true});
  auto at = [&](json lag) {
    auto r = patroni("replica", "running", lag);
    return p.answer(AgentRole::replica, facts(&r, "kaptan2")).verdict;
  };
  CHECK(at(101) == AgentVerdict::drain);
  p.set_options({/*drain*/ 200, /*ready*/ 20, true});
  CHECK(at(50) == AgentVerdict::drain);  // between the new ready and drain: still out
  CHECK(at(20) == AgentVerdict::up);     // the new lag_ready applies
  CHECK(at(150) == AgentVerdict::up);    // and the new lag_drain
  CHECK(at(201) == AgentVerdict::drain);
}

TEST_CASE("replica, read-only and any backends") {
  AgentPolicy p;
  auto leader = patroni("master", "running");
  auto replica = patroni("replica", "running", 0);
  auto stopped = patroni("replica", "stopped");
  CHECK(p.answer(AgentRole::replica, facts(&leader, "kaptan1")).line() ==
        "down ready #this node is the leader\n");
  CHECK(p.answer(AgentRole::read_only, facts(&leader, "kaptan1")).verdict == AgentVerdict::up);
  CHECK(p.answer(AgentRole::replica, facts(&replica, "kaptan2")).verdict == AgentVerdict::up);
  CHECK(p.answer(AgentRole::replica, facts(&stopped, "kaptan2")).verdict == AgentVerdict::down);
  CHECK(p.answer(AgentRole::any, facts(&replica, "kaptan2")).verdict == AgentVerdict::up);
  CHECK(p.answer(AgentRole::any, facts(&stopped, "kaptan2")).verdict == AgentVerdict::down);
}

TEST_CASE("a remedy on the node answers maint, or drain when configured") {
  auto leader = patroni("master", "running");
  auto f = facts(&leader, "kaptan1");
  f.remedy = "patroni_restart (rule postgres_down)";
  AgentPolicy p;
  CHECK(p.answer(AgentRole::primary, f).line() ==
        "maint #remedy in progress: patroni_restart (rule postgres_down)\n");
  AgentPolicy d({16 << 20, 4 << 20, false});
  CHECK(d.answer(AgentRole::primary, f).verdict == AgentVerdict::drain);
  f.remedy.clear();
  CHECK(p.answer(AgentRole::primary, f).line() == "up ready #leader, PostgreSQL running\n");
}

namespace {

struct AgentHarness {
  asio::io_context io;
  AgentRole asked = AgentRole::any;
  int calls = 0;
  AgentAnswer reply{AgentVerdict::up, "ok"};
  AgentServer server;
  explicit AgentHarness(std::size_t cap = 16)
      : server(io, options(cap), [this](AgentRole r) {
          asked = r;
          ++calls;
          return reply;
        }) {
    server.start();
  }
  static AgentServerOptions options(std::size_t cap) {
    AgentServerOptions o;
    o.listen = "127.0.0.1:0";
    o.read_wait = 100ms;
    o.deadline = 500ms;
    o.max_connections = cap;
    return o;
  }
  fener::test::RawReply exchange(std::string send, std::chrono::milliseconds limit = 3s) {
    fener::test::RawReply out;
    run_co(io, [&]() -> asio::awaitable<void> {
      out = co_await raw_exchange(server.port(), std::move(send), limit);
    });
    return out;
  }
};

}  // namespace

TEST_CASE("agent listener: the agent-send line picks the role; one line back, then close") {
  AgentHarness h;
  auto r = h.exchange("replica\n");
  CHECK(r.bytes == "up ready #ok\n");
  CHECK(r.closed);
  CHECK(h.asked == AgentRole::replica);
  CHECK(h.server.stats().answers[1][0] == 1);
}

TEST_CASE("agent listener: a client that sends nothing gets the default role's answer") {
  AgentHarness h;
  auto r = h.exchange("");
  CHECK(r.bytes == "up ready #ok\n");
  CHECK(h.asked == AgentRole::primary);
}

TEST_CASE("agent listener: an unknown word is counted and answered for the default role") {
  AgentHarness h;
  auto r = h.exchange("bogus\n");
  CHECK(r.bytes == "up ready #ok\n");
  CHECK(h.server.stats().bad_request == 1);
}

TEST_CASE("agent listener: a flood without newline is cut off unanswered") {
  AgentHarness h;
  auto r = h.exchange(std::string(4096, 'x'));
  CHECK(r.bytes.empty());
  CHECK(r.closed);
  CHECK(h.calls == 0);
}

TEST_CASE("agent listener: cannot tell means no line, and HAProxy keeps its state") {
  AgentHarness h;
  h.reply = AgentAnswer{AgentVerdict::none, ""};
  auto r = h.exchange("primary\n");
  CHECK(r.bytes.empty());
  CHECK(r.closed);
}

namespace {

// Connects n clients, each sending `first` (maybe nothing), and waits until the server
// holds them all.
std::vector<std::unique_ptr<asio::ip::tcp::socket>> hold(AgentHarness& h, int n,
                                                         const std::string& first) {
  using tcp = asio::ip::tcp;
  std::vector<std::unique_ptr<tcp::socket>> holders;
  for (int i = 0; i < n; ++i) {
    holders.push_back(std::make_unique<tcp::socket>(h.io));
    holders.back()->connect({asio::ip::make_address("127.0.0.1"), h.server.port()});
    if (!first.empty()) asio::write(*holders.back(), asio::buffer(first));
  }
  for (int i = 0; i < 100 && h.server.connections() < static_cast<std::size_t>(n); ++i)
    h.io.run_for(5ms);
  return holders;
}

// What the server sends on s until it closes (within 2 s), and whether it closed.
std::pair<std::string, bool> read_to_end(AgentHarness& h, asio::ip::tcp::socket& s) {
  std::string got;
  bool closed = false;
  asio::co_spawn(
      h.io,
      [&]() -> asio::awaitable<void> {
        boost::system::error_code ec;
        co_await asio::async_read(s, asio::dynamic_buffer(got),
                                  asio::redirect_error(asio::use_awaitable, ec));
        closed = ec == asio::error::eof || ec == asio::error::connection_reset;
      },
      asio::detached);
  for (int i = 0; i < 400 && !closed; ++i) h.io.run_for(5ms);
  return {got, closed};
}

}  // namespace

TEST_CASE("agent listener: at the cap a silent connection makes room for a new one") {
  AgentHarness h(2);
  // Two clients that never send hold both slots; a third whose line is there when it is
  // accepted takes the oldest silent one's slot and is answered at once, the evicted one
  // is closed unanswered.
  auto holders = hold(h, 2, "");
  REQUIRE(h.server.connections() == 2);
  asio::ip::tcp::socket asker(h.io);  // connected and sent before the server looks
  asker.connect({asio::ip::make_address("127.0.0.1"), h.server.port()});
  asio::write(asker, asio::buffer(std::string("replica\n")));
  auto third = read_to_end(h, asker);
  CHECK(third.first == "up ready #ok\n");
  CHECK(h.server.stats().evicted == 1);
  CHECK(h.server.stats().rejected == 0);
  auto first = read_to_end(h, *holders[0]);
  CHECK(first.first.empty());  // the oldest: closed unanswered
  CHECK(first.second);
  // The other one is still answered for the default role after read_wait.
  auto second = read_to_end(h, *holders[1]);
  const std::string got = second.first;
  CHECK(got == "up ready #ok\n");
}

TEST_CASE("agent listener: at the cap a silent newcomer is closed, the held ones stay") {
  AgentHarness h(2);
  auto holders = hold(h, 2, "");
  REQUIRE(h.server.connections() == 2);
  fener::test::RawReply third;
  asio::ip::tcp::socket quiet(h.io);
  quiet.connect({asio::ip::make_address("127.0.0.1"), h.server.port()});
  auto r = read_to_end(h, quiet);
  CHECK(r.first.empty());
  CHECK(r.second);
  CHECK(h.server.stats().rejected == 1);
  CHECK(h.server.stats().evicted == 0);
}

TEST_CASE("agent listener: over the cap with no silent connection, the new one is closed") {
  AgentHarness h(2);
  // Both slots hold clients that sent part of a line: they are served first, so the
  // third connection is closed at once.
  auto holders = hold(h, 2, "prim");
  REQUIRE(h.server.connections() == 2);
  for (int i = 0; i < 20; ++i) h.io.run_for(1ms);  // their bytes are read
  fener::test::RawReply third;
  run_co(h.io, [&]() -> asio::awaitable<void> {
    third = co_await raw_exchange(h.server.port(), "primary\n", 3s);
  });
  CHECK(third.bytes.empty());
  CHECK(third.closed);
  CHECK(h.server.stats().rejected == 1);
  CHECK(h.server.stats().evicted == 0);
  // The held connections are answered and closed; the listener serves again.
  for (int i = 0; i < 200 && h.server.connections() > 0; ++i) h.io.run_for(5ms);
  CHECK(h.server.connections() == 0);
  CHECK(h.exchange("primary\n").bytes == "up ready #ok\n");
}

TEST_CASE("agent listener: a reload's new options apply to the next connections") {
  AgentHarness h(2);
  auto o = AgentHarness::options(1);
  o.default_role = AgentRole::replica;
  o.read_wait = 5s;
  h.server.update(o);
  // An empty line is answered at once, for the new default role.
  CHECK(h.exchange("\n").bytes == "up ready #ok\n");
  CHECK(h.asked == AgentRole::replica);
  // A silent client now waits 5 s, not 100 ms, for its line: still held after 300 ms.
  auto holders = hold(h, 1, "");
  REQUIRE(h.server.connections() == 1);
  h.io.run_for(300ms);
  CHECK(h.server.connections() == 1);
  // The cap is now 1: a silent newcomer is closed at once, the held one stays.
  asio::ip::tcp::socket quiet(h.io);
  quiet.connect({asio::ip::make_address("127.0.0.1"), h.server.port()});
  auto r = read_to_end(h, quiet);
  CHECK(r.first.empty());
  CHECK(h.server.stats().rejected == 1);
  CHECK(h.server.connections() == 1);
}

TEST_CASE("etcd v2 leader-key answers") {
  auto get = parse_leader_answer(
      200,
      R"({"action":"get","node":{"key":"/service/liman/leader","value":"kaptan1","modifiedIndex":7}})",
      42);
  CHECK(get.kind == LeaderKeyEvent::Kind::value);
  CHECK(get.leader == "kaptan1");
  CHECK(get.next_index == 43);  // from the cluster's index, not the key's
  auto cas = parse_leader_answer(
      200,
      R"({"action":"compareAndSwap","node":{"value":"kaptan2","modifiedIndex":50},"prevNode":{"value":"kaptan1"}})",
      std::nullopt);
  CHECK(cas.kind == LeaderKeyEvent::Kind::value);
  CHECK(cas.leader == "kaptan2");
  CHECK(cas.next_index == 51);
  auto expire = parse_leader_answer(
      200, R"({"action":"expire","node":{"modifiedIndex":60},"prevNode":{"value":"kaptan2"}})",
      std::nullopt);
  CHECK(expire.kind == LeaderKeyEvent::Kind::absent);
  CHECK(expire.next_index == 61);
  auto missing = parse_leader_answer(
      404,
      R"({"errorCode":100,"message":"Key not found","cause":"/service/liman/leader","index":70})",
      70);
  CHECK(missing.kind == LeaderKeyEvent::Kind::absent);
  CHECK(missing.next_index == 71);
  auto cleared = parse_leader_answer(
      400, R"({"errorCode":401,"message":"The event in requested index is outdated and cleared"})",
      900);
  CHECK(cleared.kind == LeaderKeyEvent::Kind::resync);
  CHECK(parse_leader_answer(200, "<html>", 1).kind == LeaderKeyEvent::Kind::error);
  CHECK(parse_leader_answer(200, R"({"action":"get","node":{"value":3}})", 1).kind ==
        LeaderKeyEvent::Kind::error);
}

TEST_CASE("the leader watch follows a fake etcd's long poll and survives a dead endpoint") {
  asio::io_context io;
  // A fake etcd v2: GET returns the key; ?wait=true blocks until `next` is set.
  std::optional<std::string> next;
  int waits = 0;
  auto o = fener::test::local_options();
  o.deadline = std::chrono::seconds(30);
  ApiServer etcd(io, o);
  etcd.add_route(
      "GET", "/v2/keys/service/liman/leader", false, false,
      [&](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
        if (req.query.find("wait=true") == std::string::npos) {
          ApiResponse r = ApiResponse::json_body(
              200, {{"action", "get"}, {"node", {{"value", "kaptan1"}, {"modifiedIndex", 5}}}});
          r.headers.emplace_back("X-Etcd-Index", "9");
          co_return r;
        }
        CHECK(req.query.find("waitIndex=" + std::to_string(10 + waits)) != std::string::npos);
        ++waits;
        asio::steady_timer t(co_await asio::this_coro::executor);
        while (!next) {
          t.expires_after(5ms);
          co_await t.async_wait(asio::use_awaitable);
        }
        const std::string v = *next;
        next.reset();
        co_return ApiResponse::json_body(
            200,
            {{"action", "compareAndSwap"}, {"node", {{"value", v}, {"modifiedIndex", 9 + waits}}}});
      });
  etcd.start();
  HttpClient http(io);
  std::vector<std::optional<std::string>> seen;
  // The first endpoint refuses: the watch moves on to the next one.
  LeaderWatch watch(io, http,
                    {"http://127.0.0.1:1", "http://127.0.0.1:" + std::to_string(etcd.port())},
                    "liman", [&](const std::optional<std::string>& l) { seen.push_back(l); });
  watch.start();
  auto run_until = [&](auto pred) {
    for (int i = 0; i < 1000 && !pred(); ++i) io.run_for(5ms);
    return pred();
  };
  REQUIRE(run_until([&] { return watch.leader() == std::optional<std::string>("kaptan1"); }));
  REQUIRE(run_until([&] { return waits == 1; }));
  next = "kaptan1";  // Patroni refreshing its key: no change reported
  REQUIRE(run_until([&] { return waits == 2; }));
  next = "kaptan2";
  REQUIRE(run_until([&] { return watch.leader() == std::optional<std::string>("kaptan2"); }));
  CHECK(seen.back() == std::optional<std::string>("kaptan2"));
  CHECK(std::count(seen.begin(), seen.end(), std::optional<std::string>("kaptan1")) == 1);
  CHECK(watch.errors() >= 1);
  watch.stop();
  etcd.stop();
  io.run_for(50ms);
}
