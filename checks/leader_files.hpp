// leader_files: do this node's allow-listed peer files (config.peer_files, e.g. the data
// directory's .*.swp) match the leader's? Patroni's /cluster names the leader; the leader's
// fener lists its files (GET /v1/peer/files with the api token); this node lists its own.
//   passing   this node is the leader; or every allow-listed file the leader has is here
//             with the same size, sha256 and mode (files only this node has are fine).
//   warning   a file on both nodes whose content or mode differs (named); a name the
//             leader lists that this node refuses to accept (traversal, not allow-listed).
//   critical  a file the leader has is missing here (named, with size, mode and sha256).
//   unknown   Patroni unreachable or without one leader with a host; no api.token; the
//             leader's fener unreachable, refusing the token, answering garbage or as
//             another node; a root that could not be compared on either side and nothing
//             worse. Never grounds for a remedy.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/http_client.hpp"
#include "src/peer_files.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct LeaderFilesParams {
  std::string patroni_url;  // without trailing '/'
  std::string node_name;
  std::vector<PeerFileRoot> roots;  // the roots to compare, from config.peer_files
  int port = kDefaultApiPort;       // the leader's fener API port
  std::string token;
  std::size_t max_size = kPeerFileMaxSize;  // api.max_file_size: larger local files are not listed
};

struct ClusterLeader {
  std::string name;
  std::string host;
};

// The single member of a /cluster document with role leader or standby_leader (master
// and primary accepted too), with its host. nullopt, with why, otherwise.
std::optional<ClusterLeader> find_cluster_leader(const json& cluster, std::string* why);

// "http://host:port", brackets around IPv6 hosts.
std::string peer_api_url(const std::string& host, int port);

// Pure: the status, message and evidence for a comparison against leader `leader` whose
// listing came from `source`.
CheckResult judge_leader_files(const PeerFilesComparison& cmp, const std::string& leader,
                               const std::string& source);

// Asks the leader's fener for its listing and checks that it answered as `leader`.
// On failure returns nullopt and says why (for an unknown result or a refused remedy).
asio::awaitable<std::optional<PeerListing>> fetch_leader_listing(HttpClient& http, std::string url,
                                                                 std::string token,
                                                                 std::string leader,
                                                                 Duration timeout,
                                                                 std::string* why);

// Params: roots (names from peer_files; default all), port (default the port of
// api.listen, else 8009).
std::unique_ptr<Check> make_leader_files_check(YamlMap& params, const Config& config);

// Shared with copy_from_leader: `roots` and `port` read the same way.
std::vector<PeerFileRoot> read_peer_roots_param(YamlMap& params, const Config& config);
int read_peer_port_param(YamlMap& params, const Config& config);

}  // namespace fener
