// The HAProxy agent-check listener: HAProxy connects every agent-inter, may send one line
// (its `agent-send`: primary, replica, read-only, any) and reads one line back. The answer
// comes from memory (AgentServer::Provider), never from a check run on the spot. A client
// that sends nothing is answered for the default role after read_wait; one that neither
// reads nor closes is cut off at the deadline. At the cap, a new connection whose line is
// already there takes the slot of the oldest one that has not sent a byte (closed
// unanswered: HAProxy keeps what it had), so clients that connect and stay silent cannot
// starve the ones that ask; any other new connection is closed at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "src/agent_policy.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

namespace asio = boost::asio;

// The role asked for by what a client sent (its agent-send line, up to the first newline;
// nothing at all when it sent nothing): default_role for an empty line and, with *bad set,
// for a line that names no role. Pure.
AgentRole agent_request_role(std::string_view received, AgentRole default_role,
                             bool* bad = nullptr);

struct AgentServerOptions {
  std::string listen;  // "host:port"; port 0 picks a free one (tests)
  AgentRole default_role = AgentRole::primary;
  Duration read_wait{200};  // how long to wait for an agent-send line
  Duration deadline{2000};  // whole exchange
  std::size_t max_connections = 1024;
};

struct AgentStats {
  std::uint64_t connections = 0;
  std::uint64_t rejected = 0;       // over max_connections, every slot busy with a sender
  std::uint64_t evicted = 0;        // silent ones closed at the cap to make room
  std::uint64_t accept_errors = 0;  // accept() failures (EMFILE, ENFILE, ...)
  std::uint64_t bad_request = 0;    // a line that names no role (answered for the default)
  // answers[role][verdict], AgentRole and AgentVerdict order.
  std::uint64_t answers[4][5] = {};
  nlohmann::json to_json() const;
};

class AgentServer {
 public:
  using Provider = std::function<AgentAnswer(AgentRole)>;
  AgentServer(asio::io_context& io, AgentServerOptions options, Provider provider);
  ~AgentServer();  // stop()s
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  // Throws boost::system::system_error when it cannot bind, std::invalid_argument for a
  // malformed address.
  void start();
  void stop();  // closes the listener and every connection; idempotent
  // Takes up new options, all but `listen` (moving the listener needs a restart), for the
  // connections accepted from now on; open ones finish under the old read_wait.
  void update(const AgentServerOptions& options);
  unsigned short port() const;
  std::size_t connections() const;
  const AgentStats& stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fener
