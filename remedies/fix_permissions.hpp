// Remedy "fix_permissions" (risk safe): puts the owner, group and modes of the PostgreSQL
// data directory tree back to what PostgreSQL requires, the guide's "data directory has
// invalid permissions" outage. Directories become 0700 and regular files 0600 (0750/0640
// with group_access, as initdb -g makes them), all owned by owner:group. Only what is
// wrong is touched, so a second run changes nothing and says so.
//
// It refuses, touching nothing: "/", a path outside `roots` (checked on the path as
// written and on the real path of what was opened), a path that is a symlink or not a
// directory, and an owner or group that does not resolve. It never follows a symlink:
// symlinks (pg_wal, tablespaces) and their targets are left alone and reported as
// skipped, as are sockets, FIFOs and devices. It leaves alone hard-linked files owned by
// someone else (chowning one would hand over the file behind its other names) and reports
// them as errors. The walk stops after max_entries entries and says so.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "remedies/remedy.hpp"
#include "src/config.hpp"
#include "src/yaml_reader.hpp"

namespace fener {

struct FixOptions {
  std::string path;  // absolute, normalized; the top of the tree
  uid_t uid = 0;
  gid_t gid = 0;
  std::string owner;  // names of uid and gid, for the report
  std::string group;
  bool group_access = false;       // 0750/0640 instead of 0700/0600
  std::vector<std::string> roots;  // absolute; path must be inside one of them
  std::size_t max_entries = 1'000'000;
};

struct FixChange {
  std::string path;
  uid_t old_uid = 0;
  gid_t old_gid = 0;
  mode_t old_mode = 0;  // permission bits
  bool owner_changed = false;
  bool mode_changed = false;
  mode_t new_mode = 0;
};

struct FixError {
  std::string path;
  int error = 0;     // errno, 0 when not a system error
  std::string what;  // for messages
};

struct FixReport {
  std::string path;
  std::string owner, group;  // the target, "name" or a number
  mode_t dir_mode = 0700;
  mode_t file_mode = 0600;
  std::string refused;      // non-empty: nothing was touched, and this is why
  std::size_t checked = 0;  // entries looked at, the top directory included
  std::size_t owners_changed = 0;
  std::size_t modes_changed = 0;
  std::size_t entries_changed = 0;  // entries with the owner or the mode changed
  std::size_t symlinks_skipped = 0;
  std::size_t others_skipped = 0;  // sockets, FIFOs, devices
  std::size_t error_count = 0;
  std::vector<FixError> errors;       // the first few
  std::vector<FixChange> changes;     // the first 20
  std::vector<std::string> symlinks;  // the first 20 skipped symlinks
  bool truncated = false;             // stopped at max_entries
  std::size_t max_entries = 0;

  // Everything wrong that was seen was fixed, and everything was seen.
  bool ok() const { return refused.empty() && error_count == 0 && !truncated; }
  std::string summary() const;  // one line
  nlohmann::json to_json() const;
};

// Blocking (a filesystem walk): run it through offload(). Never throws for filesystem
// errors; they are in the report.
FixReport fix_tree(const FixOptions& opts);

// "/a//b/" -> "/a/b"; nullopt when not absolute or when a component is "." or "..".
std::optional<std::string> normal_absolute_path(const std::string& path);
// True when path is root or below it (both normalized).
bool path_inside(const std::string& path, const std::string& root);

// The validated YAML parameters; names are resolved when the remedy runs.
struct FixPermissionsParams {
  std::string path;                  // normalized, absolute, not "/"
  std::string owner;                 // user name
  std::optional<std::string> group;  // nullopt: the owner's primary group
  bool group_access = false;
  std::vector<std::string> roots;  // normalized; path is inside one of them
};

// Throws ConfigError; reads only params and config (no I/O, does not call finish()).
FixPermissionsParams parse_fix_permissions_params(YamlMap& params, const Config& config);

std::unique_ptr<Remedy> make_fix_permissions_remedy(YamlMap& params, const Config& config);

}  // namespace fener
