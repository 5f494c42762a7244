// Remedy "service_restart" (risk disruptive): restarts one service, such as patroni after
// it lost its DCS connection for good. Through systemd's D-Bus API (RestartUnit, then the
// job's JobRemoved result; success only when the job is "done"), or with `command:` by
// running that command (success only on exit status 0): the way to restart services on
// machines where systemd is not PID 1. Without `command:` on such a machine it fails and
// says to configure one. Either way the restart is bounded by `timeout`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "remedies/remedy.hpp"
#include "src/config.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct ServiceRestartParams {
  std::string unit;                  // with its suffix, e.g. "patroni.service"
  std::vector<std::string> command;  // argv; empty: through systemd
  Duration timeout{std::chrono::seconds(60)};
};

// Throws ConfigError; reads only params and config (no I/O, does not call finish()).
ServiceRestartParams parse_service_restart_params(YamlMap& params, const Config& config);

// "patroni" -> "patroni.service"; names that already end in a unit type keep it.
std::string unit_name(const std::string& service);

// Blocking (D-Bus round trips and the wait for the job): run it through offload().
// Restarts unit through systemd and waits at most timeout for the job to finish.
RemedyOutcome restart_unit_via_systemd(const std::string& unit, Duration timeout);

std::unique_ptr<Remedy> make_service_restart_remedy(YamlMap& params, const Config& config);

}  // namespace fener
