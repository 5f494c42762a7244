// What a reload (SIGHUP) can change in a running daemon. The checks, the rules, the
// alerts, the mode, the agent's settings and the log level are taken up at once. The
// listen addresses, the state directory, the audit file, the fleet publisher and the etcd
// leader watch are set up once at start: a reload that changes what they read leaves them
// as they are, and says so, until the next start (Patroni's "pending restart").
#pragma once

#include <string>
#include <vector>

#include "src/config.hpp"

namespace fener {

// The settings whose new value in `next` stays out of force until a restart, in
// fener.yaml's words ("api.listen"), in a fixed order. Those that only the start-up code
// reads are set back to `running`'s values in `next`, so the configuration in force reads
// true; the ones the checks take up at once (etcd endpoints and TLS, node name, scope,
// Patroni's DCS) keep their new value and are listed for the leader watch and the fleet.
std::vector<std::string> hold_start_only_settings(Config& next, const Config& running);

}  // namespace fener
