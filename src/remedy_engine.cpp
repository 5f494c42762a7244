#include "src/remedy_engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <optional>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "src/cluster_facts.hpp"
#include "src/etcd_lock.hpp"
#include "src/guards.hpp"
#include "src/http_client.hpp"
#include "src/worker.hpp"

// GCC 12 at -O2 pairs Asio's coroutine-frame operator new/delete wrongly after inlining
// act() and warns; the frames are allocated and freed by the same class.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace fener {

using namespace asio::experimental::awaitable_operators;

namespace {

long long ms_since(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

json facts_summary(const ClusterFacts& f) {
  auto opt = [](const auto& v) { return v ? json(*v) : json(nullptr); };
  return {{"self_role", opt(f.self_role)},       {"self_state", opt(f.self_state)},
          {"leader", opt(f.leader_name)},        {"leader_state", opt(f.leader_state)},
          {"leader_host", opt(f.leader_host)},   {"paused", opt(f.paused)},
          {"etcd_quorum", opt(f.etcd_quorum)},   {"cluster_sysid", opt(f.cluster_sysid)},
          {"leader_sysid", opt(f.leader_sysid)}, {"self_sysid", opt(f.self_sysid)}};
}

bool allowed_in(Mode mode, Risk risk) {
  if (mode == Mode::full) return true;
  return risk != Risk::destructive;  // observe "allows" all: it only reports
}

// An escaping exception is a failed outcome, not the end of the daemon.
asio::awaitable<RemedyOutcome> run_guarded(Remedy& remedy, RemedyContext& ctx) {
  std::string error;
  try {
    co_return co_await remedy.run(ctx);
  } catch (const std::exception& e) {
    error = e.what();
  }
  co_return RemedyOutcome::failure("remedy failed: " + error);
}

// Runs the remedy with its deadline.
asio::awaitable<RemedyOutcome> run_bounded(Remedy& remedy, RemedyContext& ctx) {
  asio::steady_timer deadline(co_await asio::this_coro::executor, ctx.timeout);
  auto outcome = co_await (run_guarded(remedy, ctx) || deadline.async_wait(asio::use_awaitable));
  if (outcome.index() == 0) co_return std::move(std::get<0>(outcome));
  co_return RemedyOutcome::failure("no outcome within the " + format_duration(ctx.timeout) +
                                   " timeout; cancelled");
}

}  // namespace

RemedyEngine::RemedyEngine(asio::io_context& io, HttpClient& http, Worker& worker, AuditLog& audit,
                           std::shared_ptr<const Config> config, std::vector<Rule> rules)
    : io_(io),
      http_(http),
      worker_(worker),
      audit_(audit),
      config_(std::move(config)),
      rules_(std::move(rules)),
      states_(rules_.size()),
      skipped_notes_(rules_.size()) {}

void RemedyEngine::adopt_state(const RemedyEngine& old) {
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    for (std::size_t j = 0; j < old.rules_.size(); ++j)
      if (old.rules_[j].name == rules_[i].name) states_[i] = old.states_[j];
  }
  latest_ = old.latest_;
  held_ = old.held_;
  for (auto it = held_.begin(); it != held_.end();) {
    const bool known = std::any_of(rules_.begin(), rules_.end(),
                                   [&](const Rule& r) { return r.name == it->first; });
    it = known ? std::next(it) : held_.erase(it);
  }
  if (held_.size() != old.held_.size()) save_held();
}

void RemedyEngine::save_held() {
  if (!journal_ || !journal_worker_) return;
  // One worker thread keeps the writes in order; each carries the whole set.
  asio::post(journal_worker_->pool(), [j = *journal_, held = held_] {
    if (auto err = j.save_held(held); !err.empty())
      spdlog::error("cannot save the held rules: {}", err);
  });
}

void RemedyEngine::release_hold(const std::string& rule) {
  if (held_.erase(rule)) save_held();
}

void RemedyEngine::restore(const std::vector<Leftover>& leftovers,
                           std::map<std::string, HeldRule> held) {
  const auto now = Clock::now();
  auto index_of = [&](const std::string& name) -> std::optional<std::size_t> {
    for (std::size_t i = 0; i < rules_.size(); ++i)
      if (rules_[i].name == name) return i;
    return std::nullopt;
  };
  bool changed = false;
  for (auto& [name, h] : held) {
    auto i = index_of(name);
    if (!i) {
      spdlog::warn("rule {} was held after an interrupted action but is no longer configured",
                   name);
      changed = true;
      continue;
    }
    const int step = h.intent.is_object() ? h.intent.value("step", 1) : 1;
    states_[*i].interrupted(rules_[*i], now, static_cast<std::size_t>(std::max(step, 1) - 1), true);
    spdlog::error("rule {}: GAVE UP (kept from an earlier run): {}", name, h.reason);
    held_[name] = std::move(h);
  }
  const std::string boot = current_boot_id();
  std::vector<const Leftover*> handled;
  for (const auto& l : leftovers) {
    json rec = {{"event", "interrupted"}, {"node", config_->node_name}, {"file", l.file}};
    if (!l.intent) {
      rec["reason"] = "unreadable intent record: " + l.error;
      spdlog::error("{}: unreadable intent record ({}): an action may have been interrupted",
                    l.file, l.error);
      announce(std::move(rec));
      handled.push_back(&l);
      continue;
    }
    const Intent& in = *l.intent;
    const InterruptedPlan plan = plan_interrupted(in, boot);
    rec["rule"] = in.rule;
    rec["remedy"] = in.remedy;
    rec["risk"] = in.risk;
    rec["step"] = in.step;
    rec["target"] = in.target;
    rec["lock"] = {{"key", in.lock_key}};
    rec["started_at"] = in.started_at;
    rec["pid"] = in.pid;
    rec["same_boot"] = in.boot_id.empty() || in.boot_id == boot;
    rec["reason"] = plan.message;
    spdlog::error("rule {}: INTERRUPTED: {}", in.rule, plan.message);
    announce(rec);
    if (auto i = index_of(in.rule)) {
      states_[*i].interrupted(rules_[*i], now, static_cast<std::size_t>(std::max(in.step, 1) - 1),
                              plan.hold);
      if (plan.hold) {
        held_[in.rule] = HeldRule{plan.message, in.to_json()};
        changed = true;
        json gave = {{"event", "gave_up"},    {"node", config_->node_name},
                     {"rule", in.rule},       {"check", rules_[*i].when.check},
                     {"remedy", in.remedy},   {"mode", to_string(config_->mode)},
                     {"reason", plan.message}};
        announce(std::move(gave));
      }
    } else {
      spdlog::warn("rule {} is no longer configured: nothing to hold", in.rule);
    }
    handled.push_back(&l);
  }
  // The held set first: a crash in between finds the intent again, never neither.
  if (changed && journal_)
    if (auto err = journal_->save_held(held_); !err.empty())
      spdlog::error("cannot save the held rules: {}", err);
  for (const Leftover* l : handled)
    if (journal_)
      if (auto err = journal_->discard(*l); !err.empty()) spdlog::error("{}", err);
}

bool RemedyEngine::reset(const std::string& rule) {
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    if (rules_[i].name != rule) continue;
    states_[i].reset();
    skipped_notes_[i].clear();
    release_hold(rule);
    spdlog::warn("rule {}: reset by the operator", rule);
    announce({{"event", "reset"}, {"node", config_->node_name}, {"rule", rule}});
    return true;
  }
  return false;
}

json RemedyEngine::rules_json() const {
  json out = json::array();
  const auto now = Clock::now();
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    json j = states_[i].to_json(rules_[i], now);
    j["rule"] = rules_[i].name;
    j["check"] = rules_[i].when.check;
    if (auto it = held_.find(rules_[i].name); it != held_.end()) j["reason"] = it->second.reason;
    out.push_back(std::move(j));
  }
  return out;
}

void RemedyEngine::on_result(const CheckState& st) {
  latest_[st.name] = st.last;
  if (stopped_) return;
  const auto now = Clock::now();
  for (std::size_t i = 0; i < rules_.size(); ++i) {
    if (rules_[i].when.check != st.name) continue;
    // While this rule's remedy runs, its fix is landing: such results are not judged.
    if (busy_ && acting_ == i) continue;
    states_[i].observe(rules_[i], st.last, now);
    evaluate(i);
  }
}

bool RemedyEngine::condition_holds(const StepCondition& c) const {
  auto it = latest_.find(c.check);
  if (it == latest_.end()) return false;
  return std::find(c.statuses.begin(), c.statuses.end(), it->second.status) != c.statuses.end();
}

void RemedyEngine::evaluate(std::size_t index) {
  const Rule& rule = rules_[index];
  RuleState& state = states_[index];
  const auto& finding = latest_[rule.when.check];
  for (;;) {
    const auto now = Clock::now();
    Verdict v = state.decide(rule, now);
    const json base = {
        {"node", config_->node_name},
        {"rule", rule.name},
        {"check", rule.when.check},
        {"finding", {{"status", to_string(finding.status)}, {"message", finding.message}}},
        {"mode", to_string(config_->mode)}};
    if (v.kind == Verdict::none) return;
    if (v.kind == Verdict::recovered) {
      spdlog::info("rule {}: recovered ({})", rule.name, v.reason);
      json rec = base;
      rec["event"] = "recovered";
      announce(std::move(rec));
      skipped_notes_[index].clear();
      release_hold(rule.name);
      return;
    }
    if (v.kind == Verdict::give_up) {
      std::string why = v.reason;
      if (!skipped_notes_[index].empty()) why += " (" + skipped_notes_[index] + ")";
      spdlog::error(
          "rule {}: GAVE UP: {}; the fault stays: {}. Fix it by hand, then `fener rules "
          "reset {}` (or fener resumes by itself once the check recovers)",
          rule.name, why, finding.message, rule.name);
      json rec = base;
      rec["event"] = "gave_up";
      rec["reason"] = why;
      announce(std::move(rec));
      return;
    }
    const LadderStep& step = rule.ladder[v.step];
    const Risk risk = step.impl->risk();
    if (step.only_if && !condition_holds(*step.only_if)) {
      spdlog::debug("rule {}: step {} ({}) does not apply: {} is not {}", rule.name, v.step + 1,
                    step.remedy, step.only_if->check, "as required");
      state.skip_step();
      continue;
    }
    if (!allowed_in(config_->mode, risk)) {
      const std::string note = step.remedy + " is " + std::string(to_string(risk)) +
                               " and needs mode full (mode is " +
                               std::string(to_string(config_->mode)) + ")";
      spdlog::warn("rule {}: skipping {}", rule.name, note);
      json rec = base;
      rec["event"] = "skipped";
      rec["remedy"] = step.remedy;
      rec["risk"] = to_string(risk);
      rec["reason"] = note;
      announce(std::move(rec));
      skipped_notes_[index] = note;
      state.skip_step();
      continue;
    }
    // One action at a time on a node (also across a reload); the next result asks again.
    if (busy_ || (busy_elsewhere_ && busy_elsewhere_())) return;
    busy_ = true;
    acting_ = index;
    json f = base;
    f["step"] = v.step + 1;
    asio::co_spawn(io_, act_guarded(index, v.step, std::move(f)), asio::detached);
    return;
  }
}

// A bug in an action must not stop the daemon nor leave the node "busy" for ever.
asio::awaitable<void> RemedyEngine::act_guarded(std::size_t index, std::size_t step, json record) {
  std::string error;
  try {
    co_await act(index, step, std::move(record));
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!error.empty()) {
    running_.clear();
    if (journaled_ && journal_worker_) {
      journaled_ = false;
      asio::post(journal_worker_->pool(), [j = *journal_] {
        if (auto err = j.clear(); !err.empty()) spdlog::error("{}", err);
      });
    }
    spdlog::error("rule {}: action failed unexpectedly: {}", rules_[index].name, error);
    // Resolves the "started" event already announced, and leaves a trace in the audit.
    announce({{"event", "action"},
              {"node", config_->node_name},
              {"rule", rules_[index].name},
              {"remedy", rules_[index].ladder[step].remedy},
              {"outcome", "failure"},
              {"reason", "internal error: " + error}});
    states_[index].hold(rules_[index], Clock::now());
    busy_ = false;
  }
}

asio::awaitable<void> RemedyEngine::act(std::size_t index, std::size_t step_index, json record) {
  auto keep = config_;  // the action finishes under the config it started with
  const Rule& rule = rules_[index];
  const LadderStep& step = rule.ladder[step_index];
  const Risk risk = step.impl->risk();
  const auto started = Clock::now();
  record["event"] = "action";
  record["remedy"] = step.remedy;
  record["risk"] = to_string(risk);
  record["attempt"] = states_[index].attempts_on_step() + 1;
  record["attempts"] = step.attempts;

  const bool destructive = risk == Risk::destructive;
  ClusterFacts facts =
      co_await gather_facts(http_, *keep, Duration(std::chrono::seconds(6)), destructive);
  record["facts"] = facts_summary(facts);
  const auto verdicts = evaluate_guards(facts, risk, !keep->patroni_url.empty(), rule.guards);
  record["guards"] = to_json(verdicts);
  RemedyContext ctx{http_, worker_, *keep, facts, step.timeout};
  const std::string plan = step.impl->plan(ctx);
  record["plan"] = plan;

  auto done = [&](const std::string& outcome, bool counts) {
    record["outcome"] = outcome;
    record["duration_ms"] = ms_since(started);
    announce(record);
    if (counts)
      states_[index].acted(rule, Clock::now());
    else
      states_[index].hold(rule, Clock::now());
    busy_ = false;
  };

  if (!all_pass(verdicts)) {
    const std::string why = first_failure(verdicts);
    spdlog::warn("rule {}: NOT running {}: guard {}", rule.name, step.remedy, why);
    record["reason"] = why;
    done("refused", false);
    co_return;
  }
  if (keep->mode == Mode::observe) {
    spdlog::warn(
        "rule {}: WOULD RUN {} ({} remedy, attempt {}/{}): {} [mode observe: nothing "
        "changed]",
        rule.name, step.remedy, to_string(risk), record["attempt"].get<int>(), step.attempts, plan);
    done("would_run", true);
    co_return;
  }

  std::unique_ptr<EtcdLock> lock;
  std::string lock_value;
  if (risk != Risk::safe) {
    lock = std::make_unique<EtcdLock>(
        http_, keep->etcd_endpoints,
        "/fener/" + (keep->scope.empty() ? "cluster" : keep->scope) + "/lock", keep->lock_ttl,
        keep->etcd_tls);
    json holder = {{"node", keep->node_name},
                   {"rule", rule.name},
                   {"remedy", step.remedy},
                   {"since", utc_timestamp()}};
    lock_value = holder.dump();
    auto attempt = co_await lock->acquire(lock_value);
    record["lock"] = {{"key", lock->key()}, {"acquired", attempt.acquired}};
    if (!attempt.acquired) {
      const std::string why =
          attempt.error.empty() ? "lock held by " + attempt.holder : attempt.error;
      spdlog::warn("rule {}: NOT running {} now: {}", rule.name, step.remedy, why);
      record["reason"] = why;
      done(attempt.error.empty() ? "lock_held" : "lock_error", false);
      co_return;
    }
  }

  // What is about to run, on disk before it starts: a killed fener finds it at startup.
  if (journal_ && journal_worker_ && risk != Risk::safe) {
    Intent intent;
    intent.rule = rule.name;
    intent.remedy = step.remedy;
    intent.risk = to_string(risk);
    intent.step = static_cast<int>(step_index) + 1;
    intent.node = keep->node_name;
    intent.target = plan;
    intent.lock_key = lock ? lock->key() : "";
    intent.lock_value = lock_value;
    intent.started_at = utc_timestamp();
    intent.pid = static_cast<long>(::getpid());
    intent.boot_id = current_boot_id();
    auto job = [j = *journal_, intent] { return j.record(intent); };
    std::string err = co_await offload(*journal_worker_, std::move(job));
    if (!err.empty()) {
      spdlog::error("rule {}: NOT running {}: cannot record the intent: {}", rule.name, step.remedy,
                    err);
      record["reason"] = "cannot record the intent: " + err;
      if (lock) co_await lock->release();
      done("refused", false);
      co_return;
    }
    journaled_ = true;
  }

  spdlog::warn("rule {}: RUNNING {} ({} remedy, attempt {}/{}): {}", rule.name, step.remedy,
               to_string(risk), record["attempt"].get<int>(), step.attempts, plan);
  {
    json started_rec = record;
    started_rec["outcome"] = "started";
    emit(started_rec);
  }
  // The agent-check answers maint (or drain) while PostgreSQL here is being restarted.
  if (step.impl->interrupts_postgres()) running_ = step.remedy + " (rule " + rule.name + ")";
  RemedyOutcome outcome;
  if (lock) {
    auto both = co_await (run_bounded(*step.impl, ctx) || lock->keep_alive());
    if (both.index() == 0) outcome = std::move(std::get<0>(both));
  } else {
    outcome = co_await run_bounded(*step.impl, ctx);
  }
  // The action ended, whatever its outcome: its intent record goes.
  if (journaled_) {
    journaled_ = false;
    auto job = [j = *journal_] { return j.clear(); };
    std::string err = co_await offload(*journal_worker_, std::move(job));
    if (!err.empty()) spdlog::error("rule {}: {}", rule.name, err);
  }
  if (lock) co_await lock->release();
  running_.clear();
  record["message"] = outcome.message;
  record["details"] = outcome.details;
  if (outcome.ok && !outcome.changed) {
    spdlog::info("rule {}: {}: nothing to do: {}", rule.name, step.remedy, outcome.message);
    record["outcome"] = "nothing_to_do";
    record["duration_ms"] = ms_since(started);
    announce(record);
    busy_ = false;
    if (states_[index].in_chain()) {
      // The step before changed something: let it settle rather than judge old results.
      states_[index].hold(rule, Clock::now());
      co_return;
    }
    states_[index].skip_step();
    if (!stopped_) evaluate(index);
    co_return;
  }
  if (outcome.ok)
    spdlog::warn("rule {}: {} succeeded in {} ms: {}", rule.name, step.remedy, ms_since(started),
                 outcome.message);
  else
    spdlog::error("rule {}: {} FAILED after {} ms: {}", rule.name, step.remedy, ms_since(started),
                  outcome.message);
  if (outcome.ok && step.chain && step_index + 1 < rule.ladder.size()) {
    record["outcome"] = "success";
    record["chained_to"] = rule.ladder[step_index + 1].remedy;
    record["duration_ms"] = ms_since(started);
    announce(record);
    states_[index].chained(Clock::now());
    busy_ = false;
    if (!stopped_) evaluate(index);
    co_return;
  }
  done(outcome.ok ? "success" : "failure", true);
}

void RemedyEngine::announce(json record) {
  emit(record);
  audit_.write(std::move(record));
}

void RemedyEngine::emit(const json& rec) {
  if (!on_event_) return;
  Event e;
  e.kind = Event::Kind::remedy;
  e.node = config_->node_name;
  e.scope = config_->scope;
  e.subject = rec.value("rule", "");
  e.at = std::chrono::system_clock::now();
  const std::string kind = rec.value("event", "");
  std::string state = kind == "action" ? rec.value("outcome", "") : kind;
  if (state == "success") state = "succeeded";
  if (state == "failure") state = "failed";
  if (state == "lock_held" || state == "lock_error") state = "refused";
  e.state = state;
  if (state == "succeeded" || state == "nothing_to_do" || state == "recovered" || state == "reset")
    e.severity = Status::passing;
  else if (state == "failed" || state == "gave_up" || state == "interrupted")
    e.severity = Status::critical;
  else
    e.severity = Status::warning;
  const std::string remedy = rec.value("remedy", "");
  std::string text = rec.value("reason", "");
  if (text.empty()) text = rec.value("message", "");
  e.summary = "rule " + e.subject + ": " + (remedy.empty() ? "" : remedy + " ") + state +
              (text.empty() ? "" : ": " + text);
  for (const char* k : {"remedy", "risk", "mode", "attempt", "plan", "outcome", "reason", "message",
                        "duration_ms", "check", "finding", "chained_to"})
    if (rec.contains(k)) e.details[k] = rec[k];
  on_event_(e);
}

}  // namespace fener
