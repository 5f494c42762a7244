// etcd v2 keys answers: Patroni's tree read before a remedy (cluster facts) and by the
// haproxy check, the leader key and its watch (with and without an X-Etcd-Index), the
// fleet directory with each node's summary, and Patroni's member registrations.
#include <chrono>
#include <string>
#include <vector>

#include "checks/haproxy.hpp"
#include "src/cluster_facts.hpp"
#include "src/fleet.hpp"
#include "src/leader_watch.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  if (const auto doc = parse_json(input)) {
    ClusterFacts facts;
    facts.self_name = "kaptan1";
    read_dcs_tree(*doc, facts);
    if (facts.evidence.contains("members"))
      (void)patroni_members_from_dcs(facts.evidence["members"]);
    std::string why;
    (void)summary_from_json(*doc, &why);
  }
  for (long status : {200L, 400L, 404L, 500L}) {
    (void)parse_leader_answer(status, input, std::nullopt);
    (void)parse_leader_answer(status, input, 18446744073709551615ULL);
  }
  const auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'795'000'000));
  const std::vector<std::string> members = parse_member_names(input);
  std::string why;
  if (auto keys = parse_fleet_listing(200, input, &why)) {
    const FleetView v = judge_fleet("liman", *keys, members, now);
    (void)fleet_json(v);
    (void)fleet_table(v);
  }
  (void)parse_fleet_listing(404, input, &why);
  // One node's summary as stored under its key, with and without a TTL.
  const FleetView v = judge_fleet(
      "liman", {{"kaptan1", input, std::nullopt}, {"kaptan2", input, 25}}, {"kaptan1"}, now);
  (void)fleet_json(v);
  (void)fleet_table(v);
  return 0;
}
