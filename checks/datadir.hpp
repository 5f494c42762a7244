// Check "datadir": ownership and modes of the PostgreSQL data directory tree, judged by
// the rules PostgreSQL itself applies at start (the guide's "data directory ... has
// invalid permissions" outage). Never follows symlinks: pg_wal and tablespaces may be
// symlinks; they are recorded, not descended into.
//   passing  - the root is a real directory owned by owner:group with mode 0700 (or 0750
//              where group access is allowed) and every entry below is owned by
//              owner:group, usable by the owner and not writable by others.
//   warning  - PostgreSQL still runs, but entries are group- or world-writable
//              (security), or some entries below the root could not be read. World-readable
//              entries (Patroni writes its config files 0644) are counted in the evidence only.
//   critical - PostgreSQL refuses to start or cannot use its files: the root is missing,
//              not a directory, a symlink, has the wrong owner/group or mode; entries are
//              owned by another user or group or lack owner read/write.
//   unknown  - could not check: the root itself could not be stat'ed or read, or the
//              owner/group names do not resolve.
// A walk stopped at max_entries is noted in message and evidence; it never worsens the status.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/check.hpp"
#include "src/config.hpp"
#include "src/result.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

enum class EntryType { directory, file, symlink, other };

// One lstat/fstatat record; path is absolute (the root's path joined with the names).
struct DatadirEntry {
  std::string path;
  EntryType type = EntryType::other;
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;     // permission bits only (mode & 07777)
  std::string target;  // symlinks: where they point (not followed)
};

struct DatadirScanError {
  std::string path;
  int error = 0;     // errno, 0 when not a system error
  std::string what;  // for messages, e.g. "Permission denied"
};

struct DatadirScan {
  std::string path;  // the root, trailing slashes removed
  std::size_t max_entries = 0;
  // The root's own record; nullopt when lstat failed (root_error says why).
  std::optional<DatadirEntry> root;
  // lstat of the root failed (root empty), or the root could not be opened/listed.
  std::optional<DatadirScanError> root_error;
  std::vector<DatadirEntry> entries;     // everything below the root that was reached
  std::vector<DatadirScanError> errors;  // entries below the root that could not be read
  bool truncated = false;                // stopped at max_entries; the rest was not seen
};

// Blocking: run it through offload(). Walks with lstat/openat(O_NOFOLLOW|O_DIRECTORY)/
// fstatat(AT_SYMLINK_NOFOLLOW); records at most max_entries entries and errors together.
DatadirScan scan_datadir(const std::string& path, std::size_t max_entries);

// auto: the root may be 0700 or 0750; on: 0750 expected; off: 0700 expected.
enum class GroupAccess { automatic, on, off };
std::string_view to_string(GroupAccess g);

struct DatadirExpect {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string owner;  // names, for messages
  std::string group;
  GroupAccess group_access = GroupAccess::automatic;
};

// Pure: judges a scan against the expectation.
CheckResult evaluate_datadir(const DatadirScan& scan, const DatadirExpect& expect);

// Blocking (NSS may do I/O): owner's uid and primary group, or the named group. Throws
// std::runtime_error with a one-line message when a name does not resolve.
DatadirExpect resolve_datadir_expect(const std::string& owner,
                                     const std::optional<std::string>& group,
                                     GroupAccess group_access);

// The validated YAML parameters.
struct DatadirParams {
  std::string path;                  // absolute
  std::string owner;                 // user name
  std::optional<std::string> group;  // nullopt: the owner's primary group
  GroupAccess group_access = GroupAccess::automatic;
  std::size_t max_entries = 10000;
};

// Throws ConfigError; reads only params and config (no I/O, does not call finish()).
DatadirParams parse_datadir_params(YamlMap& params, const Config& config);

std::unique_ptr<Check> make_datadir_check(YamlMap& params, const Config& config);

}  // namespace fener
