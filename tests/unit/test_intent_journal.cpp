// The intent journal (records of actions in flight, held rules) on temporary directories,
// what a rule does with an interrupted action (fake clock), and the engine's startup pass
// over what a killed run left behind.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>

#include <boost/asio/io_context.hpp>

#include "src/audit.hpp"
#include "src/http_client.hpp"
#include "src/intent_journal.hpp"
#include "src/remedy_engine.hpp"
#include "src/worker.hpp"

using namespace fener;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/fener-journal-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

Intent sample(const std::string& risk = "destructive") {
  Intent i;
  i.rule = "postgres_down";
  i.remedy = risk == "destructive" ? "patroni_reinit" : "service_restart";
  i.risk = risk;
  i.step = 4;
  i.node = "kaptan2";
  i.target = "POST http://10.0.0.3:8008/reinitialize";
  i.lock_key = "/fener/liman/lock";
  i.lock_value = R"({"node":"kaptan2"})";
  i.started_at = "2026-11-28T10:00:00.000Z";
  i.pid = 4242;
  i.boot_id = "boot-a";
  return i;
}

struct NoopRemedy final : Remedy {
  Risk r;
  explicit NoopRemedy(Risk risk) : r(risk) {}
  Risk risk() const override { return r; }
  std::string plan(const RemedyContext&) const override { return "plan"; }
  asio::awaitable<RemedyOutcome> run(RemedyContext&) override {
    co_return RemedyOutcome::success("ran");
  }
};

Rule make_rule(const std::string& name, std::vector<Risk> steps) {
  Rule r;
  r.name = name;
  r.when.check = "c";
  r.when.statuses = {Status::critical};
  r.when.consecutive = 1;
  r.settle = 10s;
  r.recover_after = 2;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    LadderStep s;
    s.remedy = "step" + std::to_string(i);
    s.impl = std::make_unique<NoopRemedy>(steps[i]);
    r.ladder.push_back(std::move(s));
  }
  return r;
}

std::vector<json> read_audit(Worker& worker, const std::string& path) {
  std::promise<void> drained;
  asio::post(worker.pool(), [&drained] { drained.set_value(); });
  drained.get_future().wait();
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("an intent record round-trips, is written atomically and removed") {
  TempDir d;
  IntentJournal j(d.path + "/state");
  REQUIRE(j.open().empty());
  CHECK(fs::is_directory(d.path + "/state"));
  CHECK(j.leftovers().empty());
  REQUIRE(j.record(sample()).empty());
  CHECK(fs::exists(j.intent_path()));
  CHECK_FALSE(fs::exists(j.intent_path() + ".tmp"));
  struct stat st {};
  REQUIRE(::stat(j.intent_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0640);
  auto left = j.leftovers();
  REQUIRE(left.size() == 1);
  REQUIRE(left[0].intent);
  CHECK(left[0].intent->rule == "postgres_down");
  CHECK(left[0].intent->remedy == "patroni_reinit");
  CHECK(left[0].intent->step == 4);
  CHECK(left[0].intent->pid == 4242);
  CHECK(left[0].intent->lock_key == "/fener/liman/lock");
  CHECK(left[0].intent->lock_value == R"({"node":"kaptan2"})");
  CHECK(left[0].intent->boot_id == "boot-a");
  REQUIRE(j.clear().empty());
  CHECK(j.leftovers().empty());
  CHECK(j.clear().empty());  // nothing to remove is not an error
}

TEST_CASE("a state directory that is a file, or an unreadable record, gives a clear error") {
  TempDir d;
  const std::string file = d.path + "/not-a-dir";
  std::ofstream(file) << "x";
  IntentJournal j(file);
  const std::string err = j.open();
  CHECK(err.find("not a directory") != std::string::npos);
  CHECK(err.find(file) != std::string::npos);
  CHECK(err.find("state_dir") != std::string::npos);

  IntentJournal ok(d.path);
  REQUIRE(ok.open().empty());
  std::ofstream(ok.intent_path()) << "{ half a rec";
  auto left = ok.leftovers();
  REQUIRE(left.size() == 1);
  CHECK_FALSE(left[0].intent);
  CHECK(left[0].error == "not valid JSON");
  std::ofstream(ok.intent_path()) << R"({"rule":"r","remedy":"x","risk":"safe"})";
  left = ok.leftovers();
  REQUIRE(left.size() == 1);
  CHECK_FALSE(left[0].intent);
  CHECK(left[0].error.find("unknown risk") != std::string::npos);
  CHECK(ok.discard(left[0]).empty());
  CHECK(ok.leftovers().empty());
}

TEST_CASE("an empty state_dir disables the journal") {
  IntentJournal j("");
  CHECK(j.open().empty());
  CHECK(j.record(sample()).empty());
  CHECK(j.leftovers().empty());
}

TEST_CASE("held rules are saved whole and removed when none is left") {
  TempDir d;
  IntentJournal j(d.path);
  std::map<std::string, HeldRule> held;
  held["postgres_down"] = HeldRule{"interrupted reinit", sample().to_json()};
  REQUIRE(j.save_held(held).empty());
  std::string err;
  auto back = j.load_held(err);
  CHECK(err.empty());
  REQUIRE(back.count("postgres_down") == 1);
  CHECK(back["postgres_down"].reason == "interrupted reinit");
  CHECK(back["postgres_down"].intent["step"] == 4);
  REQUIRE(j.save_held({}).empty());
  CHECK_FALSE(fs::exists(j.held_path()));
  CHECK(j.load_held(err).empty());
  CHECK(err.empty());
}

TEST_CASE("an interrupted destructive action holds; a disruptive one counts an attempt") {
  const auto destructive = plan_interrupted(sample(), "boot-a");
  CHECK(destructive.hold);
  CHECK_FALSE(destructive.count_attempt);
  CHECK(destructive.message.find("fener rules reset postgres_down") != std::string::npos);
  CHECK(destructive.message.find("pid 4242") != std::string::npos);
  CHECK(destructive.message.find("rebooted") == std::string::npos);
  CHECK(plan_interrupted(sample(), "boot-b").message.find("rebooted") != std::string::npos);
  const auto disruptive = plan_interrupted(sample("disruptive"), "boot-a");
  CHECK_FALSE(disruptive.hold);
  CHECK(disruptive.count_attempt);
}

TEST_CASE("a rule held after an interruption stays given up until recovery or reset") {
  Rule rule = make_rule("r", {Risk::disruptive, Risk::destructive});
  RuleState st;
  TimePoint now = TimePoint{} + 1000h;
  st.interrupted(rule, now, 1, true);
  CHECK(st.phase(now) == Phase::gave_up);
  st.observe(rule, CheckResult::make(Status::critical, "still broken"), now + 1s);
  CHECK(st.decide(rule, now + 1s).kind == Verdict::none);
  // Two passing results: the fault is gone, and so is the hold.
  st.observe(rule, CheckResult::make(Status::passing, "ok"), now + 2s);
  st.observe(rule, CheckResult::make(Status::passing, "ok"), now + 3s);
  CHECK(st.decide(rule, now + 3s).kind == Verdict::recovered);
  CHECK(st.phase(now + 3s) == Phase::idle);
}

TEST_CASE("an interrupted disruptive action counts for its step and the rate limit") {
  Rule rule = make_rule("r", {Risk::disruptive, Risk::disruptive});
  rule.max_actions = 2;
  RuleState st;
  TimePoint now = TimePoint{} + 1000h;
  st.interrupted(rule, now, 0, false);
  CHECK(st.phase(now) == Phase::settling);
  CHECK(st.actions_in_window(rule, now) == 1);
  st.observe(rule, CheckResult::make(Status::critical, "x"), now + 11s);
  const Verdict v = st.decide(rule, now + 11s);
  REQUIRE(v.kind == Verdict::act);
  CHECK(v.step == 1);  // step 0's one attempt was used by the interrupted run
}

TEST_CASE("at startup the engine audits leftovers, holds the rule and persists it") {
  TempDir d;
  asio::io_context io;
  HttpClient http{io};
  Worker worker;
  AuditLog audit(worker, d.path + "/audit.jsonl");
  REQUIRE(audit.open().empty());
  auto config = std::make_shared<Config>();
  config->node_name = "kaptan2";
  config->mode = Mode::full;
  IntentJournal journal(d.path + "/state");
  REQUIRE(journal.open().empty());
  REQUIRE(journal.record(sample()).empty());

  std::vector<Rule> rules;
  rules.push_back(make_rule(
      "postgres_down", {Risk::disruptive, Risk::disruptive, Risk::disruptive, Risk::destructive}));
  rules.push_back(make_rule("other", {Risk::disruptive}));
  std::vector<Event> events;
  {
    RemedyEngine engine(io, http, worker, audit, config, std::move(rules));
    engine.journal(&journal, &worker);
    engine.on_event([&](const Event& e) { events.push_back(e); });
    std::string err;
    engine.restore(journal.leftovers(), journal.load_held(err));
    auto shown = engine.rules_json();
    CHECK(shown[0]["phase"] == "gave_up");
    CHECK(shown[0]["step"] == "step3");
    CHECK(shown[0]["reason"].get<std::string>().find("fener rules reset") != std::string::npos);
    CHECK(shown[1]["phase"] == "idle");
  }
  CHECK(journal.leftovers().empty());  // dealt with
  auto recs = read_audit(worker, d.path + "/audit.jsonl");
  REQUIRE(recs.size() == 2);
  CHECK(recs[0]["event"] == "interrupted");
  CHECK(recs[0]["remedy"] == "patroni_reinit");
  CHECK(recs[0]["pid"] == 4242);
  CHECK(recs[0]["lock"]["key"] == "/fener/liman/lock");
  CHECK(recs[1]["event"] == "gave_up");
  REQUIRE(events.size() == 2);
  CHECK(events[0].state == "interrupted");
  CHECK(events[0].severity == Status::critical);

  // The next start (no intent left) still holds the rule, from held.json; a reset ends it.
  std::string err;
  auto held = journal.load_held(err);
  REQUIRE(held.count("postgres_down") == 1);
  std::vector<Rule> again;
  again.push_back(make_rule(
      "postgres_down", {Risk::disruptive, Risk::disruptive, Risk::disruptive, Risk::destructive}));
  RemedyEngine engine(io, http, worker, audit, config, std::move(again));
  engine.journal(&journal, &worker);
  engine.restore(journal.leftovers(), std::move(held));
  CHECK(engine.rules_json()[0]["phase"] == "gave_up");
  CHECK(engine.reset("postgres_down"));
  read_audit(worker, d.path + "/audit.jsonl");  // the worker has saved the held set
  CHECK_FALSE(fs::exists(journal.held_path()));
  CHECK(engine.rules_json()[0]["phase"] == "idle");
}
