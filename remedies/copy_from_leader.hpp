// copy_from_leader (risk safe): brings this node's allow-listed peer files in line with
// the leader's, e.g. the .*.swp files PostgreSQL tooling expects in the data directory.
// Only the leader named by the engine's fresh facts is a source, and only when its fener
// answers as that node (X-Fener-Node and the listing's node). Every file is fetched with
// the api token, checked against the listed size and SHA-256 (and the X-Fener-Sha256 the
// leader sent with it), and installed atomically: a 0600 temp file created with O_EXCL and
// O_NOFOLLOW in the same directory, written and fsynced, given to the owner and the
// leader's mode (read/write bits within 0644 only), renamed over the name (never over a
// symlink or a non-regular file), then the directory fsynced. Names are judged by
// invalid_name_reason before anything touches the disk. Files only this node has stay.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "remedies/remedy.hpp"
#include "src/config.hpp"
#include "src/peer_files.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct CopyFromLeaderParams {
  std::vector<PeerFileRoot> roots;  // default config.peer_files
  int port = kDefaultApiPort;       // the leader's fener API port
  std::string owner;                // default config.pg_owner
  Duration timeout{std::chrono::seconds(30)};
  std::string token;      // config.api.token
  std::string node_name;  // this node
  std::size_t max_size = kPeerFileMaxSize;
};

// True for modes a copied file may get: read/write bits within 0644, owner-readable
// (0600, 0640, 0644, 0400, 0440, 0444...). Never execute, setuid, setgid or sticky bits.
bool copy_mode_allowed(unsigned mode);

struct InstalledFile {
  bool ok = false;
  std::string error;  // why not, when !ok
  uid_t uid = 0;
  gid_t gid = 0;
};

// Blocking (run through offload). Installs bytes as dir/name owned by owner (its primary
// group) with mode, atomically, as the header describes. Re-judges name and mode itself.
InstalledFile install_peer_file(const std::string& dir, const std::string& name,
                                const std::string& bytes, unsigned mode, const std::string& owner);

// "copy .a.swp, .b.swp from leader kaptan1 (127.0.1.2:8009) into /data/x"
std::string describe_copy(const std::vector<std::string>& names, const std::string& leader,
                          const std::string& endpoint, const std::vector<std::string>& dirs,
                          const std::string& verb = "copy");

// Params: roots (names from peer_files; default all), port (default the port of
// api.listen, else 8009), owner (default pg_owner), timeout (default 30s).
std::unique_ptr<Remedy> make_copy_from_leader_remedy(YamlMap& params, const Config& config);

}  // namespace fener
