#include "remedies/service_restart.hpp"

#include <sys/stat.h>
#include <systemd/sd-bus.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "src/process.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kSystemdDir = "/run/systemd/system";
constexpr const char* kSystemd = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";

constexpr std::size_t kTailLines = 10;
constexpr std::size_t kTailBytes = 2000;

const std::array<std::string_view, 11> kUnitTypes = {".service", ".socket",    ".target", ".timer",
                                                     ".mount",   ".automount", ".path",   ".slice",
                                                     ".scope",   ".swap",      ".device"};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// Shell-like quoting, only for showing a command in messages.
std::string quote(const std::string& arg) {
  const bool plain = !arg.empty() && arg.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_./:=@%+,-") == std::string::npos;
  if (plain) return arg;
  std::string out = "'";
  for (char c : arg) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + quote(a);
  return out;
}

// The last lines of a command's output: where the reason for a failure usually is.
std::string output_tail(const std::string& output) {
  std::string_view s = output;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  std::size_t start = s.size();
  std::size_t lines = 0;
  while (start > 0) {
    const std::size_t nl = s.rfind('\n', start - 1);
    if (nl == std::string_view::npos) {
      start = 0;
      break;
    }
    if (++lines == kTailLines) {
      start = nl + 1;
      break;
    }
    start = nl;
  }
  if (s.size() - start > kTailBytes) start = s.size() - kTailBytes;
  return std::string(s.substr(start));
}

std::string last_line(const std::string& tail) {
  const auto nl = tail.rfind('\n');
  return nl == std::string::npos ? tail : tail.substr(nl + 1);
}

bool valid_unit_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
         c == '_' || c == '.' || c == '-' || c == '@' || c == '\\';
}

std::string explain_job_result(const std::string& result) {
  if (result == "failed") return "the unit failed to start again";
  if (result == "timeout") return "systemd's own timeout for the unit passed";
  if (result == "canceled") return "the job was canceled";
  if (result == "dependency") return "a unit it depends on failed";
  if (result == "skipped") return "the job was skipped";
  return "";
}

struct BusCloser {
  void operator()(sd_bus* b) const { sd_bus_flush_close_unref(b); }
};
struct SlotCloser {
  void operator()(sd_bus_slot* s) const { sd_bus_slot_unref(s); }
};
struct MessageCloser {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};

struct BusError {
  sd_bus_error e = SD_BUS_ERROR_NULL;
  BusError() = default;
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  ~BusError() { sd_bus_error_free(&e); }
  std::string text(int r) const {
    if (e.message != nullptr) return e.message;
    if (e.name != nullptr) return e.name;
    return errno_text(-r);
  }
};

// Every JobRemoved seen, by job path: the one for our job may arrive while the
// RestartUnit reply is still on its way, before we know its path.
struct JobWatch {
  std::map<std::string, std::string> results;
};

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error*) {
  std::uint32_t id = 0;
  const char* job = nullptr;
  const char* unit = nullptr;
  const char* result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &job, &unit, &result) < 0) return 0;
  static_cast<JobWatch*>(userdata)->results[job] = result;
  return 0;
}

}  // namespace

std::string unit_name(const std::string& service) {
  for (auto type : kUnitTypes)
    if (ends_with(service, type) && service.size() > type.size()) return service;
  return service + ".service";
}

ServiceRestartParams parse_service_restart_params(YamlMap& params, const Config& config) {
  ServiceRestartParams out;
  const auto service = params.str("service");
  if (!service) params.fail("service", "required: the service to restart, e.g. patroni");
  if (service->empty() || !std::all_of(service->begin(), service->end(), valid_unit_char))
    params.fail("service", "expected a systemd unit name (letters, digits, and :_.@-\\), got \"" +
                               *service + "\"");
  out.unit = unit_name(*service);
  if (out.unit.size() > 255)
    params.fail("service", "expected a unit name of at most 255 characters");

  const YAML::Node cmd = params.raw("command");
  if (cmd.IsDefined() && !cmd.IsNull()) {
    const std::string expected = "expected a command line or a list of its arguments";
    if (cmd.IsScalar()) {
      std::istringstream words(cmd.Scalar());
      std::string w;
      while (words >> w) out.command.push_back(w);
    } else if (cmd.IsSequence()) {
      for (const auto& item : cmd) {
        if (!item.IsScalar()) params.fail("command", expected + ", found a list or mapping in it");
        out.command.push_back(item.Scalar());
      }
    } else {
      params.fail("command", expected + ", got a mapping");
    }
    if (out.command.empty() || out.command.front().empty())
      params.fail("command", expected + ", got nothing to run");
  } else if (auto it = config.service_commands.find(*service);
             it != config.service_commands.end()) {
    out.command = it->second;  // `services:` in fener.yaml: how this node restarts it
  }

  out.timeout = params.duration("timeout").value_or(out.timeout);
  return out;
}

RemedyOutcome restart_unit_via_systemd(const std::string& unit, Duration timeout) {
  const auto started = Clock::now();
  const auto deadline = started + timeout;
  json details = {{"unit", unit}, {"via", "systemd"}, {"timeout_ms", timeout.count()}};
  auto elapsed_ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  };
  auto fail = [&](std::string message) {
    details["elapsed_ms"] = elapsed_ms();
    return RemedyOutcome::failure(std::move(message), details);
  };
  // What remains of the deadline, for each D-Bus call and wait (at least 1 us: 0 means
  // "the default" to sd-bus).
  auto remaining_usec = [&]() -> std::uint64_t {
    const auto left =
        std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now());
    return static_cast<std::uint64_t>(std::max<std::int64_t>(left.count(), 1));
  };

  // What sd_booted() tests: systemd creates it when it runs as PID 1.
  struct stat st {};
  if (stat(kSystemdDir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail("systemd is not running here (no " + std::string(kSystemdDir) +
                "); configure command: for service " + unit + " (or services: in fener.yaml)");
  }

  sd_bus* raw_bus = nullptr;
  int r = sd_bus_open_system(&raw_bus);
  if (r < 0) return fail("cannot connect to the system bus: " + errno_text(-r));
  std::unique_ptr<sd_bus, BusCloser> bus(raw_bus);

  JobWatch watch;
  sd_bus_slot* raw_slot = nullptr;
  sd_bus_set_method_call_timeout(bus.get(), remaining_usec());
  r = sd_bus_match_signal(bus.get(), &raw_slot, kSystemd, kManagerPath, kManager, "JobRemoved",
                          on_job_removed, &watch);
  if (r < 0) return fail("cannot watch systemd's jobs: " + errno_text(-r));
  std::unique_ptr<sd_bus_slot, SlotCloser> slot(raw_slot);

  {
    BusError err;
    sd_bus_set_method_call_timeout(bus.get(), remaining_usec());
    r = sd_bus_call_method(bus.get(), kSystemd, kManagerPath, kManager, "Subscribe", &err.e,
                           nullptr, "");
    if (r < 0) return fail("systemd refused to report jobs (Subscribe): " + err.text(r));
  }

  std::string job;
  {
    BusError err;
    sd_bus_message* raw_reply = nullptr;
    sd_bus_set_method_call_timeout(bus.get(), remaining_usec());
    r = sd_bus_call_method(bus.get(), kSystemd, kManagerPath, kManager, "RestartUnit", &err.e,
                           &raw_reply, "ss", unit.c_str(), "replace");
    if (r < 0) return fail("systemd did not restart " + unit + ": " + err.text(r));
    std::unique_ptr<sd_bus_message, MessageCloser> reply(raw_reply);
    const char* path = nullptr;
    r = sd_bus_message_read(reply.get(), "o", &path);
    if (r < 0 || path == nullptr)
      return fail("systemd's answer to RestartUnit had no job: " + errno_text(-r));
    job = path;
  }
  details["job"] = job;

  for (;;) {
    const auto it = watch.results.find(job);
    if (it != watch.results.end()) {
      const std::string& result = it->second;
      details["result"] = result;
      details["elapsed_ms"] = elapsed_ms();
      if (result == "done") {
        return RemedyOutcome::success(
            "restarted " + unit + " through systemd in " + std::to_string(elapsed_ms()) + " ms",
            details);
      }
      const std::string why = explain_job_result(result);
      return fail("systemd could not restart " + unit + ": job " + result +
                  (why.empty() ? "" : " (" + why + ")"));
    }
    r = sd_bus_process(bus.get(), nullptr);
    if (r < 0) return fail("lost the system bus while restarting " + unit + ": " + errno_text(-r));
    if (r > 0) continue;  // it did something: there may be more to do
    if (Clock::now() >= deadline) {
      return fail("systemd did not finish restarting " + unit + " within " +
                  format_duration(timeout) + " (job " + job + ")");
    }
    r = sd_bus_wait(bus.get(), remaining_usec());
    if (r < 0 && r != -EINTR)
      return fail("lost the system bus while restarting " + unit + ": " + errno_text(-r));
  }
}

namespace {

class ServiceRestartRemedy final : public Remedy {
 public:
  explicit ServiceRestartRemedy(ServiceRestartParams params) : params_(std::move(params)) {}

  Risk risk() const override { return Risk::disruptive; }
  bool interrupts_postgres() const override {
    return params_.unit.rfind("patroni", 0) == 0 || params_.unit.rfind("postgresql", 0) == 0;
  }

  std::string plan(const RemedyContext&) const override {
    if (!params_.command.empty()) return "run: " + command_line(params_.command);
    return "restart " + params_.unit + " through systemd";
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
    if (params_.command.empty()) {
      // A named lambda, not a temporary in the co_await expression (GCC 12).
      auto job = [unit = params_.unit, timeout = params_.timeout]() {
        return restart_unit_via_systemd(unit, timeout);
      };
      co_return co_await offload(ctx.worker, std::move(job));
    }

    ProcessRequest req;
    req.argv = params_.command;
    req.timeout = params_.timeout;
    ProcessResult r = co_await run_process(std::move(req));
    const std::string cmd = command_line(params_.command);
    const std::string tail = output_tail(r.output);
    json details = {
        {"unit", params_.unit},
        {"via", "command"},
        {"command", params_.command},
        {"started", r.started},
        {"exit_code", r.exit_code},
        {"signal", r.term_signal != 0 ? signal_name(r.term_signal) : ""},
        {"timed_out", r.timed_out},
        {"cancelled", r.cancelled},
        {"elapsed_ms", r.elapsed.count()},
        {"output_tail", tail},
        {"output_truncated_bytes", r.truncated},
    };
    if (r.ok()) {
      co_return RemedyOutcome::success(
          "restarted " + params_.unit + ": " + cmd + ": " + r.describe(), std::move(details));
    }
    const std::string last = last_line(tail);
    co_return RemedyOutcome::failure("could not restart " + params_.unit + ": " + cmd + ": " +
                                         r.describe() + (last.empty() ? "" : ": " + last),
                                     std::move(details));
  }

 private:
  ServiceRestartParams params_;
};

}  // namespace

std::unique_ptr<Remedy> make_service_restart_remedy(YamlMap& params, const Config& config) {
  return std::make_unique<ServiceRestartRemedy>(parse_service_restart_params(params, config));
}

}  // namespace fener
