// The intent journal: what fener was doing when it stopped. Before a disruptive or
// destructive remedy runs (after its guards passed and the cluster lock was taken) the
// engine records its intent in the state directory; when the action ends, whatever the
// outcome, the record is removed. A record found at startup means fener died in the middle
// of that action (SIGKILL, OOM, power loss): it is audited as `interrupted`, and a
// destructive remedy is never repeated on its own, because fener cannot prove that it did
// not finish. The rules held that way are kept in the same directory until an operator's
// reset or the check's recovery.
//
// Every function here does blocking file I/O: call it from the worker, or before the event
// loop runs. Writes are atomic: temporary file, fsync, rename, fsync of the directory.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fener {

struct Intent {
  std::string rule;
  std::string remedy;
  std::string risk;  // "disruptive" or "destructive"
  int step = 0;      // 1-based ladder step
  std::string node;
  std::string target;  // what the action works on (the remedy's plan)
  std::string lock_key;
  std::string lock_value;  // the value fener stored in the lock key
  std::string started_at;  // UTC, RFC 3339
  long pid = 0;
  std::string boot_id;  // /proc/sys/kernel/random/boot_id when it started

  nlohmann::json to_json() const;
  // nullopt (and why) when the record lacks a field or has the wrong type.
  static std::optional<Intent> from_json(const nlohmann::json& j, std::string& error);
};

// A leftover intent record read at startup: the intent, or why the file could not be read.
struct Leftover {
  std::string file;
  std::optional<Intent> intent;
  std::string error;
};

// A rule held in the gave-up state after an interrupted destructive action.
struct HeldRule {
  std::string reason;
  nlohmann::json intent;  // the interrupted intent record
};

class IntentJournal {
 public:
  // dir "" disables the journal (tests, one-shot commands): every call succeeds and does
  // nothing.
  explicit IntentJournal(std::string dir);

  // Creates the directory (0750) when missing, checks that it is a directory fener can
  // write in. "" on success, else a message naming the directory and the problem.
  std::string open() const;

  // Records the action about to start; "" on success, else why (the action must not run).
  std::string record(const Intent& intent) const;
  // Removes the record of the action that ended; "" on success, else why.
  std::string clear() const;
  // The record left by a previous run, if any.
  std::vector<Leftover> leftovers() const;
  // Removes a leftover once it has been dealt with.
  std::string discard(const Leftover& l) const;

  // Rules held after an interrupted destructive action: written whole on every change.
  std::string save_held(const std::map<std::string, HeldRule>& held) const;
  // The held rules (empty when none), and in `error` why the file could not be read.
  std::map<std::string, HeldRule> load_held(std::string& error) const;

  const std::string& dir() const { return dir_; }
  std::string intent_path() const;
  std::string held_path() const;

 private:
  std::string dir_;
};

// Writes `content` to `path` atomically: PATH.tmp, fsync, rename, fsync of the directory.
// "" on success, else why.
std::string write_file_atomically(const std::string& path, const std::string& content, int mode);

// This boot's id (/proc/sys/kernel/random/boot_id), "" when unknown.
std::string current_boot_id();

// What the engine does with an interrupted action, decided from its risk (pure).
struct InterruptedPlan {
  bool hold = false;          // destructive: the rule gives up until reset or recovery
  bool count_attempt = true;  // disruptive: one attempt used, settle before the next
  std::string message;        // for the log, the audit and the alert
};
InterruptedPlan plan_interrupted(const Intent& intent, const std::string& boot_id_now);

}  // namespace fener
