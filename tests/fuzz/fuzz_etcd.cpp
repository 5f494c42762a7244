// etcd's JSON answers to the checks: GET /health (etcd_health), GET /v2/members and
// /v2/members/leader, the v3 gateway's member list and maintenance status (etcd_members).
// Every input is read as each of them, with a 200 and a 503 status.
#include <string>
#include <vector>

#include "checks/etcd_health.hpp"
#include "checks/etcd_members.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  const std::vector<EtcdMember> expected = {
      {"ha", {"http://10.0.0.1:2380"}, {"http://10.0.0.1:2379"}},
      {"kaptan1", {"http://10.0.0.2:2380"}, {"http://10.0.0.2:2379"}},
  };
  const std::vector<std::string> endpoints = {"http://10.0.0.1:2379", "http://10.0.0.2:2379"};
  for (long status : {200L, 503L, 404L}) {
    const HttpResult r = fuzz::answer(status, input);
    (void)classify_etcd_health(endpoints[0], r, expected);
    (void)evaluate_etcd_health(endpoints, {r, r}, expected);
    const EtcdMemberList v2 = parse_etcd_v2_members(r);
    const EtcdMemberList v3 = parse_etcd_v3_members(r);
    (void)parse_etcd_v2_leader(r);
    (void)parse_etcd_v3_status(r, v3.members);
    (void)etcd_v2_disabled(r);
    (void)compare_etcd_members(v2.members, expected);
    (void)compare_etcd_members(v3.members, expected);
    EtcdMembersAnswer a{endpoints[0], r, r, r, r};
    (void)judge_etcd_members({a}, expected, true);
  }
  return 0;
}
