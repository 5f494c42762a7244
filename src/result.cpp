#include "src/result.hpp"

namespace fener {

std::string_view to_string(Status s) {
  switch (s) {
    case Status::passing:
      return "passing";
    case Status::warning:
      return "warning";
    case Status::critical:
      return "critical";
    case Status::unknown:
      return "unknown";
  }
  return "unknown";
}

std::optional<Status> status_from_string(std::string_view s) {
  if (s == "passing") return Status::passing;
  if (s == "warning") return Status::warning;
  if (s == "critical") return Status::critical;
  if (s == "unknown") return Status::unknown;
  return std::nullopt;
}

int severity(Status s) {
  switch (s) {
    case Status::passing:
      return 0;
    case Status::warning:
      return 1;
    case Status::unknown:
      return 2;
    case Status::critical:
      return 3;
  }
  return 2;
}

Status worst(Status a, Status b) {
  return severity(a) >= severity(b) ? a : b;
}

int nagios_exit_code(Status s) {
  switch (s) {
    case Status::passing:
      return 0;
    case Status::warning:
      return 1;
    case Status::critical:
      return 2;
    case Status::unknown:
      return 3;
  }
  return 3;
}

CheckResult CheckResult::make(Status s, std::string message, json evidence) {
  CheckResult r;
  r.status = s;
  r.message = std::move(message);
  r.evidence = evidence.is_null() ? json::object() : std::move(evidence);
  return r;
}

}  // namespace fener
