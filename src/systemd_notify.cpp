#include "src/systemd_notify.hpp"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include <spdlog/spdlog.h>

namespace fener {

namespace notify {

namespace {

void send(const std::string& state) {
  if (!enabled()) return;
  // unset_environment=0: reloads and the watchdog read the variables again later.
  const int r = sd_notify(0, state.c_str());
  if (r < 0) spdlog::debug("sd_notify({}) failed: error {}", state.substr(0, state.find('\n')), -r);
}

// A STATUS= value is one line: a newline would start a new assignment.
std::string one_line(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

}  // namespace

bool enabled() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  return s && *s;
}

void ready() {
  send("READY=1");
}
void ready(std::string_view status) {
  send("READY=1\nSTATUS=" + one_line(status));
}
void status(std::string_view line) {
  send("STATUS=" + one_line(line));
}
void watchdog() {
  send("WATCHDOG=1");
}
void stopping() {
  send("STOPPING=1");
}

void reloading() {
  // CLOCK_MONOTONIC in microseconds is what systemd compares MONOTONIC_USEC against.
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const auto usec = static_cast<std::uint64_t>(ts.tv_sec) * 1000000u +
                    static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  std::uint64_t usec = 0;
  // > 0: enabled for this process; 0: no watchdog (or WATCHDOG_PID names another
  // process); < 0: malformed variables, treated as no watchdog.
  const int r = sd_watchdog_enabled(0, &usec);
  if (r < 0) spdlog::warn("ignoring the watchdog settings (WATCHDOG_USEC): error {}", -r);
  if (r <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(usec));
}

}  // namespace notify

SystemdNotifier::SystemdNotifier(asio::io_context& io)
    : timer_(io),
      enabled_(notify::enabled()),
      interval_(enabled_ ? notify::watchdog_interval() : std::nullopt) {}

SystemdNotifier::~SystemdNotifier() {
  stop_watchdog();
}

void SystemdNotifier::start_watchdog() {
  if (!interval_ || feeding_) return;
  feeding_ = true;
  notify::watchdog();
  arm();
}

void SystemdNotifier::stop_watchdog() {
  feeding_ = false;
  timer_.cancel();
}

void SystemdNotifier::arm() {
  // Half the interval, as sd_watchdog_enabled(3) recommends: one late tick is not fatal.
  timer_.expires_after(*interval_ / 2);
  timer_.async_wait([this](boost::system::error_code ec) {
    // The destructor cancels the timer, so an aborted wait may find `this` gone.
    if (ec == asio::error::operation_aborted) return;
    if (!feeding_) return;
    notify::watchdog();
    arm();
  });
}

void SystemdNotifier::ready(const std::string& status) {
  last_status_ = status;
  notify::ready(status);
}

void SystemdNotifier::status(const std::string& line) {
  if (line == last_status_) return;
  last_status_ = line;
  notify::status(line);
}

void SystemdNotifier::stopping() {
  notify::stopping();
}
void SystemdNotifier::reloading() {
  notify::reloading();
}

namespace {

// "NAME, NAME, +3 more" within `budget` bytes (at least the count is always given).
std::string name_list(const std::vector<std::string>& names, std::size_t budget) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string sep = out.empty() ? "" : ", ";
    const std::size_t rest = names.size() - i - 1;
    // Room for this name plus, if more follow, a ", +N more" tail.
    const std::size_t tail = rest ? std::string(", +" + std::to_string(rest) + " more").size() : 0;
    if (out.size() + sep.size() + names[i].size() + tail > budget) {
      out += sep + "+" + std::to_string(names.size() - i) + " more";
      return out;
    }
    out += sep + names[i];
  }
  return out;
}

}  // namespace

std::string status_line(const std::vector<CheckState>& checks, Mode mode,
                        const std::vector<std::string>& gave_up, std::size_t max_len) {
  // Display order: the good news first, then the worse and the not yet known.
  struct Group {
    const char* label;
    std::vector<std::string> names;
    bool named;  // list the checks by name
  };
  std::array<Group, 5> groups{{{"passing", {}, false},
                               {"warning", {}, true},
                               {"critical", {}, true},
                               {"unknown", {}, true},
                               {"pending", {}, false}}};
  for (const auto& c : checks) {
    std::size_t g = 4;
    if (c.published) {
      switch (*c.published) {
        case Status::passing:
          g = 0;
          break;
        case Status::warning:
          g = 1;
          break;
        case Status::critical:
          g = 2;
          break;
        case Status::unknown:
          g = 3;
          break;
      }
    }
    groups[g].names.push_back(c.name);
  }

  // Without names first, to know what the names may use.
  const std::string head =
      std::to_string(checks.size()) + (checks.size() == 1 ? " check" : " checks");
  std::string tail = "; mode " + std::string(to_string(mode));
  if (!gave_up.empty()) {
    std::string rules;
    for (const auto& r : gave_up) rules += (rules.empty() ? "" : ", ") + r;
    tail += "; gave up: " + rules;
  }
  std::vector<std::string> parts;
  std::size_t skeleton = head.size() + 1;  // ":"
  for (const auto& g : groups) {
    if (g.names.empty()) continue;
    parts.push_back(std::to_string(g.names.size()) + " " + g.label);
    skeleton += 1 + parts.back().size() + (parts.size() > 1 ? 1 : 0);  // " " and ","
  }
  std::size_t budget = max_len > skeleton + tail.size() ? max_len - skeleton - tail.size() : 0;
  std::string out = head + (parts.empty() ? "" : ":");
  std::size_t p = 0;
  for (const auto& g : groups) {
    if (g.names.empty()) continue;
    out += (p ? ", " : " ") + parts[p];
    ++p;
    // " (" + ")" cost 3; a list that does not fit even one name is left out.
    if (g.named && budget > 3) {
      const std::string names = name_list(g.names, budget - 3);
      if (!names.empty() && names[0] != '+' && names.size() + 3 <= budget) {
        out += " (" + names + ")";
        budget -= names.size() + 3;
      }
    }
  }
  out += tail;
  if (out.size() > max_len)
    out = max_len > 3 ? out.substr(0, max_len - 3) + "..." : out.substr(0, max_len);
  return out;
}

}  // namespace fener
