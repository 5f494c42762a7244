// patroni_restart: POST /restart on this node's Patroni, which stops PostgreSQL if it
// runs and starts it again, waiting until it accepts connections. The quick way back
// after the cause of a failed start is fixed: Patroni's own retry would wait for its next
// loop (loop_wait, 10 s by default). Disruptive: a running PostgreSQL restarts.
// Params: `when_down: true` restarts only when nothing accepts TCP connections on
// PostgreSQL's listen address (checked afresh; otherwise nothing to do). The ladder
// step's `timeout` bounds the request.
#pragma once

#include <memory>

#include "remedies/remedy.hpp"

namespace fener {

std::unique_ptr<Remedy> make_patroni_restart_remedy(YamlMap& params, const Config& config);

}  // namespace fener
