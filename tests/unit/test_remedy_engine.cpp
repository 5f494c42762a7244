// The engine end to end on one loop, with fake remedies and no cluster: modes, guards
// that fail when facts cannot be learnt, no-op steps moving on, the audit records.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <future>

#include <boost/asio/io_context.hpp>

#include "src/audit.hpp"
#include "src/http_client.hpp"
#include "src/remedy_engine.hpp"
#include "src/worker.hpp"

using namespace fener;
using namespace std::chrono_literals;

namespace {

struct FakeRemedy final : Remedy {
  Risk r;
  bool changes;
  int* runs;
  FakeRemedy(Risk risk, bool c, int* counter) : r(risk), changes(c), runs(counter) {}
  Risk risk() const override { return r; }
  std::string plan(const RemedyContext&) const override { return "fake plan"; }
  asio::awaitable<RemedyOutcome> run(RemedyContext&) override {
    ++*runs;
    if (!changes) co_return RemedyOutcome::nothing_to_do("all fine already");
    co_return RemedyOutcome::success("fixed");
  }
};

struct Harness {
  asio::io_context io;
  HttpClient http{io};
  Worker worker;
  std::string audit_path;
  std::unique_ptr<AuditLog> audit;
  std::shared_ptr<Config> config = std::make_shared<Config>();
  int runs[3] = {0, 0, 0};

  explicit Harness(Mode mode) {
    char tmpl[] = "/tmp/fener-engine-XXXXXX";
    audit_path = std::string(mkdtemp(tmpl)) + "/audit.jsonl";
    audit = std::make_unique<AuditLog>(worker, audit_path);
    REQUIRE(audit->open().empty());
    config->node_name = "n1";
    config->mode = mode;
  }
  ~Harness() { std::filesystem::remove_all(std::filesystem::path(audit_path).parent_path()); }

  Rule rule(std::vector<std::pair<Risk, bool>> steps) {
    Rule r;
    r.name = "r";
    r.when.check = "c";
    r.when.statuses = {Status::critical};
    r.when.consecutive = 1;
    r.settle = 1h;  // one action per test
    for (std::size_t i = 0; i < steps.size(); ++i) {
      LadderStep s;
      s.remedy = "fake" + std::to_string(i);
      s.impl = std::make_unique<FakeRemedy>(steps[i].first, steps[i].second, &runs[i]);
      r.ladder.push_back(std::move(s));
    }
    return r;
  }

  std::vector<json> feed_and_run(std::vector<Rule> rules) {
    RemedyEngine engine(io, http, worker, *audit, config, std::move(rules));
    CheckState st;
    st.name = "c";
    st.last = CheckResult::make(Status::critical, "broken");
    engine.on_result(st);
    io.run();
    // The worker has one thread and runs jobs in order: once this marker has run, every
    // audit line queued before it is on disk.
    std::promise<void> drained;
    asio::post(worker.pool(), [&drained] { drained.set_value(); });
    drained.get_future().wait();
    std::vector<json> out;
    std::ifstream in(audit_path);
    std::string line;
    while (std::getline(in, line)) out.push_back(json::parse(line));
    return out;
  }
};

}  // namespace

TEST_CASE("safe mode runs a safe remedy and audits it") {
  Harness h(Mode::safe);
  std::vector<Rule> rules;
  rules.push_back(h.rule({{Risk::safe, true}}));
  auto recs = h.feed_and_run(std::move(rules));
  CHECK(h.runs[0] == 1);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0]["outcome"] == "success");
  CHECK(recs[0]["remedy"] == "fake0");
  CHECK(recs[0]["plan"] == "fake plan");
  CHECK(recs[0]["finding"]["message"] == "broken");
}

TEST_CASE("observe mode runs nothing and says what it would run") {
  Harness h(Mode::observe);
  std::vector<Rule> rules;
  rules.push_back(h.rule({{Risk::safe, true}}));
  auto recs = h.feed_and_run(std::move(rules));
  CHECK(h.runs[0] == 0);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0]["outcome"] == "would_run");
}

TEST_CASE("a disruptive remedy is refused when etcd quorum cannot be shown") {
  Harness h(Mode::safe);
  std::vector<Rule> rules;
  rules.push_back(h.rule({{Risk::disruptive, true}}));
  auto recs = h.feed_and_run(std::move(rules));
  CHECK(h.runs[0] == 0);
  REQUIRE(recs.size() == 1);
  CHECK(recs[0]["outcome"] == "refused");
  CHECK(recs[0]["reason"].get<std::string>().rfind("etcd_quorum:", 0) == 0);
}

TEST_CASE("a no-op step moves on at once; a destructive step needs mode full") {
  Harness h(Mode::safe);
  std::vector<Rule> rules;
  rules.push_back(h.rule({{Risk::safe, false}, {Risk::destructive, true}}));
  auto recs = h.feed_and_run(std::move(rules));
  CHECK(h.runs[0] == 1);
  CHECK(h.runs[1] == 0);
  REQUIRE(recs.size() == 3);
  CHECK(recs[0]["outcome"] == "nothing_to_do");
  CHECK(recs[1]["event"] == "skipped");
  CHECK(recs[2]["event"] == "gave_up");
  CHECK(recs[2]["reason"].get<std::string>().find("needs mode full") != std::string::npos);
}

TEST_CASE("a chain that ends in a no-op settles instead of running on to the end") {
  Harness h(Mode::safe);
  std::vector<Rule> rules;
  Rule r = h.rule({{Risk::safe, true}, {Risk::safe, false}, {Risk::safe, true}});
  r.ladder[0].chain = true;
  rules.push_back(std::move(r));
  auto recs = h.feed_and_run(std::move(rules));
  CHECK(h.runs[0] == 1);
  CHECK(h.runs[1] == 1);
  CHECK(h.runs[2] == 0);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0]["chained_to"] == "fake1");
  CHECK(recs[1]["outcome"] == "nothing_to_do");
}
