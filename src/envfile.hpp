// systemd EnvironmentFile= parsing (etcd's /etc/etcd/etcd.conf, /etc/default/etcd) and the
// etcd values found in them. Pure: callers read the files.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fener {

struct EnvEntry {
  std::string key;
  std::string value;
  int line = 0;  // 1-based line where the assignment starts
};

// A line systemd does not turn into a variable (or accepts but probably not as meant).
struct EnvIgnored {
  int line = 0;
  std::string text;    // the line as written, continuation lines joined with '\n'
  std::string reason;  // why, and what to write instead when we can tell
};

struct EnvFile {
  std::vector<EnvEntry> entries;     // valid assignments, in file order
  std::vector<EnvIgnored> ignored;   // lines that set nothing
  std::vector<EnvIgnored> warnings;  // assignments that work, but likely not as intended
  // The effective entry for key: systemd lets the last assignment win.
  const EnvEntry* find(std::string_view key) const;
};

// Parses like systemd's EnvironmentFile= (env-file.c, v254+): KEY=VALUE with whitespace
// around '=' allowed; '#' or ';' first on a line makes a comment; "..." values unescape
// \" \\ \` \$ and keep other backslashes; '...' values are literal; unquoted values drop
// backslashes before any character and lose trailing whitespace; a backslash before the
// newline continues the value. Keys must be [A-Za-z_][A-Za-z0-9_]*.
EnvFile parse_env_file(std::string_view text);

// True for "key: value" lines (YAML or etcd config-file syntax).
bool looks_like_yaml(std::string_view line);
// "enable-v2" -> "ETCD_ENABLE_V2": the environment form of an etcd flag or config key.
std::string etcd_env_name_for_flag(std::string_view flag);

// One "name=url" item of ETCD_INITIAL_CLUSTER. A name may appear several times.
struct ClusterMember {
  std::string name;
  std::string url;
};

struct InitialCluster {
  std::vector<ClusterMember> members;      // in order, well-formed items only
  std::vector<std::string> errors;         // one per malformed item, naming it
  std::vector<std::string> names() const;  // distinct, in order
  std::vector<std::string> urls_of(std::string_view name) const;  // every URL given for name
};

// Parses "ha=http://10.0.0.1:2380,kaptan1=http://10.0.0.2:2380". Empty items are skipped
// as etcd does; items without '=', with an empty name or with a bad URL are errors.
InitialCluster parse_initial_cluster(std::string_view value);

// Splits "http://a:2379, http://b:2379" on commas, trimming spaces and dropping empties.
std::vector<std::string> split_url_list(std::string_view value);

struct UrlParts {
  std::string scheme;  // "http", "https", "unix", "unixs"
  std::string host;    // without brackets for IPv6
  int port = 0;        // 0 when the URL names none
  std::string path;    // from the first '/', '?' or '#'; "" when none
};

// Parses an etcd URL ("scheme://host[:port][/path]"); nullopt when it has no scheme or host.
std::optional<UrlParts> parse_url(std::string_view url);

}  // namespace fener
