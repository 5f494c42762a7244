// The one result type every check returns.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace fener {

using json = nlohmann::json;

// unknown means "could not check": it is never grounds for a remedy.
enum class Status { passing, warning, critical, unknown };

std::string_view to_string(Status s);
std::optional<Status> status_from_string(std::string_view s);

// Order for "worst of": passing < warning < unknown < critical. A definite critical
// outranks not knowing; not knowing outranks a known, tolerable warning.
int severity(Status s);
Status worst(Status a, Status b);

// Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
int nagios_exit_code(Status s);

struct CheckResult {
  Status status = Status::unknown;
  std::string message;                         // one line, for humans
  json evidence = json::object();              // structured facts behind the message
  std::chrono::milliseconds duration{0};       // how long the probe took
  std::chrono::system_clock::time_point at{};  // when it finished

  static CheckResult make(Status s, std::string message, json evidence = json::object());
};

}  // namespace fener
