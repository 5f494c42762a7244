// The policy of one rule: triggers, settle, ladders, rate limits, giving up and
// recovering, with the clock passed in (no sleeping), and evidence selectors.
#include <doctest/doctest.h>

#include "src/rules.hpp"

using namespace fener;
using namespace std::chrono_literals;

namespace {

CheckResult result(Status s, std::string msg = "", json ev = json::object()) {
  return CheckResult::make(s, std::move(msg), std::move(ev));
}

// A rule with `steps` ladder steps of `attempts` each; remedies are not needed here.
Rule make_rule(std::size_t steps = 2, int attempts = 1) {
  Rule r;
  r.name = "r";
  r.when.check = "c";
  r.when.statuses = {Status::critical};
  r.when.consecutive = 2;
  r.settle = 10s;
  r.max_actions = 10;
  r.window = 1h;
  for (std::size_t i = 0; i < steps; ++i) {
    LadderStep s;
    s.remedy = "step" + std::to_string(i);
    s.attempts = attempts;
    r.ladder.push_back(std::move(s));
  }
  return r;
}

struct Sim {
  Rule rule;
  RuleState state;
  TimePoint now = TimePoint{} + 1000h;
  Verdict feed(Status s, std::chrono::seconds dt = 2s) {
    now += dt;
    state.observe(rule, result(s), now);
    return state.decide(rule, now);
  }
};

}  // namespace

TEST_CASE("a rule acts only after N consecutive matching results") {
  Sim s{make_rule()};
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  auto v = s.feed(Status::critical);
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 0);
}

TEST_CASE("unknown never triggers and breaks the streak") {
  Sim s{make_rule()};
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  CHECK(s.feed(Status::unknown).kind == Verdict::none);
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  CHECK(s.feed(Status::unknown).kind == Verdict::none);
  CHECK(s.feed(Status::unknown).kind == Verdict::none);
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  CHECK(s.feed(Status::critical).kind == Verdict::act);
}

TEST_CASE("a warning does not match a critical-only trigger") {
  Sim s{make_rule()};
  for (int i = 0; i < 5; ++i) CHECK(s.feed(Status::warning).kind == Verdict::none);
}

TEST_CASE("results during settle are not judged; escalation needs fresh results") {
  Sim s{make_rule()};
  s.feed(Status::critical);
  REQUIRE(s.feed(Status::critical).kind == Verdict::act);
  s.state.acted(s.rule, s.now);
  // Inside the 10 s settle: old-state results are ignored, whatever they say.
  CHECK(s.feed(Status::critical, 2s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 2s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 2s).kind == Verdict::none);
  CHECK(s.state.phase(s.now) == Phase::settling);
  // After settle, two fresh matches move to the next step (step 0 had one attempt).
  CHECK(s.feed(Status::critical, 5s).kind == Verdict::none);
  auto v = s.feed(Status::critical);
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 1);
}

TEST_CASE("attempts repeat a step before escalating; the ladder's end gives up") {
  Sim s{make_rule(2, 2)};
  std::vector<std::size_t> steps;
  for (int round = 0; round < 4; ++round) {
    s.feed(Status::critical, 11s);
    auto v = s.feed(Status::critical);
    REQUIRE(v.kind == Verdict::act);
    steps.push_back(v.step);
    s.state.acted(s.rule, s.now);
  }
  CHECK(steps == std::vector<std::size_t>{0, 0, 1, 1});
  s.feed(Status::critical, 11s);
  auto v = s.feed(Status::critical);
  CHECK(v.kind == Verdict::give_up);
  CHECK(v.reason.find("every remedy") != std::string::npos);
  CHECK(s.state.phase(s.now) == Phase::gave_up);
  // Quiet while given up.
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  CHECK(s.feed(Status::critical).kind == Verdict::none);
}

TEST_CASE("recovery resets the ladder and reports it once") {
  Sim s{make_rule()};
  s.feed(Status::critical);
  REQUIRE(s.feed(Status::critical).kind == Verdict::act);
  s.state.acted(s.rule, s.now);
  CHECK(s.feed(Status::passing, 11s).kind == Verdict::none);
  CHECK(s.feed(Status::passing).kind == Verdict::recovered);
  CHECK(s.feed(Status::passing).kind == Verdict::none);
  // A new fault starts at the first step again.
  s.feed(Status::critical);
  auto v = s.feed(Status::critical);
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 0);
}

TEST_CASE("the rate limit gives up even across recoveries, until the window passes") {
  Rule r = make_rule(1, 1);
  r.max_actions = 2;
  r.window = 1h;
  Sim s{std::move(r)};
  for (int i = 0; i < 2; ++i) {
    s.feed(Status::critical, 11s);
    REQUIRE(s.feed(Status::critical).kind == Verdict::act);
    s.state.acted(s.rule, s.now);
    s.feed(Status::passing, 11s);
    REQUIRE(s.feed(Status::passing).kind == Verdict::recovered);
  }
  s.feed(Status::critical);
  auto v = s.feed(Status::critical);
  CHECK(v.kind == Verdict::give_up);
  CHECK(v.reason.find("rate limit") != std::string::npos);
  // An hour later the old actions no longer count.
  s.feed(Status::passing, 1h);
  s.feed(Status::passing);
  s.feed(Status::critical);
  CHECK(s.feed(Status::critical).kind == Verdict::act);
}

TEST_CASE("within: N matches inside a window, not necessarily in a row") {
  Rule r = make_rule();
  r.when.within_count = 3;
  r.when.within_window = 60s;
  Sim s{std::move(r)};
  CHECK(s.feed(Status::critical, 10s).kind == Verdict::none);
  CHECK(s.feed(Status::passing, 10s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 10s).kind == Verdict::none);
  CHECK(s.feed(Status::passing, 10s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 10s).kind == Verdict::act);
}

TEST_CASE("within: matches older than the window are forgotten") {
  Rule r = make_rule();
  r.when.within_count = 3;
  r.when.within_window = 30s;
  Sim s{std::move(r)};
  CHECK(s.feed(Status::critical, 20s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 20s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 20s).kind == Verdict::none);
}

TEST_CASE("hold waits without using an attempt; skip moves on without one") {
  Sim s{make_rule(3)};
  s.feed(Status::critical);
  REQUIRE(s.feed(Status::critical).kind == Verdict::act);
  s.state.hold(s.rule, s.now);  // e.g. the cluster is paused
  CHECK(s.feed(Status::critical).kind == Verdict::none);
  s.feed(Status::critical, 11s);
  auto v = s.feed(Status::critical);
  REQUIRE(v.kind == Verdict::act);
  CHECK(v.step == 0);  // still the first step
  s.state.skip_step();
  v = s.state.decide(s.rule, s.now);
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 1);
  CHECK(s.state.actions_in_window(s.rule, s.now) == 0);
}

TEST_CASE("a chained step hands over to the next one at once") {
  Sim s{make_rule(2)};
  s.feed(Status::critical);
  REQUIRE(s.feed(Status::critical).kind == Verdict::act);
  s.state.chained(s.now);
  auto v = s.state.decide(s.rule, s.now);
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 1);
  CHECK(s.state.actions_in_window(s.rule, s.now) == 1);
}

TEST_CASE("reset forgets giving up") {
  Sim s{make_rule(1)};
  s.feed(Status::critical);
  REQUIRE(s.feed(Status::critical).kind == Verdict::act);
  s.state.acted(s.rule, s.now);
  s.feed(Status::critical, 11s);
  REQUIRE(s.feed(Status::critical).kind == Verdict::give_up);
  s.state.reset();
  s.feed(Status::critical);
  CHECK(s.feed(Status::critical).kind == Verdict::act);
}

TEST_CASE("evidence selectors pick array elements by a field") {
  json ev = {{"listeners",
              {{{"name", "etcd-client"}, {"state", "present"}},
               {{"name", "postgresql"}, {"state", "missing"}}}},
             {"state", "start failed"},
             {"nested", {{"a.b", 1}}}};
  CHECK(evidence_matches({"listeners[name=postgresql].state", {"missing"}}, ev));
  CHECK_FALSE(evidence_matches({"listeners[name=etcd-client].state", {"missing"}}, ev));
  CHECK_FALSE(evidence_matches({"listeners[name=nothere].state", {"missing"}}, ev));
  CHECK(evidence_matches({"state", {"crashed", "start failed"}}, ev));
  CHECK_FALSE(evidence_matches({"state.deeper", {"x"}}, ev));
  CHECK_FALSE(evidence_matches({"missing_key", {"x"}}, json::array()));
}

TEST_CASE("a trigger needs status, message and evidence to match") {
  Trigger t;
  t.check = "c";
  t.statuses = {Status::critical};
  t.message.emplace("start failed|crashed", std::regex::ECMAScript);
  t.evidence.push_back({"state", {"start failed"}});
  CHECK(trigger_matches(
      t, result(Status::critical, "PostgreSQL start failed", {{"state", "start failed"}})));
  CHECK_FALSE(trigger_matches(
      t, result(Status::warning, "PostgreSQL start failed", {{"state", "start failed"}})));
  CHECK_FALSE(trigger_matches(
      t, result(Status::critical, "PostgreSQL stopped", {{"state", "start failed"}})));
  CHECK_FALSE(trigger_matches(
      t, result(Status::critical, "PostgreSQL start failed", {{"state", "running"}})));
}

TEST_CASE("failing another way is neither the fault nor a recovery") {
  // Patroni restarting: patroni_node is critical but not with the state the rule wants.
  Rule r = make_rule(2);
  r.when.evidence.push_back({"state", {"start failed"}});
  Sim s{std::move(r)};
  auto feed = [&](Status st, json ev) {
    s.now += 2s;
    s.state.observe(s.rule, result(st, "", std::move(ev)), s.now);
    return s.state.decide(s.rule, s.now);
  };
  feed(Status::critical, {{"state", "start failed"}});
  REQUIRE(feed(Status::critical, {{"state", "start failed"}}).kind == Verdict::act);
  s.state.acted(s.rule, s.now);
  s.now += 11s;
  CHECK(feed(Status::critical, {{"error", "refused"}}).kind == Verdict::none);
  CHECK(feed(Status::critical, {{"error", "refused"}}).kind == Verdict::none);
  CHECK(feed(Status::warning, {{"state", "starting"}}).kind == Verdict::none);
  feed(Status::critical, {{"state", "start failed"}});
  auto v = feed(Status::critical, {{"state", "start failed"}});
  CHECK(v.kind == Verdict::act);
  CHECK(v.step == 1);  // escalated, not restarted from the first step
}

TEST_CASE("for: the finding must have lasted that long, in a row") {
  Rule r = make_rule();
  r.when.consecutive = 1;
  r.when.hold_for = 20s;
  Sim s{std::move(r)};
  CHECK(s.feed(Status::critical, 5s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 10s).kind == Verdict::none);
  CHECK(s.feed(Status::passing, 10s).kind == Verdict::none);  // the streak restarts
  CHECK(s.feed(Status::critical, 5s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 15s).kind == Verdict::none);
  CHECK(s.feed(Status::critical, 5s).kind == Verdict::act);
}
