#include "src/cli.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "checks/registry.hpp"
#include "remedies/registry.hpp"
#include "src/agent_policy.hpp"
#include "src/agent_server.hpp"
#include "src/alerts.hpp"
#include "src/api_server.hpp"
#include "src/audit.hpp"
#include "src/config.hpp"
#include "src/config_reload.hpp"
#include "src/events.hpp"
#include "src/fleet.hpp"
#include "src/http_client.hpp"
#include "src/intent_journal.hpp"
#include "src/join.hpp"
#include "src/journal_sink.hpp"
#include "src/leader_watch.hpp"
#include "src/output.hpp"
#include "src/peer_files.hpp"
#include "src/remedy_engine.hpp"
#include "src/rules.hpp"
#include "src/scheduler.hpp"
#include "src/status.hpp"
#include "src/systemd_notify.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

constexpr int kExitUsage = 64;  // EX_USAGE

const char* const kMainHelp =
    R"(fener - health checks and self-healing for etcd + Patroni + HAProxy clusters

Usage:
  fener check [options]     run every check once and print the results
  fener run [options]       run the checks continuously and apply the remedies (the daemon)
  fener rules [reset NAME]  show the running daemon's rules, or reset one that gave up
  fener status [--cluster]  the running daemon's checks, or every node's summary from etcd
  fener help [COMMAND]      show help for a command
  fener --version           print the version

Options for every command:
  -c, --config FILE          fener configuration (default /etc/fener/fener.yaml if it exists)
  -p, --patroni-config FILE  discover the node from Patroni's configuration
                             (default /etc/patroni.yml if it exists)

With neither file fener still reads the etcd environment files
(/etc/etcd/etcd.conf, /etc/default/etcd) when present.

Exit codes: 0 passing, 1 warning, 2 critical, 3 unknown (the Nagios convention);
64 usage error, 78 configuration error.
)";

const char* const kCheckHelp = R"(Usage: fener check [options]

Runs every configured check once, all at the same time, and prints one line per
check. Finishes within the largest check timeout even when a peer never answers.

Options:
  -c, --config FILE          fener configuration file
  -p, --patroni-config FILE  Patroni configuration to discover the node from
      --json                 print {"node", "status", "checks": [...]} instead of a table
      --only NAME[,NAME]     run only these checks (repeatable)
      --no-color             never colour the status column (also: NO_COLOR=1)
  -h, --help                 show this help

Statuses: passing, warning, critical, unknown ("could not check").
Exit code: the worst status: 0 passing, 1 warning, 2 critical, 3 unknown
(critical outranks unknown, unknown outranks warning).

Check types:
)";

const char* const kRunHelp = R"(Usage: fener run [options]

Runs the checks on their intervals and logs every change of a check's status.
A check's status changes only after `fall` failing (or `rise` passing) results in
a row; while not passing it is polled at its unhealthy_interval.

Every result also goes to the rules (built in: conf/rules.yaml; see `rules:` in
fener.yaml). When a rule fires, fener learns the cluster's state afresh, applies
the guards, takes the cluster lock in etcd for anything disruptive, runs the
remedy, and writes the decision to the audit log (audit.file). "Could not check"
(unknown) never triggers a remedy. A disruptive or destructive action is recorded
in state_dir (default /var/lib/fener) while it runs: if fener is killed meanwhile,
the next start audits it as interrupted and never repeats an interrupted reinit
by itself (the rule stays given up until `fener rules reset` or recovery).

It also tells the world (see docs/):
  HTTP API    api.listen (default NODE:8009): GET /status, /metrics (Prometheus),
              /healthz; token-protected peer endpoints
  agent-check agent.listen (default NODE:8010 where Patroni runs): HAProxy's agent
              protocol, "up ready" on the running leader, down/drain/maint otherwise
  alerts      alerts.webhooks: fener JSON (HMAC-signed), Slack or Alertmanager
  fleet       this node's summary in etcd for `fener status --cluster`
  systemd     READY/STATUS/WATCHDOG when NOTIFY_SOCKET is set; journal fields
              (CHECK=, STATUS=, RULE=, ...) when stderr is the journal

Modes:
  observe   check and announce; change nothing (each would-be action is logged
            as WOULD RUN with exactly what it would do)
  safe      the default: safe and disruptive remedies (fix permissions, copy a
            file from the leader, restart PostgreSQL, Patroni or etcd)
  full      also destructive ones (reinit a replica; never the leader)

Options:
  -c, --config FILE          fener configuration file
  -p, --patroni-config FILE  Patroni configuration to discover the node from
      --mode MODE            observe, safe or full (overrides mode: in the file)
      --log-level LEVEL      trace, debug, info, warn or error (overrides log.level)
  -h, --help                 show this help

Signals: SIGTERM and SIGINT stop cleanly; SIGHUP reloads the configuration and
keeps the running one when the new one is invalid (the error is logged, and shown
in /status "config" and the systemd STATUS line until a reload succeeds). Checks,
rules, alerts, mode, the agent's settings and the log level change at once; the
node name, the listen addresses, api.token, api.max_file_size, peer_files, fleet,
leader watch, state_dir and audit.file wait for a restart, and a reload that changes
them says so (log, /status config.pending_restart).
)";

struct Args {
  std::string command;
  LoadOptions load;
  bool json = false;
  bool no_color = false;
  bool cluster = false;
  bool help = false;
  std::vector<std::string> only;
  std::optional<std::string> log_level;
  std::vector<std::string> rest;  // words after a command that takes some (rules)
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

Args parse_args(int argc, char** argv) {
  Args a;
  std::vector<std::string> words(argv + 1, argv + argc);
  std::size_t i = 0;
  auto value = [&](const std::string& opt) -> std::string {
    if (i + 1 >= words.size()) throw UsageError(opt + " needs a value");
    return words[++i];
  };
  for (; i < words.size(); ++i) {
    std::string w = words[i];
    std::optional<std::string> inline_value;
    if (w.rfind("--", 0) == 0 && w.find('=') != std::string::npos) {
      inline_value = w.substr(w.find('=') + 1);
      w = w.substr(0, w.find('='));
    }
    auto take = [&](const std::string& opt) { return inline_value ? *inline_value : value(opt); };
    if (w == "-h" || w == "--help") {
      a.help = true;
    } else if (w == "--version" || w == "-V") {
      a.command = "version";
    } else if (w == "-c" || w == "--config") {
      a.load.config_file = take(w);
    } else if (w == "-p" || w == "--patroni-config") {
      a.load.patroni_config = take(w);
    } else if (w == "--json") {
      a.json = true;
    } else if (w == "--no-color") {
      a.no_color = true;
    } else if (w == "--cluster") {
      a.cluster = true;
    } else if (w == "--only") {
      for (auto& n : split_commas(take(w))) a.only.push_back(n);
    } else if (w == "--log-level") {
      a.log_level = take(w);
    } else if (w == "--mode") {
      const std::string m = take(w);
      a.load.mode = mode_from_string(m);
      if (!a.load.mode)
        throw UsageError("--mode: expected observe, safe or full, got \"" + m + "\"");
    } else if (!w.empty() && w[0] == '-') {
      throw UsageError("unknown option " + w);
    } else if (a.command.empty()) {
      a.command = w;
    } else if (a.command == "help") {
      a.command = "help " + w;
    } else if (a.command == "rules") {
      a.rest.push_back(w);
    } else {
      throw UsageError("unexpected argument " + w);
    }
  }
  return a;
}

const char* const kRulesHelp = R"(Usage: fener rules [--json] [options]
       fener rules reset NAME [options]

Shows the rules of the daemon running on this node (through its API, api.listen):
each rule's phase (idle, settling, gave_up), its current ladder step, attempts
used on it, and actions within the rate-limit window. A rule held after fener was
killed in the middle of a destructive action shows as gave_up, with the reason.

`reset NAME` makes a rule that gave up act again, with its ladder and rate limit
cleared (needs the API token, api.token_file). Do it after fixing by hand what fener
could not fix; a rule also resumes by itself once its check recovers.

Options:
  -c, --config FILE          fener configuration file (for api.listen and the token)
  -p, --patroni-config FILE  Patroni configuration to discover the node from
      --json                 print the daemon's answer as JSON
)";

const char* const kStatusHelp = R"(Usage: fener status [--json] [options]
       fener status --cluster [--json] [options]

Without --cluster: asks the daemon running on this node (its API, api.listen) for
its state: node, scope, mode, version, uptime and overall status, then one line per
check: CHECK, STATUS (published, after rise/fall; "pending" before the first
result), SINCE (how long it has had that status) and MESSAGE.

With --cluster: reads every node's summary from etcd (the fleet view, written by
each daemon to /fener/SCOPE/nodes/NODE every fleet.interval) from the first etcd
endpoint that answers, not through any daemon: NODE, STATUS, AGE (since the node
last published) and its failing checks. STALE: the node has not published for 3 of
its intervals (its fener is stopped or cut off); MISSING: an etcd or Patroni member
with no summary at all; INVALID: a key fener cannot read.

Options:
  -c, --config FILE          fener configuration file (api.listen; etcd.endpoints and
                             cluster.scope for --cluster)
  -p, --patroni-config FILE  Patroni configuration to discover the node from
      --cluster              every node, from etcd
      --json                 print the JSON document instead of a table

Exit code: the worst status, as `fener check` (0 passing, 1 warning, 2 critical,
3 unknown); with --cluster a STALE, MISSING or INVALID node counts as unknown.
3 also when the daemon (or, with --cluster, etcd) cannot be reached.
)";

std::string remedy_types_help() {
  std::string out = "\nRemedy types:\n";
  for (const auto& t : remedy_types()) {
    std::string name = t.name;
    name.resize(std::max<std::size_t>(name.size(), 19), ' ');
    out += "  " + name + t.summary + "\n";
  }
  return out;
}

std::string check_types_help() {
  std::string out;
  for (const auto& t : check_types()) {
    std::string name = t.name;
    name.resize(std::max<std::size_t>(name.size(), 19), ' ');
    out += "  " + name + t.summary + "\n";
  }
  return out;
}

std::vector<BuiltCheck> select_checks(std::vector<BuiltCheck> all,
                                      const std::vector<std::string>& only) {
  if (only.empty()) return all;
  std::vector<BuiltCheck> out;
  for (const auto& name : only) {
    auto it = std::find_if(all.begin(), all.end(), [&](auto& b) { return b.spec.name == name; });
    if (it == all.end()) {
      std::string known;
      for (const auto& b : all) known += (known.empty() ? "" : ", ") + b.spec.name;
      throw UsageError("--only: no check named \"" + name +
                       "\" on this node (configured: " + known + ")");
    }
    out.push_back(std::move(*it));
    all.erase(it);
  }
  return out;
}

int cmd_check(const Args& args) {
  Config cfg = load_config(args.load);
  auto checks = select_checks(build_checks(cfg), args.only);
  build_rules(cfg);  // validates the rules too: a config error shows before the daemon runs
  asio::io_context io;
  HttpClient http(io);
  Worker worker;
  std::vector<CheckResult> results;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { results = co_await run_all_once(checks, http, worker); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  std::vector<NamedResult> named;
  for (std::size_t i = 0; i < checks.size(); ++i)
    named.push_back({checks[i].spec.name, checks[i].spec.type, results[i]});
  if (args.json) {
    // Peers' bytes end up in evidence; never let invalid UTF-8 abort the report.
    std::cout
        << results_json(cfg.node_name, named).dump(2, ' ', false, json::error_handler_t::replace)
        << "\n";
  } else {
    const bool color = !args.no_color && isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR");
    std::cout << results_table(cfg.node_name, named, color);
  }
  return nagios_exit_code(worst_status(named));
}

// Sockets are fener's main use of descriptors (the agent-check and API listeners, peers,
// webhooks): the soft limit (often 1024) goes up to the hard one, which the service
// file sets (LimitNOFILE=).
void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur >= lim.rlim_max) {
    spdlog::info("file descriptor limit: {}", lim.rlim_cur);
    return;
  }
  const auto before = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
    spdlog::info("file descriptor limit raised from {} to {}", before, lim.rlim_cur);
  } else {
    spdlog::warn("file descriptor limit stays at {}: cannot raise it to {}", before, lim.rlim_max);
  }
}

class Daemon {
 public:
  Daemon(const Args& args, Config cfg)
      : args_(args),
        cfg_(std::make_shared<const Config>(std::move(cfg))),
        started_(cfg_),
        http_(io_) {}

  int run() {
    raise_fd_limit();
    // The state directory first (the audit log lives there by default); what a killed run
    // left in it is read below. Before the loop: blocking.
    journal_ = std::make_unique<IntentJournal>(cfg_->state_dir);
    if (auto err = journal_->open(); !err.empty()) {
      spdlog::error("{}", err);
      return kExitConfig;
    }
    audit_ = std::make_unique<AuditLog>(worker_, cfg_->audit_file);
    if (auto err = audit_->open(); !err.empty()) {
      spdlog::error("{} (set audit.file, or audit.file: \"\" to keep decisions in this log only)",
                    err);
      return kExitConfig;
    }
    std::string held_error;
    auto held = journal_->load_held(held_error);
    if (!held_error.empty()) spdlog::error("{}", held_error);
    auto leftovers = journal_->leftovers();
    start(build_checks(*cfg_), build_rules(*cfg_), nullptr);
    if (!cfg_->api.listen.empty()) {
      try {
        start_api();
      } catch (const std::exception& e) {
        spdlog::error("cannot listen on {} (api.listen): {}", cfg_->api.listen, e.what());
        return 1;
      }
    }
    start_alerts(nullptr);
    engine_->restore(leftovers, std::move(held));
    start_leader_watch();
    if (!cfg_->agent.listen.empty()) {
      try {
        start_agent();
      } catch (const std::exception& e) {
        spdlog::error("cannot listen on {} (agent.listen): {}", cfg_->agent.listen, e.what());
        return 1;
      }
    }
    if (cfg_->fleet.enabled) start_fleet();
    asio::signal_set signals(io_, SIGINT, SIGTERM, SIGHUP);
    wait_signal(signals);
    spdlog::info("fener {} running on node {} in mode {} with {} checks ({}) and {} rules ({})",
                 FENER_VERSION, cfg_->node_name, to_string(cfg_->mode), sched_->states().size(),
                 describe(*sched_), engine_->rules().size(), describe(*engine_));
    if (!cfg_->audit_file.empty()) spdlog::info("audit log: {}", cfg_->audit_file);
    notifier_.start_watchdog();
    notify_progress();  // READY at once when there is no check to wait for
    io_.run();
    spdlog::info("fener stopped");
    return 0;
  }

 private:
  static std::string describe(const Scheduler& s) {
    std::string out;
    for (const auto& st : s.states()) out += (out.empty() ? "" : ", ") + st.name;
    return out;
  }
  static std::string describe(const RemedyEngine& e) {
    std::string out;
    for (const auto& r : e.rules()) out += (out.empty() ? "" : ", ") + r.name;
    return out.empty() ? "none" : out;
  }

  void start(std::vector<BuiltCheck> checks, std::vector<Rule> rules, const RemedyEngine* old) {
    engine_ =
        std::make_unique<RemedyEngine>(io_, http_, remedy_worker_, *audit_, cfg_, std::move(rules));
    engine_->journal(journal_.get(), &worker_);
    if (old) engine_->adopt_state(*old);
    // An action of a replaced engine may still run: one action at a time on a node.
    engine_->busy_elsewhere([this] {
      return std::any_of(retired_engines_.begin(), retired_engines_.end(),
                         [](const auto& e) { return e->busy(); });
    });
    sched_ = std::make_unique<Scheduler>(io_, http_, worker_, std::move(checks));
    checks_started_at_ = std::chrono::system_clock::now();
    sched_->on_change([this](const CheckState& st, std::optional<Status> old_status) {
      Event e;
      e.kind = Event::Kind::check;
      e.node = cfg_->node_name;
      e.scope = cfg_->scope;
      e.subject = st.name;
      e.state = to_string(*st.published);
      e.previous = old_status ? std::string(to_string(*old_status)) : std::string();
      e.severity = *st.published;
      e.summary = "check " + st.name + ": " + (e.previous.empty() ? "(start)" : e.previous) +
                  " -> " + e.state + ": " + st.last.message;
      e.details = {
          {"message", st.last.message}, {"evidence", st.last.evidence}, {"check_type", st.type}};
      e.at = st.last.at;
      if (fleet_) fleet_->poke();
      log_event(e);  // with CHECK=, STATUS=, ... fields when the journal is stderr
      publish(e);
      notify_progress();
    });
    engine_->on_event([this](const Event& e) { publish(e); });  // the engine logs its own
    RemedyEngine* engine = engine_.get();
    sched_->on_result([engine](const CheckState& st) { engine->on_result(st); });
    sched_->start();
  }

  void start_api() {
    ApiServerOptions o;
    o.listen = cfg_->api.listen;
    o.node_name = cfg_->node_name;
    o.token = cfg_->api.token;
    api_ = std::make_unique<ApiServer>(io_, o);
    add_peer_file_routes(*api_, *cfg_, worker_, cfg_->api.max_file_size);
    add_status_routes(*api_, [this] { return snapshot(); });
    api_->add_route("GET", "/v1/rules", false, false,
                    [this](const ApiRequest&) -> asio::awaitable<ApiResponse> {
                      json body = {{"node", cfg_->node_name},
                                   {"mode", to_string(cfg_->mode)},
                                   {"rules", engine_->rules_json()}};
                      co_return ApiResponse::json_body(200, body);
                    });
    api_->add_route("POST", "/v1/rules/", true, true,
                    [this](const ApiRequest& req) -> asio::awaitable<ApiResponse> {
                      // /v1/rules/NAME/reset
                      std::string rest = req.path.substr(std::string("/v1/rules/").size());
                      const auto slash = rest.find('/');
                      if (slash == std::string::npos || rest.substr(slash) != "/reset")
                        co_return ApiResponse::error(404, "expected POST /v1/rules/NAME/reset");
                      const std::string name = rest.substr(0, slash);
                      if (!engine_->reset(name))
                        co_return ApiResponse::error(404, "no rule named \"" + name + "\"");
                      co_return ApiResponse::json_body(200, {{"rule", name}, {"reset", true}});
                    });
    api_->start();
    spdlog::info("API listening on {}{}", cfg_->api.listen,
                 cfg_->api.token.empty() ? " (no token configured: peer endpoints refuse)" : "");
  }

  // Every check change and remedy decision, to whoever announces them.
  void publish(const Event& e) {
    events_.add(e);
    if (alerts_) alerts_->publish(e);
  }

  // Alert webhooks. On reload a new dispatcher takes over what the old one knew (open
  // alerts, repeats); the old one delivers what it has queued, then retires.
  void start_alerts(const AlertDispatcher* old) {
    if (cfg_->alerts.webhooks.empty()) {
      alerts_.reset();
      return;
    }
    AlertOptions o;
    o.origin.node = cfg_->node_name;
    o.origin.scope = cfg_->scope;
    if (!cfg_->api.listen.empty())
      o.origin.generator_url = "http://" + cfg_->api.listen + "/status";
    alerts_ = std::make_unique<AlertDispatcher>(io_, http_, cfg_->alerts, o);
    if (old) alerts_->adopt_state(*old);
    alerts_->start();
    spdlog::info("alerts: {} webhook(s)", cfg_->alerts.webhooks.size());
  }

  // Patroni's leader key, pushed from etcd: the agent answers from it at once, and the
  // patroni_node checks run again now rather than at their next interval.
  void start_leader_watch() {
    if (cfg_->scope.empty() || cfg_->etcd_endpoints.empty()) return;
    // Patroni's etcd3: section keeps its keys in the v3 keyspace, which v2 does not see:
    // watching there would report "no leader" for a healthy cluster.
    if (!cfg_->patroni_dcs.empty() && cfg_->patroni_dcs != "etcd") {
      spdlog::info("leader watch off: Patroni uses {} (only the v2 keyspace is watched)",
                   cfg_->patroni_dcs);
      return;
    }
    leader_watch_ = std::make_unique<LeaderWatch>(
        io_, http_, cfg_->etcd_endpoints, cfg_->scope,
        [this](const std::optional<std::string>& leader) {
          spdlog::info("leader key: {}", !leader ? std::string("unknown (etcd unreachable)")
                                         : leader->empty() ? std::string("none (no leader)")
                                                           : *leader);
          chase_patroni(leader);
        },
        cfg_->etcd_tls);
    leader_watch_->start();
  }

  // Re-runs patroni_node now, then every 200 ms while Patroni's role here disagrees with
  // the leader key (a promotion or demotion in progress), for at most 30 s: the agent's
  // answer follows the new role as soon as Patroni reports it.
  void chase_patroni(const std::optional<std::string>& leader) {
    const auto generation = ++chase_generation_;
    asio::co_spawn(
        io_,
        [this, generation, leader]() -> asio::awaitable<void> {
          asio::steady_timer t(io_);
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          for (bool first = true; std::chrono::steady_clock::now() < deadline; first = false) {
            if (generation != chase_generation_ || !sched_) co_return;
            const CheckState* st = patroni_state();
            if (!st) co_return;
            if (!first && !leader) co_return;  // etcd unreadable: one fresh look is enough
            if (!first && leader && st->last.evidence.contains("role")) {
              const std::string role = st->last.evidence.value("role", "");
              const bool patroni_leader = role == "master" || role == "primary";
              const bool running = st->last.evidence.value("state_kind", "") == "running";
              if (patroni_leader == (*leader == cfg_->node_name) && running) co_return;
            }
            sched_->run_now(st->name);
            t.expires_after(std::chrono::milliseconds(200));
            boost::system::error_code ec;
            co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          }
        },
        asio::detached);
  }

  // The check named patroni_node, else the first of that type: a second patroni_node
  // check (another URL) must not decide this node's agent answers.
  const CheckState* patroni_state() const {
    if (!sched_) return nullptr;
    const CheckState* first = nullptr;
    for (const auto& st : sched_->states()) {
      if (st.type != "patroni_node") continue;
      if (st.name == "patroni_node") return &st;
      if (!first) first = &st;
    }
    return first;
  }

  void start_agent() {
    const AgentConfig& a = cfg_->agent;
    agent_policy_ = AgentPolicy(agent_policy_options(a));
    agent_ = std::make_unique<AgentServer>(io_, agent_options(a), [this](AgentRole role) {
      AgentFacts f;
      f.node = cfg_->node_name;
      const CheckState* st = patroni_state();
      if (st && st->last.at != std::chrono::system_clock::time_point{}) f.patroni = &st->last;
      if (leader_watch_) f.leader_key = leader_watch_->leader();
      if (engine_) f.remedy = engine_->running();
      for (const auto& e : retired_engines_)  // an action that began before a reload
        if (f.remedy.empty()) f.remedy = e->running();
      return agent_policy_.answer(role, f);
    });
    agent_->start();
    spdlog::info("agent-check listening on {} (default role {})", a.listen, a.default_role);
  }

  static AgentServerOptions agent_options(const AgentConfig& a) {
    AgentServerOptions o;
    o.listen = a.listen;
    o.default_role = agent_role_from_string(a.default_role).value_or(AgentRole::primary);
    o.read_wait = a.read_wait;
    o.max_connections = static_cast<std::size_t>(a.max_connections);
    return o;
  }
  static AgentPolicyOptions agent_policy_options(const AgentConfig& a) {
    return {a.lag_drain, a.lag_ready, a.maint_during_remedy};
  }

  // systemd: READY once every check has a first result, STATUS on every change after.
  void notify_progress() {
    if (!sched_) return;  // stopping: a retired scheduler's last result
    const std::string line = status_text();
    if (!ready_sent_ && sched_->all_reported()) {
      ready_sent_ = true;
      notifier_.ready(line);
    } else {
      notifier_.status(line);
    }
  }

  // What /status, /metrics, /healthz and the fleet summary are built from.
  StatusSnapshot snapshot() const {
    StatusSnapshot s;
    s.node = cfg_->node_name;
    s.scope = cfg_->scope;
    s.mode = cfg_->mode;
    s.version = FENER_VERSION;
    s.started_at = started_at_;
    s.checks_started_at = checks_started_at_;
    s.now = std::chrono::system_clock::now();
    if (sched_) s.checks = sched_->states();
    s.result_bounds = result_bounds(*cfg_);
    s.rules = engine_->rules_json();
    s.events = &events_;
    if (fleet_) s.metrics.push_back([this](MetricsRegistry& m) { fleet_->contribute(m); });
    s.extra["config"] = config_json();
    s.metrics.push_back([this](MetricsRegistry& m) { contribute_config(m); });
    if (leader_watch_) {
      const auto& l = leader_watch_->leader();
      s.extra["leader_key"] = l ? json(*l) : json();
    }
    if (alerts_) {
      s.extra["alerts"] = alerts_->stats_json();
      s.metrics.push_back([this](MetricsRegistry& m) { contribute_alerts(m); });
    }
    if (agent_) {
      s.extra["agent"] = agent_->stats().to_json();
      s.metrics.push_back([this](MetricsRegistry& m) { contribute_agent(m); });
    }
    return s;
  }

  void contribute_alerts(MetricsRegistry& m) const {
    m.declare("fener_alert_deliveries_total", MetricType::counter,
              "Webhook deliveries the receiver accepted.");
    m.declare("fener_alert_failed_attempts_total", MetricType::counter,
              "Webhook delivery attempts that failed (timeouts included).");
    m.declare("fener_alert_dropped_total", MetricType::counter,
              "Events given up on, by reason: overflow, permanent, exhausted, shutdown.");
    m.declare("fener_alert_queue_depth", MetricType::gauge, "Events waiting per webhook.");
    for (const auto& w : alerts_->stats()) {
      const Labels l = {{"webhook", w.name}};
      m.add("fener_alert_deliveries_total", l, static_cast<double>(w.deliveries));
      m.add("fener_alert_failed_attempts_total", l, static_cast<double>(w.failed_attempts));
      for (const auto& [reason, n] :
           {std::pair{"overflow", w.dropped_overflow}, std::pair{"permanent", w.dropped_permanent},
            std::pair{"exhausted", w.dropped_exhausted}, std::pair{"shutdown", w.dropped_shutdown}})
        m.add("fener_alert_dropped_total", {{"webhook", w.name}, {"reason", reason}},
              static_cast<double>(n));
      m.set("fener_alert_queue_depth", l, static_cast<double>(w.queue_depth));
    }
  }

  void contribute_agent(MetricsRegistry& m) const {
    const AgentStats& st = agent_->stats();
    m.declare("fener_agent_connections_total", MetricType::counter,
              "Connections accepted on the HAProxy agent-check port.");
    m.add("fener_agent_connections_total", {}, static_cast<double>(st.connections));
    m.declare("fener_agent_rejected_total", MetricType::counter,
              "Agent-check connections closed unanswered at once: at agent.max_connections "
              "and not one that asked (which evicts a silent one).");
    m.add("fener_agent_rejected_total", {}, static_cast<double>(st.rejected));
    m.declare("fener_agent_evicted_total", MetricType::counter,
              "Silent agent-check connections closed at agent.max_connections to make room.");
    m.add("fener_agent_evicted_total", {}, static_cast<double>(st.evicted));
    m.declare("fener_agent_accept_errors_total", MetricType::counter,
              "Failed accepts on the agent-check port (out of file descriptors, ...).");
    m.add("fener_agent_accept_errors_total", {}, static_cast<double>(st.accept_errors));
    m.declare("fener_agent_answers_total", MetricType::counter,
              "Agent-check answers by the backend's role and the answer (none: no line sent).");
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < 5; ++v)
        if (st.answers[r][v])
          m.add("fener_agent_answers_total",
                {{"role", std::string(to_string(static_cast<AgentRole>(r)))},
                 {"answer", std::string(to_string(static_cast<AgentVerdict>(v)))}},
                static_cast<double>(st.answers[r][v]));
    if (leader_watch_) {
      m.declare("fener_leader_watch_errors_total", MetricType::counter,
                "Rounds of the etcd leader-key watch that failed.");
      m.add("fener_leader_watch_errors_total", {}, static_cast<double>(leader_watch_->errors()));
    }
  }

  // The fleet view; its settings take effect at the next start (a reload keeps them).
  void start_fleet() {
    if (cfg_->scope.empty() || cfg_->etcd_endpoints.empty()) {
      spdlog::warn("fleet: not publishing this node's summary: {} unknown",
                   cfg_->scope.empty() ? "the cluster scope (cluster.scope)"
                                       : "the etcd endpoints (etcd.endpoints)");
      return;
    }
    const Duration interval = cfg_->fleet.interval;
    fleet_ = std::make_unique<FleetPublisher>(
        io_, http_, cfg_->etcd_endpoints, cfg_->scope, cfg_->node_name, interval,
        [this, interval] { return make_summary(snapshot(), interval); }, std::chrono::seconds(1),
        cfg_->etcd_tls);
    fleet_->start();
  }

  void wait_signal(asio::signal_set& signals) {
    signals.async_wait([this, &signals](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        reload();
        wait_signal(signals);
        return;
      }
      spdlog::info("signal {}: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      signals.cancel();
      shutdown();
    });
  }

  // Parses and validates the new configuration completely before touching the running
  // one; a bad file changes nothing.
  void reload() {
    spdlog::info("SIGHUP: reloading configuration");
    notifier_.reloading();
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
          try {
            // Named, not a temporary inside co_await: GCC 12 destroys those twice.
            // started_ is never changed, so the worker may read it.
            auto job = [load = args_.load, started = started_,
                        watchers = leader_watch_ != nullptr || fleet_ != nullptr] {
              return std::make_shared<Reloaded>(
                  prepare_reload(load_config(load), *started, watchers));
            };
            auto loaded = co_await offload(worker_, std::move(job));
            if (stopping_) co_return;  // SIGTERM came while the file was read
            const PendingRestart& pending = loaded->pending;
            if (!pending.held.empty())
              spdlog::warn(
                  "reload: changes to {} take effect at the next start (read once at "
                  "start); their running values stay in force",
                  join(pending.held));
            if (!pending.partly.empty())
              spdlog::warn(
                  "reload: the checks use the new {}; the etcd leader watch and the fleet "
                  "keep the old until the next start",
                  join(pending.partly));
            std::unique_ptr<AlertDispatcher> old_alerts = std::move(alerts_);
            std::unique_ptr<RemedyEngine> old = std::move(engine_);
            retire(std::move(sched_));
            cfg_ = loaded->config;
            if (agent_) {
              agent_policy_.set_options(agent_policy_options(cfg_->agent));
              agent_->update(agent_options(cfg_->agent));
            }
            if (!args_.log_level) spdlog::set_level(spdlog::level::from_str(cfg_->log_level));
            start(std::move(loaded->checks), std::move(loaded->rules), old.get());
            start_alerts(old_alerts.get());
            if (old_alerts) {
              old_alerts->stop();
              retired_alerts_.push_back(std::move(old_alerts));
            }
            old->stop();
            retired_engines_.push_back(std::move(old));
            spdlog::info("configuration reloaded: mode {}, {} checks ({}), {} rules ({})",
                         to_string(cfg_->mode), sched_->states().size(), describe(*sched_),
                         engine_->rules().size(), describe(*engine_));
            pending_restart_ = pending.all();
            reload_ok(std::chrono::system_clock::now());
          } catch (const ConfigError& e) {
            spdlog::error("reload failed, keeping the running configuration: {}", e.what());
            reload_failed(e.what(), e.file(), e.line(), e.key());
          } catch (const std::exception& e) {
            spdlog::error("reload failed, keeping the running configuration: {}", e.what());
            reload_failed(e.what(), "", 0, "");
          }
          // Reloaded or not, the daemon runs on: systemd's reload is over.
          if (sched_) notifier_.ready(status_text());
        },
        asio::detached);
  }

  // The last reload's result, for /status, /metrics and systemd's STATUS line.
  void reload_ok(std::chrono::system_clock::time_point at) {
    last_reload_ = {{"ok", true}, {"at", iso_time(at)}};
    last_success_ = at;
    reload_error_.clear();
  }
  void reload_failed(const std::string& what, const std::string& file, int line,
                     const std::string& key) {
    ++reload_failures_;
    last_reload_ = {{"ok", false},   {"at", iso_time(std::chrono::system_clock::now())},
                    {"error", what}, {"file", file},
                    {"line", line},  {"key", key}};
    reload_error_ = what;
  }
  json config_json() const {
    return {{"file", cfg_->config_file},
            {"loaded_at", iso_time(last_success_)},
            {"state_dir", cfg_->state_dir},
            {"last_reload", last_reload_},
            {"pending_restart", pending_restart_},
            {"reload_failures", reload_failures_},
            {"held_rules", engine_ ? json(engine_->held().size()) : json(0)}};
  }
  void contribute_config(MetricsRegistry& m) const {
    m.declare("fener_config_reload_failures_total", MetricType::counter,
              "Reloads (SIGHUP) rejected because the new configuration was invalid.");
    m.add("fener_config_reload_failures_total", {}, static_cast<double>(reload_failures_));
    m.declare("fener_config_last_reload_success_timestamp_seconds", MetricType::gauge,
              "When the configuration in force was loaded (start or reload), Unix time.");
    m.set("fener_config_last_reload_success_timestamp_seconds", {},
          std::chrono::duration<double>(last_success_.time_since_epoch()).count());
    m.declare("fener_config_pending_restart", MetricType::gauge,
              "1 while a reload changed settings read only at start (see /status "
              "config.pending_restart), else 0.");
    m.set("fener_config_pending_restart", {}, pending_restart_.empty() ? 0.0 : 1.0);
  }
  static std::string iso_time(std::chrono::system_clock::time_point t) {
    const auto secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
  }
  // systemd's STATUS line: checks, rules given up, a rejected reload until the next good one,
  // and settings a reload changed that wait for a restart.
  std::string status_text() const {
    std::vector<std::string> gave_up;
    for (const auto& r : engine_->rules_json())
      if (r.value("phase", "") == "gave_up") gave_up.push_back(r.value("rule", ""));
    std::string line = status_line(sched_->states(), cfg_->mode, gave_up);
    if (!reload_error_.empty()) line += "; reload failed: " + reload_error_.substr(0, 120);
    if (!pending_restart_.empty()) line += "; restart pending for " + join(pending_restart_);
    return line;
  }

  // A stopped scheduler (or engine) lives until its loops (or its action) have unwound.
  void retire(std::unique_ptr<Scheduler> s) {
    s->stop();
    retired_.push_back(std::move(s));
    std::erase_if(retired_, [](const auto& r) { return r->active() == 0; });
    std::erase_if(retired_alerts_, [](const auto& r) { return r->active() == 0; });
    // Retired schedulers may still deliver a last result to their engine.
    if (retired_.empty())
      std::erase_if(retired_engines_, [](const auto& r) { return r->active() == 0; });
  }

  void shutdown() {
    stopping_ = true;
    notifier_.stopping();
    retire(std::move(sched_));
    engine_->stop();
    if (api_) api_->stop();
    // The agent answers until the end: HAProxy keeps the last answer it got, and a remedy
    // still finishing below must not leave the node in maintenance.
    if (leader_watch_) leader_watch_->stop();
    ++chase_generation_;
    if (fleet_) fleet_->stop();
    if (alerts_) alerts_->stop();  // queued alerts get one prompt attempt, 2 s at most
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
          asio::steady_timer t(io_);
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          while (std::chrono::steady_clock::now() < deadline) {
            std::erase_if(retired_, [](const auto& r) { return r->active() == 0; });
            // A remedy in progress is given time to finish rather than cut off midway.
            std::erase_if(retired_alerts_, [](const auto& r) { return r->active() == 0; });
            const bool acting =
                engine_->busy() || std::any_of(retired_engines_.begin(), retired_engines_.end(),
                                               [](const auto& e) { return e->busy(); });
            if (retired_.empty() && !acting && (!fleet_ || fleet_->active() == 0) &&
                (!alerts_ || alerts_->active() == 0) && retired_alerts_.empty())
              break;
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(asio::use_awaitable);
          }
          if (agent_) agent_->stop();
          io_.stop();
        },
        asio::detached);
  }

  const Args& args_;
  std::shared_ptr<const Config> cfg_;
  std::shared_ptr<const Config> started_;     // as loaded at start: what start-only parts run on
  std::vector<std::string> pending_restart_;  // start-only settings the last reload changed
  asio::io_context io_;
  SystemdNotifier notifier_{io_};
  bool ready_sent_ = false;
  HttpClient http_;
  Worker worker_;
  // Remedies block for long (a systemd job, a big chown): never in front of the checks.
  Worker remedy_worker_;
  std::unique_ptr<AuditLog> audit_;
  std::unique_ptr<IntentJournal> journal_;
  std::unique_ptr<RemedyEngine> engine_;
  std::unique_ptr<ApiServer> api_;
  // Check changes and remedy decisions for /status and /metrics: every EventSink feeds it.
  RecentEvents events_;
  const std::chrono::system_clock::time_point started_at_ = std::chrono::system_clock::now();
  std::chrono::system_clock::time_point checks_started_at_;
  std::unique_ptr<FleetPublisher> fleet_;
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::unique_ptr<Scheduler>> retired_;
  std::vector<std::unique_ptr<RemedyEngine>> retired_engines_;
  std::unique_ptr<LeaderWatch> leader_watch_;
  std::uint64_t chase_generation_ = 0;
  AgentPolicy agent_policy_;
  std::unique_ptr<AgentServer> agent_;
  std::unique_ptr<AlertDispatcher> alerts_;
  std::vector<std::unique_ptr<AlertDispatcher>> retired_alerts_;
  json last_reload_;  // null until the first SIGHUP
  std::chrono::system_clock::time_point last_success_ = std::chrono::system_clock::now();
  std::uint64_t reload_failures_ = 0;
  std::string reload_error_;  // the last reload's error until a reload succeeds
  bool stopping_ = false;
};

// One request from a CLI command (no daemon loop around it): runs its own loop to the end.
HttpResult fetch_once(HttpRequest req) {
  asio::io_context io;
  HttpClient http(io);
  HttpResult r;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { r = co_await http.fetch(std::move(req)); },
      asio::detached);
  io.run();
  return r;
}

// `fener rules` and `fener rules reset NAME`: talk to the running daemon's API.
int cmd_rules(const Args& args) {
  Config cfg = load_config(args.load);
  if (cfg.api.listen.empty())
    throw UsageError("the API is off (api.listen): cannot reach the running daemon");
  HttpRequest req;
  req.url = "http://" + cfg.api.listen + "/v1/rules";
  req.timeout = std::chrono::seconds(5);
  const bool reset = !args.rest.empty() && args.rest[0] == "reset";
  if (!args.rest.empty() && (!reset || args.rest.size() != 2))
    throw UsageError("usage: fener rules [reset NAME]");
  if (reset) {
    if (cfg.api.token.empty())
      throw UsageError("reset needs the API token (api.token_file, default /etc/fener/token)");
    req.method = "POST";
    req.url += "/" + args.rest[1] + "/reset";
    req.headers = {"Authorization: Bearer " + cfg.api.token};
  }
  const HttpResult r = fetch_once(std::move(req));
  if (!r.ok()) {
    std::cerr << "fener: cannot reach the daemon at " << cfg.api.listen << ": " << r.describe()
              << "\n";
    return 1;
  }
  auto body = parse_json(r.body);
  if (r.status != 200 || !body) {
    std::cerr << "fener: HTTP " << r.status << ": " << snippet(r.body, 200) << "\n";
    return 1;
  }
  if (reset) {
    std::cout << "rule " << args.rest[1] << " reset\n";
    return 0;
  }
  if (args.json) {
    std::cout << body->dump(2) << "\n";
    return 0;
  }
  std::cout << "node " << body->value("node", "?") << ", mode " << body->value("mode", "?") << "\n";
  std::printf("%-24s %-18s %-9s %-18s %8s %8s\n", "RULE", "CHECK", "PHASE", "STEP", "ATTEMPTS",
              "ACTIONS");
  for (const auto& rule : (*body)["rules"]) {
    const std::string step = rule["step"].is_string() ? rule["step"].get<std::string>() : "-";
    std::printf("%-24s %-18s %-9s %-18s %8d %5d/%-2d\n", rule.value("rule", "").c_str(),
                rule.value("check", "").c_str(), rule.value("phase", "").c_str(), step.c_str(),
                rule.value("attempts_on_step", 0), rule.value("actions_in_window", 0),
                rule.value("max_actions", 0));
  }
  for (const auto& rule : (*body)["rules"])
    if (rule.contains("reason") && rule["reason"].is_string())
      std::cout << rule.value("rule", "") << ": " << rule["reason"].get<std::string>() << "\n";
  return 0;
}

// `fener status --cluster`: the fleet view, straight from etcd.
int cmd_status_cluster(const Args& args, const Config& cfg) {
  if (cfg.scope.empty()) {
    std::cerr << "fener: the cluster scope is unknown: set cluster.scope, or give "
                 "--patroni-config\n";
    return kExitConfig;
  }
  if (cfg.etcd_endpoints.empty()) {
    std::cerr << "fener: no etcd endpoints known: set etcd.endpoints, or give --patroni-config\n";
    return kExitConfig;
  }
  asio::io_context io;
  HttpClient http(io);
  FleetRead read;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Named copies, not temporaries inside co_await: GCC 12 destroys those twice.
        std::vector<std::string> endpoints = cfg.etcd_endpoints;
        std::string scope = cfg.scope;
        TlsSettings tls = cfg.etcd_tls;
        read = co_await read_fleet(http, std::move(endpoints), std::move(scope),
                                   std::chrono::seconds(3), std::move(tls));
      },
      asio::detached);
  io.run();
  if (!read.keys) {
    std::cerr << "fener: cannot read the fleet view from etcd: " << read.error << "\n";
    return nagios_exit_code(Status::unknown);
  }
  std::vector<std::string> expected;
  for (const auto& m : cfg.etcd_members) expected.push_back(m.name);
  for (const auto& m : read.patroni_members) expected.push_back(m);
  const FleetView view =
      judge_fleet(cfg.scope, *read.keys, expected, std::chrono::system_clock::now());
  if (args.json)
    std::cout << fleet_json(view).dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  else
    std::cout << fleet_table(view);
  return nagios_exit_code(view.status);
}

// `fener status`: the running daemon's /status.
int cmd_status(const Args& args) {
  Config cfg = load_config(args.load);
  if (args.cluster) return cmd_status_cluster(args, cfg);
  const int unknown = nagios_exit_code(Status::unknown);
  if (cfg.api.listen.empty()) {
    std::cerr << "fener: the API is off (api.listen): cannot reach the running daemon\n";
    return unknown;
  }
  HttpRequest req;
  req.url = "http://" + cfg.api.listen + "/status";
  req.timeout = std::chrono::seconds(5);
  req.max_body = 16 << 20;
  const HttpResult r = fetch_once(std::move(req));
  if (!r.ok()) {
    std::cerr << "fener: cannot reach the daemon at " << cfg.api.listen << ": " << r.describe()
              << " (is `fener run` running?)\n";
    return unknown;
  }
  auto body = parse_json(r.body);
  if (r.status != 200 || !body || !body->is_object()) {
    std::cerr << "fener: unexpected answer from the daemon at " << cfg.api.listen << ": HTTP "
              << r.status << ": " << snippet(r.body, 200) << "\n";
    return unknown;
  }
  if (args.json)
    std::cout << body->dump(2, ' ', false, json::error_handler_t::replace) << "\n";
  else
    std::cout << status_table(*body);
  const auto overall = body->contains("status") && (*body)["status"].is_string()
                           ? status_from_string((*body)["status"].get<std::string>())
                           : std::nullopt;
  return nagios_exit_code(overall.value_or(Status::unknown));
}

int cmd_run(const Args& args) {
  Config cfg = load_config(args.load);
  setup_logging(args.log_level.value_or(cfg.log_level));
  Daemon d(args, std::move(cfg));
  return d.run();
}

}  // namespace

int cli_main(int argc, char** argv) {
  Args args;
  try {
    args = parse_args(argc, argv);
    if (args.log_level) {
      static const std::vector<std::string> levels = {"trace", "debug", "info", "warn", "error"};
      if (std::find(levels.begin(), levels.end(), *args.log_level) == levels.end())
        throw UsageError("--log-level: expected trace, debug, info, warn or error");
    }
  } catch (const UsageError& e) {
    std::cerr << "fener: " << e.what() << "\nTry 'fener --help'.\n";
    return kExitUsage;
  }
  const std::string& cmd = args.command;
  if (cmd == "version") {
    std::cout << "fener " << FENER_VERSION << "\n";
    return 0;
  }
  if (cmd.empty() || cmd == "help" || (args.help && cmd.empty())) {
    std::cout << kMainHelp;
    return cmd.empty() && !args.help ? kExitUsage : 0;
  }
  if (cmd == "help check" || (cmd == "check" && args.help)) {
    std::cout << kCheckHelp << check_types_help();
    return 0;
  }
  if (cmd == "help run" || (cmd == "run" && args.help)) {
    std::cout << kRunHelp << remedy_types_help();
    return 0;
  }
  if (cmd == "help rules" || (cmd == "rules" && args.help)) {
    std::cout << kRulesHelp;
    return 0;
  }
  if (cmd == "help status" || (cmd == "status" && args.help)) {
    std::cout << kStatusHelp;
    return 0;
  }
  if (cmd.rfind("help ", 0) == 0) {
    std::cerr << "fener: no help for \"" << cmd.substr(5) << "\"\n" << kMainHelp;
    return kExitUsage;
  }
  try {
    if (cmd == "check") return cmd_check(args);
    if (cmd == "run") return cmd_run(args);
    if (cmd == "rules") return cmd_rules(args);
    if (cmd == "status") return cmd_status(args);
  } catch (const ConfigError& e) {
    std::cerr << "fener: configuration error: " << e.what() << "\n";
    return kExitConfig;
  } catch (const UsageError& e) {
    std::cerr << "fener: " << e.what() << "\n";
    return kExitUsage;
  }
  std::cerr << "fener: unknown command \"" << cmd << "\"\nTry 'fener --help'.\n";
  return kExitUsage;
}

}  // namespace fener
