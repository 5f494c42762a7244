#include "src/cli.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "checks/registry.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/output.hpp"
#include "src/scheduler.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

constexpr int kExitUsage = 64;  // EX_USAGE

const char* const kMainHelp =
    R"(fener - health checks and self-healing for etcd + Patroni + HAProxy clusters

Usage:
  fener check [options]     run every check once and print the results
  fener run [options]       run the checks continuously (the daemon)
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

Options:
  -c, --config FILE          fener configuration file
  -p, --patroni-config FILE  Patroni configuration to discover the node from
      --log-level LEVEL      trace, debug, info, warn or error (overrides log.level)
  -h, --help                 show this help

Signals: SIGTERM and SIGINT stop cleanly; SIGHUP reloads the configuration and
keeps the running one when the new one is invalid.
)";

struct Args {
  std::string command;
  LoadOptions load;
  bool json = false;
  bool no_color = false;
  bool help = false;
  std::vector<std::string> only;
  std::optional<std::string> log_level;
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
    } else if (w == "--only") {
      for (auto& n : split_commas(take(w))) a.only.push_back(n);
    } else if (w == "--log-level") {
      a.log_level = take(w);
    } else if (!w.empty() && w[0] == '-') {
      throw UsageError("unknown option " + w);
    } else if (a.command.empty()) {
      a.command = w;
    } else if (a.command == "help") {
      a.command = "help " + w;
    } else {
      throw UsageError("unexpected argument " + w);
    }
  }
  return a;
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

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("fener");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
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

class Daemon {
 public:
  Daemon(const Args& args, Config cfg) : args_(args), cfg_(std::move(cfg)), http_(io_) {}

  int run() {
    start_scheduler(build_checks(cfg_));
    asio::signal_set signals(io_, SIGINT, SIGTERM, SIGHUP);
    wait_signal(signals);
    spdlog::info("fener {} running on node {} with {} checks: {}", FENER_VERSION, cfg_.node_name,
                 sched_->states().size(), describe(*sched_));
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

  void start_scheduler(std::vector<BuiltCheck> checks) {
    sched_ = std::make_unique<Scheduler>(io_, http_, worker_, std::move(checks));
    sched_->on_change([](const CheckState& st, std::optional<Status> old) {
      const auto level = st.published == Status::passing   ? spdlog::level::info
                         : st.published == Status::warning ? spdlog::level::warn
                                                           : spdlog::level::err;
      spdlog::log(level, "check {}: {} -> {}: {}", st.name,
                  old ? std::string(to_string(*old)) : std::string("(start)"),
                  to_string(*st.published), st.last.message);
    });
    sched_->start();
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
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
          try {
            // Named, not a temporary inside co_await: GCC 12 destroys those twice.
            auto job = [load = args_.load] {
              Config c = load_config(load);
              auto checks = build_checks(c);
              return std::make_shared<std::pair<Config, std::vector<BuiltCheck>>>(
                  std::move(c), std::move(checks));
            };
            auto loaded = co_await offload(worker_, std::move(job));
            retire(std::move(sched_));
            cfg_ = std::move(loaded->first);
            start_scheduler(std::move(loaded->second));
            spdlog::info("configuration reloaded: {} checks: {}", sched_->states().size(),
                         describe(*sched_));
          } catch (const ConfigError& e) {
            spdlog::error("reload failed, keeping the running configuration: {}", e.what());
          } catch (const std::exception& e) {
            spdlog::error("reload failed, keeping the running configuration: {}", e.what());
          }
        },
        asio::detached);
  }

  // A stopped scheduler lives until its loops have unwound.
  void retire(std::unique_ptr<Scheduler> s) {
    s->stop();
    retired_.push_back(std::move(s));
    std::erase_if(retired_, [](const auto& r) { return r->active() == 0; });
  }

  void shutdown() {
    retire(std::move(sched_));
    asio::co_spawn(
        io_,
        [this]() -> asio::awaitable<void> {
          asio::steady_timer t(io_);
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
          while (std::chrono::steady_clock::now() < deadline) {
            std::erase_if(retired_, [](const auto& r) { return r->active() == 0; });
            if (retired_.empty()) break;
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(asio::use_awaitable);
          }
          io_.stop();
        },
        asio::detached);
  }

  const Args& args_;
  Config cfg_;
  asio::io_context io_;
  HttpClient http_;
  Worker worker_;
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::unique_ptr<Scheduler>> retired_;
};

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
    std::cout << kRunHelp;
    return 0;
  }
  if (cmd.rfind("help ", 0) == 0) {
    std::cerr << "fener: no help for \"" << cmd.substr(5) << "\"\n" << kMainHelp;
    return kExitUsage;
  }
  try {
    if (cmd == "check") return cmd_check(args);
    if (cmd == "run") return cmd_run(args);
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
