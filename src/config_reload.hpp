// What a reload (SIGHUP) can change in a running daemon. The checks, the rules, the
// alerts, the mode, the agent's settings and the log level are taken up at once. The
// listen addresses, the state directory, the audit file, the fleet publisher and the etcd
// leader watch are set up once at start: a reload that changes what they read leaves them
// as they are, and says so, until the next start (Patroni's "pending restart").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checks/registry.hpp"
#include "src/config.hpp"
#include "src/rules.hpp"

namespace fener {

struct PendingRestart {
  // Read only at start: set back to the running value, so the configuration in force
  // reads true and the checks and rules agree with the API and the agent.
  std::vector<std::string> held;
  // Taken up by the checks at once, but kept by the etcd leader watch and the fleet
  // publisher until the next start.
  std::vector<std::string> partly;
  std::vector<std::string> all() const;
  bool empty() const { return held.empty() && partly.empty(); }
};

// The settings whose new value in `next` waits for a restart, in fener.yaml's words
// ("api.listen"), in a fixed order; the held ones are set back to `running`'s values in
// `next`. `etcd_watchers`: the leader watch or the fleet publisher runs. The etcd settings
// and the scope are listed when one of them runs or would run on `next` at a start;
// otherwise they are the checks' alone and nothing waits.
PendingRestart hold_start_only_settings(Config& next, const Config& running, bool etcd_watchers);

// What a good reload puts in force.
struct Reloaded {
  std::shared_ptr<const Config> config;  // the file, held settings at their running values
  std::vector<BuiltCheck> checks;
  std::vector<Rule> rules;
  PendingRestart pending;
};

// Builds the checks and rules of `written` (the file as loaded) with the start-only
// settings held. Throws ConfigError when the file would not stand on its own at the next
// start, or when it leans on a held setting (a check naming a peer_files root the reload
// adds), saying which ones wait for a restart. Blocking-free but not cheap: a worker's job.
Reloaded prepare_reload(const Config& written, const Config& running, bool etcd_watchers);

}  // namespace fener
