// The remedy engine: feeds every check result to the rules, and when a rule decides to
// act, learns the cluster's state afresh, applies the guards and the mode, takes the
// cluster lock for anything disruptive, runs the remedy with a deadline, and writes the
// decision to the audit log. One action at a time per node.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "src/audit.hpp"
#include "src/config.hpp"
#include "src/events.hpp"
#include "src/intent_journal.hpp"
#include "src/rules.hpp"
#include "src/scheduler.hpp"

namespace fener {

class HttpClient;
class Worker;

class RemedyEngine {
 public:
  RemedyEngine(asio::io_context& io, HttpClient& http, Worker& worker, AuditLog& audit,
               std::shared_ptr<const Config> config, std::vector<Rule> rules);

  // Every result of every check (Scheduler::on_result).
  void on_result(const CheckState& st);
  // Carries attempts, rate limits and giving up over from the engine this one replaces
  // (a reload), for rules of the same name.
  void adopt_state(const RemedyEngine& old);
  // No new decisions; an action in progress finishes (under the config it started with).
  void stop() { stopped_ = true; }
  // An operator's reset of a rule; false when no rule has that name.
  bool reset(const std::string& rule);

  // The journal of actions in flight (null: none), written on `io_worker` (short file I/O,
  // never behind a long remedy).
  void journal(IntentJournal* j, Worker* io_worker) {
    journal_ = j;
    journal_worker_ = io_worker;
  }
  // At startup, before the event loop runs (blocking file I/O): rules held by an earlier
  // interrupted destructive action, and the intent records a killed run left behind
  // (audited `interrupted`; see docs/remedies.md).
  void restore(const std::vector<Leftover>& leftovers, std::map<std::string, HeldRule> held);
  const std::map<std::string, HeldRule>& held() const { return held_; }

  // Another engine (the one a reload replaced) may still be acting: wait for it.
  void busy_elsewhere(std::function<bool()> f) { busy_elsewhere_ = std::move(f); }
  // Every decision, as it is audited (plus "started" when a remedy begins to run).
  void on_event(EventSink sink) { on_event_ = std::move(sink); }

  bool busy() const { return busy_; }
  // The remedy running on this node now, "patroni_restart (rule postgres_down)", or "".
  // Only while it runs: not while facts are gathered or the lock is asked for.
  const std::string& running() const { return running_; }
  std::size_t active() const { return busy_ ? 1 : 0; }
  nlohmann::json rules_json() const;
  const std::vector<Rule>& rules() const { return rules_; }

 private:
  void evaluate(std::size_t index);
  asio::awaitable<void> act(std::size_t index, std::size_t step, nlohmann::json finding);
  asio::awaitable<void> act_guarded(std::size_t index, std::size_t step, nlohmann::json record);
  bool condition_holds(const StepCondition& c) const;
  void finish_action(std::size_t index);
  void announce(nlohmann::json record);  // audit + event
  void emit(const nlohmann::json& record);
  void save_held();  // on the journal worker, the whole set
  void release_hold(const std::string& rule);

  asio::io_context& io_;
  HttpClient& http_;
  Worker& worker_;
  AuditLog& audit_;
  std::shared_ptr<const Config> config_;
  std::vector<Rule> rules_;
  std::vector<RuleState> states_;
  std::map<std::string, CheckResult> latest_;
  std::vector<std::string> skipped_notes_;  // per rule: why steps were skipped, for give_up
  bool busy_ = false;
  std::size_t acting_ = 0;  // the rule whose action runs, while busy_
  bool stopped_ = false;
  std::string running_;
  EventSink on_event_;
  std::function<bool()> busy_elsewhere_;
  IntentJournal* journal_ = nullptr;
  Worker* journal_worker_ = nullptr;
  bool journaled_ = false;                // an intent record exists for the action running now
  std::map<std::string, HeldRule> held_;  // rules held after an interrupted destructive action
};

}  // namespace fener
