// Watches Patroni's leader key in etcd (v2: GET /v2/keys/service/SCOPE/leader, then long
// polls with ?wait=true&waitIndex=N) so a leader change reaches the agent-check and the
// checks at once instead of at the next poll. On any failure it moves to the next etcd
// endpoint, re-reads the key, and reports the leader as unknown until it can read again.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include "src/tls.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

namespace asio = boost::asio;

class HttpClient;

// What one answer of etcd v2 says about the leader key.
struct LeaderKeyEvent {
  enum class Kind { value, absent, resync, error } kind = Kind::error;
  std::string leader;            // for value
  std::uint64_t next_index = 0;  // waitIndex for the next poll (0: re-read the key)
  std::string error;             // for error
};

// Parses a GET (plain or ?wait=true) answer on the leader key. Pure: status, body and the
// X-Etcd-Index header. errorCode 100 (key not found) is absent; 401 (the event index was
// cleared) is resync.
LeaderKeyEvent parse_leader_answer(long status, const std::string& body,
                                   std::optional<std::uint64_t> etcd_index);

class LeaderWatch {
 public:
  // leader: the holder's name, "" for no leader, nullopt when etcd cannot be read.
  using OnChange = std::function<void(const std::optional<std::string>& leader)>;

  // tls: how etcd is reached over https (Config::etcd_tls).
  LeaderWatch(asio::io_context& io, HttpClient& http, std::vector<std::string> endpoints,
              std::string scope, OnChange on_change, TlsSettings tls = {});
  ~LeaderWatch();
  void start();
  void stop();

  const std::optional<std::string>& leader() const;
  // Watch rounds that ended in an error, and changes seen; for metrics and tests.
  std::uint64_t errors() const;
  std::uint64_t changes() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace fener
