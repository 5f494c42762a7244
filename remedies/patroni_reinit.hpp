// patroni_reinit: rebuild this replica from the leader, as `patronictl reinit` does:
// POST /reinitialize {"force": true} to this node's Patroni (falling back to
// `patronictl -c FILE reinit --force SCOPE MEMBER` when the REST call cannot be made),
// then wait until the member is running again. Destructive: the local data directory is
// thrown away. The engine runs it only in mode full, under the cluster lock, and only
// when its guards hold: this node is not the leader and does not hold the leader key, a
// running leader of the same system identifier exists, the cluster is not paused, etcd
// has quorum. Patroni itself refuses to reinit a leader, a second line of defence.
// Params: `patronictl` (path, default /usr/bin/patronictl).
#pragma once

#include <memory>

#include "remedies/remedy.hpp"

namespace fener {

std::unique_ptr<Remedy> make_patroni_reinit_remedy(YamlMap& params, const Config& config);

}  // namespace fener
