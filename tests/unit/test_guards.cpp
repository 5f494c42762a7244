// Guards on fresh facts: what each refuses, and that not knowing refuses too.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "src/cluster_facts.hpp"
#include "src/guards.hpp"

using namespace fener;

namespace {

// A healthy two-node cluster seen from the replica kaptan2.
ClusterFacts healthy_from_replica() {
  ClusterFacts f;
  f.self_name = "kaptan2";
  f.self_role = "replica";
  f.self_state = "start failed";
  f.self_holds_leader_key = false;
  f.leader_name = "kaptan1";
  f.leader_state = "running";
  f.leader_sysid = "7713085345790792694";
  f.cluster_sysid = "7713085345790792694";
  f.paused = false;
  f.etcd_quorum = true;
  return f;
}

std::string failure(const ClusterFacts& f, Risk r, std::vector<std::string> extra = {}) {
  return first_failure(evaluate_guards(f, r, true, extra));
}

}  // namespace

TEST_CASE("a healthy replica may be reinitialized") {
  CHECK(failure(healthy_from_replica(), Risk::destructive) == "");
}

TEST_CASE("reinit is never allowed on the leader, however it is known") {
  auto f = healthy_from_replica();
  f.self_role = "master";
  CHECK(failure(f, Risk::destructive).rfind("not_leader:", 0) == 0);
  f = healthy_from_replica();
  f.self_role = "primary";
  CHECK(failure(f, Risk::destructive).rfind("not_leader:", 0) == 0);
  f = healthy_from_replica();
  f.leader_name = "kaptan2";
  CHECK(failure(f, Risk::destructive).rfind("not_leader:", 0) == 0);
  f = healthy_from_replica();
  f.self_holds_leader_key = true;
  CHECK(failure(f, Risk::destructive).rfind("not_leader:", 0) == 0);
  f = healthy_from_replica();
  f.self_role.reset();  // Patroni down: the leader key still says who leads
  CHECK(failure(f, Risk::destructive) == "");
}

TEST_CASE("reinit needs a running leader of the same system") {
  auto f = healthy_from_replica();
  f.leader_name.reset();
  CHECK_FALSE(failure(f, Risk::destructive).empty());
  f = healthy_from_replica();
  f.leader_state = "start failed";
  CHECK(failure(f, Risk::destructive).rfind("leader_running:", 0) == 0);
  f = healthy_from_replica();
  f.leader_state.reset();
  CHECK(failure(f, Risk::destructive).rfind("leader_running:", 0) == 0);
  f = healthy_from_replica();
  f.leader_sysid = "1";
  CHECK(failure(f, Risk::destructive).rfind("same_system:", 0) == 0);
  f = healthy_from_replica();
  f.self_sysid = "2";
  CHECK(failure(f, Risk::destructive).rfind("same_system:", 0) == 0);
  f = healthy_from_replica();
  f.cluster_sysid.reset();
  CHECK(failure(f, Risk::destructive).rfind("same_system:", 0) == 0);
}

TEST_CASE("a paused cluster, or not knowing, stops every remedy") {
  auto f = healthy_from_replica();
  f.paused = true;
  CHECK(failure(f, Risk::safe).rfind("not_paused:", 0) == 0);
  f.paused.reset();
  CHECK(failure(f, Risk::safe).rfind("not_paused:", 0) == 0);
  // A node without Patroni and no cluster known: nothing to be paused.
  ClusterFacts ha;
  ha.etcd_quorum = true;
  CHECK(first_failure(evaluate_guards(ha, Risk::disruptive, false, {})) == "");
}

TEST_CASE("disruptive remedies need etcd quorum; safe ones do not") {
  auto f = healthy_from_replica();
  f.etcd_quorum = false;
  CHECK(failure(f, Risk::safe) == "");
  CHECK(failure(f, Risk::disruptive).rfind("etcd_quorum:", 0) == 0);
  f.etcd_quorum.reset();
  CHECK(failure(f, Risk::disruptive).rfind("etcd_quorum:", 0) == 0);
}

TEST_CASE("rules may add guards but not remove them") {
  auto f = healthy_from_replica();
  f.leader_name = "kaptan2";
  CHECK(failure(f, Risk::safe, {"replica_only"}).rfind("replica_only:", 0) == 0);
  auto verdicts =
      evaluate_guards(healthy_from_replica(), Risk::destructive, true, {"leader_running"});
  CHECK(verdicts.size() == 5);  // not duplicated
}

TEST_CASE("Patroni's keys in etcd give leader, pause, system and the leader's API") {
  std::ifstream in(std::string(FENER_TEST_DATA) + "/etcd/v2_service_tree.json");
  std::stringstream ss;
  ss << in.rdbuf();
  ClusterFacts f;
  f.self_name = "kaptan2";
  read_dcs_tree(json::parse(ss.str()), f);
  CHECK(f.leader_name == std::optional<std::string>("kaptan1"));
  CHECK(f.cluster_sysid == std::optional<std::string>("7713085345790792694"));
  CHECK(f.paused == std::optional<bool>(false));
  CHECK(f.leader_api_url == std::optional<std::string>("http://127.0.3.2:8008"));
  CHECK(f.leader_host == std::optional<std::string>("127.0.3.2"));
  CHECK(f.self_holds_leader_key == std::optional<bool>(false));

  auto paused = json::parse(ss.str());
  for (auto& n : paused["node"]["nodes"])
    if (n["key"] == "/service/liman/config") n["value"] = R"({"ttl":30,"pause":true})";
  ClusterFacts p;
  read_dcs_tree(paused, p);
  CHECK(p.paused == std::optional<bool>(true));
}
