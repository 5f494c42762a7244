// The peer file API's allow-list: which files of which directories a node shows and serves
// to its peers, and the comparison of two nodes' listings. A replica fetches files such as
// PostgreSQL's .swp leftovers from the leader; nothing else may leave the node, so a name
// must be a plain file name (no separator, no "..", no control character), match one of
// its root's patterns and name a regular file: symlinks are never followed nor listed, and
// a symlink swapped in after listing fails the open (O_NOFOLLOW) instead of leaking; the
// opened descriptor alone is judged (fstat): a regular file with one link, within the cap.
// File work here blocks: run it through offload(worker, ...).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "src/config.hpp"

namespace fener {

class ApiServer;
class Worker;

inline constexpr std::size_t kPeerFileMaxSize = std::size_t{64} << 20;  // 64 MiB

struct PeerFile {
  std::string name;
  std::int64_t size = 0;
  std::string mode;    // permission bits in octal, "0600"
  std::string sha256;  // lowercase hex
};

struct PeerRootListing {
  std::string name;
  std::vector<PeerFile> files;  // sorted by name
  std::string error;            // why the root could not be listed; "" when it was
};

struct PeerListing {
  std::string node;
  std::vector<PeerRootListing> roots;
};

// Why name can never be served or written ("path traversal (..)", "absolute path", ...);
// nullopt when it is a plain file name. The second form also requires a root pattern to
// match (fnmatch, FNM_PERIOD off: patterns such as ".*.swp" name dot files on purpose).
std::optional<std::string> invalid_name_reason(std::string_view name);
std::optional<std::string> invalid_name_reason(std::string_view name, const PeerFileRoot& root);

const PeerFileRoot* find_peer_root(const std::vector<PeerFileRoot>& roots, std::string_view name);

std::string mode_string(unsigned mode);  // 0600 -> "0600"
// "0600" / "600" -> 0600; nullopt for anything but 3-4 octal digits.
std::optional<unsigned> parse_mode_string(std::string_view text);

// Why a file was not served.
enum class PeerFileRefusal {
  none,
  bad_name,          // traversal, absolute path, separator, control character, not UTF-8 (400)
  not_allow_listed,  // no pattern of the root matches (403)
  unknown_root,      // (404)
  not_found,         // (404)
  symlink,           // O_NOFOLLOW said ELOOP (403)
  not_regular,       // a directory, FIFO, device... (403)
  hard_link,         // a regular file with more than one link: it may be anything (403)
  too_large,         // over the size cap (413)
  unreadable,        // permission, I/O error (500)
};
int http_status(PeerFileRefusal r);

struct PeerFileRead {
  PeerFileRefusal refusal = PeerFileRefusal::none;
  std::string error;  // for the {"error"} body, names the reason
  PeerFile file;      // name, size, mode, sha256 when read
  std::string bytes;

  bool ok() const { return refusal == PeerFileRefusal::none; }
};

// Blocking. Opens the root with O_DIRECTORY|O_NOFOLLOW, the file with openat and
// O_NOFOLLOW|O_NONBLOCK, requires (fstat on that descriptor) a regular file with a single
// link, no larger than max_size.
PeerFileRead read_peer_file(const PeerFileRoot& root, std::string_view name,
                            std::size_t max_size = kPeerFileMaxSize);

// Blocking. The top level of root only: regular files whose names pass
// invalid_name_reason(name, root), each hashed. Files over max_size are not offered.
PeerRootListing list_peer_root(const PeerFileRoot& root, std::size_t max_size = kPeerFileMaxSize);
PeerListing list_peer_roots(const std::string& node, const std::vector<PeerFileRoot>& roots,
                            std::size_t max_size = kPeerFileMaxSize);

nlohmann::json to_json(const PeerFile& f);
nlohmann::json to_json(const PeerListing& l);
// The GET /v1/peer/files document; nullopt (with why) when it is not one. Names are not
// judged here: a listing may carry names this node refuses (compare_peer_files does).
std::optional<PeerListing> parse_peer_listing(const nlohmann::json& body, std::string* why);

// "/v1/peer/files/<root>/<name>", name percent-encoded.
std::string peer_file_path(std::string_view root, std::string_view name);

struct PeerFileDifference {
  std::string root;
  PeerFile leader;
  std::optional<PeerFile> local;  // nullopt when missing here
  bool content_differs = false;
  bool mode_differs = false;
};

struct PeerFileRefused {
  std::string root;
  std::string name;
  std::string reason;
};

struct PeerFilesComparison {
  std::vector<PeerFileDifference> missing;    // the leader has it, this node does not
  std::vector<PeerFileDifference> differing;  // both have it; sha256 or mode differ
  std::vector<PeerFileRefused> refused;       // leader names this node would never write
  std::vector<std::string> unknown;           // roots that could not be compared, and why
  std::size_t identical = 0;
};

// Pure. For each of `roots` (this node's configuration): the leader's files against the
// local ones. Files only this node has are not a difference (the leader may have cleaned up).
PeerFilesComparison compare_peer_files(const PeerListing& leader, const PeerListing& local,
                                       const std::vector<PeerFileRoot>& roots);

// GET /v1/peer/files and GET /v1/peer/files/<root>/<name>, both token-protected. Serves
// config.peer_files as they are now (a copy); file work runs on worker.
void add_peer_file_routes(ApiServer& server, const Config& config, Worker& worker,
                          std::size_t max_size = kPeerFileMaxSize);

}  // namespace fener
