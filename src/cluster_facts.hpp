// Learns the cluster's state afresh just before a remedy runs (guards never judge on the
// last check round's view): Patroni's keys in etcd through one quorum read, this node's
// and the leader's GET /patroni.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "remedies/remedy.hpp"
#include "src/config.hpp"

namespace fener {

class HttpClient;

// Fills leader, members, pause and the system identifier from an etcd v2 answer to
// GET /v2/keys/service/<scope>/?recursive=true. Pure, for tests.
void read_dcs_tree(const nlohmann::json& answer, ClusterFacts& facts);

// Every fact it cannot learn stays unset. Bounded by `timeout` in total. Without
// with_patroni only etcd is asked (leader key, pause, quorum): enough for the guards of
// safe and disruptive remedies, and quick while this node's Patroni is slow to answer
// (it probes a PostgreSQL that is down).
asio::awaitable<ClusterFacts> gather_facts(HttpClient& http, const Config& config, Duration timeout,
                                           bool with_patroni = true);

}  // namespace fener
