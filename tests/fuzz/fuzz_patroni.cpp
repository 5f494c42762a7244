// Patroni's REST answers: GET /patroni (patroni_node, with GET /cluster for a replica's
// lag) and GET /cluster (patroni_cluster). Every input is read as both, with a 200 and a
// 503 status.
#include <optional>
#include <string>

#include "checks/patroni_cluster.hpp"
#include "checks/patroni_node.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  PatroniNodeParams node;
  node.url = "http://10.0.0.2:8008";
  node.member = "kaptan1";
  PatroniClusterParams cluster;
  cluster.urls = {"http://10.0.0.2:8008"};
  cluster.expected_members = 2;
  cluster.scope = "liman";
  for (long status : {200L, 503L}) {
    const HttpResult r = fuzz::answer(status, input);
    (void)patroni_node_wants_cluster(r);
    (void)evaluate_patroni_node(r, std::nullopt, node);
    (void)evaluate_patroni_node(r, r, node);
    (void)patroni_cluster_usable(r);
    (void)evaluate_patroni_cluster({{"http://10.0.0.2:8008/cluster", r}}, cluster);
    // judge_patroni_cluster expects what patroni_cluster_usable accepts.
    if (const auto doc = parse_json(input); doc && patroni_cluster_usable(r))
      (void)judge_patroni_cluster(*doc, cluster);
    if (const auto doc = parse_json(input)) (void)patroni_member_lag(*doc);
  }
  (void)parse_size(input);
  (void)classify_patroni_state(input);
  return 0;
}
