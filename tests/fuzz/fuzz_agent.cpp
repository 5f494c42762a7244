// The agent-check request: what HAProxy's agent-send line may carry (read up to 256 bytes,
// up to the first newline), then the answer for that role.
#include <string>

#include "src/agent_server.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  bool bad = false;
  const AgentRole role = agent_request_role(input, AgentRole::primary, &bad);
  (void)agent_role_from_string(input);
  AgentPolicy policy;
  AgentFacts facts;
  facts.node = "kaptan1";
  facts.leader_key = "kaptan1";
  const AgentAnswer a = policy.answer(role, facts);
  (void)a.line();
  return 0;
}
