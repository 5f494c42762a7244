#include "checks/datadir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "src/worker.hpp"

namespace fener {

namespace {

// PostgreSQL data dirs are a few levels deep; this only guards fds against a hostile tree.
constexpr int kMaxDepth = 64;
constexpr std::size_t kMessagePaths = 3;
constexpr std::size_t kEvidencePaths = 20;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

EntryType type_of(mode_t m) {
  if (S_ISDIR(m)) return EntryType::directory;
  if (S_ISREG(m)) return EntryType::file;
  if (S_ISLNK(m)) return EntryType::symlink;
  return EntryType::other;
}

std::string_view type_name(EntryType t) {
  switch (t) {
    case EntryType::directory:
      return "directory";
    case EntryType::file:
      return "file";
    case EntryType::symlink:
      return "symlink";
    case EntryType::other:
      return "special file";
  }
  return "special file";
}

std::string join_path(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

DatadirEntry make_entry(std::string path, const struct stat& st) {
  DatadirEntry e;
  e.path = std::move(path);
  e.type = type_of(st.st_mode);
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mode = st.st_mode & 07777;
  return e;
}

// Where a symlink points, without following it. "" when it cannot be read.
std::string read_link_at(int dirfd, const char* name) {
  std::array<char, 4096> buf{};
  const ssize_t n = readlinkat(dirfd, name, buf.data(), buf.size());
  if (n < 0) return "";
  return std::string(buf.data(), static_cast<std::size_t>(n));
}

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

class Walker {
 public:
  Walker(DatadirScan& scan, std::size_t max_entries) : scan_(scan), max_(max_entries) {}

  // Lists the directory open on fd (owned from here on) and descends into subdirectories.
  void walk(int fd, const std::string& dir_path, int depth) {
    DirPtr dir(fdopendir(fd));
    if (!dir) {
      const int err = errno;
      close(fd);
      fail(dir_path, err, depth);
      return;
    }
    const int dfd = dirfd(dir.get());
    std::vector<std::string> subdirs;
    for (;;) {
      errno = 0;
      const dirent* de = readdir(dir.get());
      if (de == nullptr) {
        if (errno != 0) fail(dir_path, errno, depth);
        break;
      }
      const std::string_view name = de->d_name;
      if (name == "." || name == "..") continue;
      if (full()) return;
      std::string path = join_path(dir_path, name);
      struct stat st {};
      if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        // ENOENT: removed since readdir; PostgreSQL recycles WAL and temp files all the time.
        if (errno != ENOENT) fail(path, errno, depth + 1);
        continue;
      }
      DatadirEntry e = make_entry(std::move(path), st);
      if (e.type == EntryType::symlink) e.target = read_link_at(dfd, de->d_name);
      if (e.type == EntryType::directory) subdirs.emplace_back(name);
      scan_.entries.push_back(std::move(e));
    }
    for (const auto& name : subdirs) {
      const std::string path = join_path(dir_path, name);
      if (depth + 1 >= kMaxDepth) {
        scan_.errors.push_back(
            {path, 0, "deeper than " + std::to_string(kMaxDepth) + " levels, not descended"});
        continue;
      }
      // O_NOFOLLOW: a directory swapped for a symlink since fstatat is not followed either.
      const int sub = openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        if (errno != ENOENT) fail(path, errno, depth + 1);
        continue;
      }
      walk(sub, path, depth + 1);
      if (scan_.truncated) return;
    }
  }

 private:
  // Errors count toward the bound too, so a tree of unreadable entries is still bounded.
  bool full() {
    if (scan_.entries.size() + scan_.errors.size() < max_) return false;
    scan_.truncated = true;
    return true;
  }

  void fail(const std::string& path, int err, int depth) {
    DatadirScanError e{path, err, errno_text(err)};
    if (depth == 0) {
      scan_.root_error = std::move(e);
    } else {
      scan_.errors.push_back(std::move(e));
    }
  }

  DatadirScan& scan_;
  std::size_t max_;
};

std::string octal(mode_t mode) {
  std::array<char, 8> buf{};
  std::snprintf(buf.data(), buf.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return buf.data();
}

// Problem kinds found on entries below the root, in message order.
enum Kind {
  wrong_owner,
  wrong_group,
  no_owner_access,
  writable_by_others,
  world_readable,
  unreadable,
  kind_count
};

struct KindInfo {
  const char* key;  // evidence key
  Status status;
};

constexpr std::array<KindInfo, kind_count> kKinds = {{
    {"wrong_owner", Status::critical},
    {"wrong_group", Status::critical},
    {"no_owner_access", Status::critical},
    {"writable_by_others", Status::warning},
    // Patroni writes postgresql.conf and friends 0644; PostgreSQL does not mind. Counted in
    // the evidence, not a finding: a warning on every healthy node would be noise.
    {"world_readable", Status::passing},
    {"unreadable", Status::warning},
}};

std::string describe_kind(Kind k, std::size_t n, const DatadirExpect& ex) {
  const std::string count = std::to_string(n) + (n == 1 ? " entry" : " entries");
  switch (k) {
    case wrong_owner:
      return count + " not owned by " + ex.owner;
    case wrong_group:
      return count + " not in group " + ex.group;
    case no_owner_access:
      return count + " without owner read/write (PostgreSQL cannot use them)";
    case writable_by_others:
      return count + " group- or world-writable";
    case world_readable:
      return count + " world-readable";
    case unreadable:
      return count + " could not be read";
    case kind_count:
      break;
  }
  return count;
}

struct Finding {
  Status status;
  std::string text;
};

std::string list_paths(const std::vector<std::string>& paths, std::size_t total) {
  std::string out;
  for (std::size_t i = 0; i < paths.size() && i < kMessagePaths; ++i) {
    if (i > 0) out += ", ";
    out += paths[i];
  }
  if (total > kMessagePaths) out += ", ...";
  return out;
}

std::vector<mode_t> allowed_modes(GroupAccess g) {
  switch (g) {
    case GroupAccess::automatic:
      return {0700, 0750};
    case GroupAccess::on:
      return {0750};
    case GroupAccess::off:
      return {0700};
  }
  return {0700, 0750};
}

// What PostgreSQL itself accepts for the root: no group write, nothing for others, and the
// owner must be able to use it.
bool postgres_accepts_root_mode(mode_t mode) {
  return (mode & 0027) == 0 && (mode & 0700) == 0700;
}

std::string id_text(const std::string& name, unsigned id, const char* what) {
  return name + " (" + what + " " + std::to_string(id) + ")";
}

}  // namespace

std::string_view to_string(GroupAccess g) {
  switch (g) {
    case GroupAccess::automatic:
      return "auto";
    case GroupAccess::on:
      return "true";
    case GroupAccess::off:
      return "false";
  }
  return "auto";
}

DatadirScan scan_datadir(const std::string& path, std::size_t max_entries) {
  DatadirScan scan;
  scan.path = path;
  while (scan.path.size() > 1 && scan.path.back() == '/') scan.path.pop_back();
  scan.max_entries = max_entries;

  struct stat st {};
  if (lstat(scan.path.c_str(), &st) != 0) {
    scan.root_error = DatadirScanError{scan.path, errno, errno_text(errno)};
    return scan;
  }
  scan.root = make_entry(scan.path, st);
  if (scan.root->type == EntryType::symlink) {
    scan.root->target = read_link_at(AT_FDCWD, scan.path.c_str());
    return scan;
  }
  if (scan.root->type != EntryType::directory) return scan;

  const int fd = open(scan.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    scan.root_error = DatadirScanError{scan.path, errno, errno_text(errno)};
    return scan;
  }
  // Judge what was opened: the root may have been replaced since lstat.
  if (fstat(fd, &st) == 0) scan.root = make_entry(scan.path, st);
  Walker(scan, max_entries).walk(fd, scan.path, 0);
  return scan;
}

CheckResult evaluate_datadir(const DatadirScan& scan, const DatadirExpect& expect) {
  const std::string& p = scan.path;
  json ev = {
      {"path", p},
      {"owner", expect.owner},
      {"group", expect.group},
      {"expected_uid", expect.uid},
      {"expected_gid", expect.gid},
      {"group_access", to_string(expect.group_access)},
  };
  json modes = json::array();
  const auto allowed = allowed_modes(expect.group_access);
  for (mode_t m : allowed) modes.push_back(octal(m));
  ev["allowed_modes"] = modes;

  if (!scan.root) {
    const int err = scan.root_error ? scan.root_error->error : 0;
    const std::string what = scan.root_error ? scan.root_error->what : "not scanned";
    ev["error"] = what;
    // ENOTDIR: a component of the path is a file, so the directory is not there either.
    if (err == ENOENT || err == ENOTDIR) {
      ev["exists"] = false;
      return CheckResult::make(Status::critical, "data directory " + p + " does not exist", ev);
    }
    return CheckResult::make(Status::unknown,
                             "data directory " + p + " could not be checked: " + what, ev);
  }

  const DatadirEntry& root = *scan.root;
  ev["exists"] = true;
  ev["type"] = type_name(root.type);
  ev["uid"] = root.uid;
  ev["gid"] = root.gid;
  ev["mode"] = octal(root.mode);

  if (root.type == EntryType::symlink) {
    ev["target"] = root.target;
    return CheckResult::make(Status::critical,
                             "data directory " + p + " is a symlink to " + root.target +
                                 ", not a directory; set the real directory's path",
                             ev);
  }
  if (root.type != EntryType::directory) {
    return CheckResult::make(
        Status::critical,
        "data directory " + p + " is a " + std::string(type_name(root.type)) + ", not a directory",
        ev);
  }

  std::vector<Finding> findings;
  if (root.uid != expect.uid) {
    findings.push_back({Status::critical, "data directory " + p + " has wrong ownership: uid " +
                                              std::to_string(root.uid) + ", expected " +
                                              id_text(expect.owner, expect.uid, "uid")});
  }
  if (root.gid != expect.gid) {
    findings.push_back({Status::critical, "data directory " + p + " has group gid " +
                                              std::to_string(root.gid) + ", expected " +
                                              id_text(expect.group, expect.gid, "gid")});
  }
  const mode_t perm = root.mode & 0777;
  if (std::find(allowed.begin(), allowed.end(), perm) == allowed.end()) {
    std::string text = "data directory " + p + " has mode " + octal(root.mode) + "; ";
    if (!postgres_accepts_root_mode(perm)) {
      text += "PostgreSQL requires 0700 or 0750";
      if (expect.group_access != GroupAccess::automatic) {
        text += " (group_access: " + std::string(to_string(expect.group_access)) + " wants " +
                octal(allowed.front()) + ")";
      }
    } else if (expect.group_access == GroupAccess::automatic) {
      text += "expected 0700 or 0750";
    } else {
      text += "group_access: " + std::string(to_string(expect.group_access)) + " wants " +
              octal(allowed.front());
    }
    findings.push_back({Status::critical, std::move(text)});
  }
  if (scan.root_error) {
    ev["error"] = scan.root_error->what;
    findings.push_back(
        {Status::unknown, "data directory " + p + " could not be read: " + scan.root_error->what});
  }

  // Entries below the root. Symlinks (pg_wal, tablespaces) are recorded, not judged: their
  // own owner and mode mean nothing to PostgreSQL, and their targets are not followed.
  std::array<std::size_t, kind_count> counts{};
  std::array<std::vector<std::string>, kind_count> examples;
  auto note = [&](Kind k, const std::string& path) {
    if (examples[k].size() < kEvidencePaths) examples[k].push_back(path);
    ++counts[k];
  };
  json symlinks = json::array();
  std::size_t symlink_count = 0;
  for (const auto& e : scan.entries) {
    if (e.type == EntryType::symlink) {
      if (symlinks.size() < kEvidencePaths)
        symlinks.push_back({{"path", e.path}, {"target", e.target}});
      ++symlink_count;
      continue;
    }
    if (e.uid != expect.uid) note(wrong_owner, e.path);
    if (e.gid != expect.gid) note(wrong_group, e.path);
    const mode_t need = e.type == EntryType::directory ? 0700 : 0600;
    if ((e.mode & need) != need) note(no_owner_access, e.path);
    if ((e.mode & 0022) != 0) note(writable_by_others, e.path);
    if ((e.mode & 0004) != 0) note(world_readable, e.path);
  }
  json errors = json::array();
  for (const auto& err : scan.errors) {
    if (errors.size() < kEvidencePaths) errors.push_back({{"path", err.path}, {"error", err.what}});
    note(unreadable, err.path);
  }

  json count_ev = json::object();
  json example_ev = json::object();
  for (int k = 0; k < kind_count; ++k) {
    count_ev[kKinds[k].key] = counts[k];
    if (counts[k] == 0) continue;
    example_ev[kKinds[k].key] = examples[k];
    if (kKinds[k].status == Status::passing) continue;
    std::vector<std::string> named = examples[k];
    if (k == unreadable) {
      // Say why, too: "Permission denied" and a vanished mount call for different fixes.
      for (std::size_t i = 0; i < named.size(); ++i) named[i] += " (" + scan.errors[i].what + ")";
    }
    findings.push_back({kKinds[k].status, describe_kind(static_cast<Kind>(k), counts[k], expect) +
                                              ": " + list_paths(named, counts[k])});
  }
  ev["counts"] = count_ev;
  ev["examples"] = example_ev;
  ev["entries_scanned"] = scan.entries.size();
  ev["truncated"] = scan.truncated;
  ev["max_entries"] = scan.max_entries;
  ev["symlinks"] = symlinks;
  ev["symlink_count"] = symlink_count;
  ev["errors"] = errors;

  const std::string truncated_note = scan.truncated ? "; walk stopped at max_entries " +
                                                          std::to_string(scan.max_entries) +
                                                          ", the rest was not checked"
                                                    : "";

  if (findings.empty()) {
    return CheckResult::make(Status::passing,
                             "data directory " + p + ": owner " + expect.owner + ":" +
                                 expect.group + ", mode " + octal(root.mode) + ", " +
                                 std::to_string(scan.entries.size()) + " entries ok" +
                                 truncated_note,
                             ev);
  }

  // Worst first, so a truncated one-line view still shows what matters.
  std::stable_sort(findings.begin(), findings.end(), [](const Finding& a, const Finding& b) {
    return severity(a.status) > severity(b.status);
  });
  Status status = Status::passing;
  std::string message;
  for (const auto& f : findings) {
    status = worst(status, f.status);
    if (!message.empty()) message += "; ";
    message += f.text;
  }
  // Entry findings read as a list; say which directory they are about.
  if (message.rfind("data directory ", 0) != 0) message = "data directory " + p + ": " + message;
  return CheckResult::make(status, message + truncated_note, ev);
}

namespace {

// getpwnam_r and friends: retry with a larger buffer on ERANGE.
template <class Lookup>
bool nss_lookup(Lookup lookup, const std::string& what) {
  std::vector<char> buf(4096);
  for (;;) {
    bool found = false;
    const int rc = lookup(buf, found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    // Not-found is reported as 0 with no result, or as one of these by some NSS modules.
    if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF) return found && rc == 0;
    throw std::runtime_error("cannot look up " + what + ": " + errno_text(rc));
  }
}

}  // namespace

DatadirExpect resolve_datadir_expect(const std::string& owner,
                                     const std::optional<std::string>& group,
                                     GroupAccess group_access) {
  DatadirExpect ex;
  ex.owner = owner;
  ex.group_access = group_access;

  const bool user_found = nss_lookup(
      [&](std::vector<char>& buf, bool& found) {
        struct passwd pw {};
        struct passwd* out = nullptr;
        const int rc = getpwnam_r(owner.c_str(), &pw, buf.data(), buf.size(), &out);
        if (rc == 0 && out != nullptr) {
          found = true;
          ex.uid = pw.pw_uid;
          ex.gid = pw.pw_gid;
        }
        return rc;
      },
      "user " + owner);
  if (!user_found) throw std::runtime_error("user " + owner + " does not exist");

  if (group) {
    const bool group_found = nss_lookup(
        [&](std::vector<char>& buf, bool& found) {
          struct group gr {};
          struct group* out = nullptr;
          const int rc = getgrnam_r(group->c_str(), &gr, buf.data(), buf.size(), &out);
          if (rc == 0 && out != nullptr) {
            found = true;
            ex.gid = gr.gr_gid;
          }
          return rc;
        },
        "group " + *group);
    if (!group_found) throw std::runtime_error("group " + *group + " does not exist");
    ex.group = *group;
    return ex;
  }

  // The owner's primary group; a gid without a group entry is still a valid gid.
  const bool named = nss_lookup(
      [&](std::vector<char>& buf, bool& found) {
        struct group gr {};
        struct group* out = nullptr;
        const int rc = getgrgid_r(ex.gid, &gr, buf.data(), buf.size(), &out);
        if (rc == 0 && out != nullptr) {
          found = true;
          ex.group = gr.gr_name;
        }
        return rc;
      },
      "group " + std::to_string(ex.gid));
  if (!named) ex.group = std::to_string(ex.gid);
  return ex;
}

DatadirParams parse_datadir_params(YamlMap& params, const Config& config) {
  DatadirParams out;
  if (auto path = params.str("path")) {
    if (path->empty()) params.fail("path", "must not be empty");
    out.path = *path;
  } else {
    out.path = config.pg_data_dir;
  }
  if (out.path.empty()) params.fail_here("no data directory: set path or give --patroni-config");
  if (out.path.front() != '/') {
    const std::string problem = "expected an absolute path, got " + out.path;
    if (params.has("path")) params.fail("path", problem);
    params.fail_here("data directory from patroni.yml: " + problem);
  }

  out.owner = params.str("owner").value_or(config.pg_owner);
  if (out.owner.empty()) params.fail("owner", "must be a user name, got an empty string");

  if (auto group = params.str("group")) {
    if (group->empty()) params.fail("group", "must be a group name, got an empty string");
    out.group = *group;
  }

  YAML::Node ga = params.raw("group_access");
  if (ga.IsDefined() && !ga.IsNull()) {
    const std::string s = ga.IsScalar() ? ga.Scalar() : "";
    if (s == "auto") {
      out.group_access = GroupAccess::automatic;
    } else if (s == "true" || s == "yes" || s == "on") {
      out.group_access = GroupAccess::on;
    } else if (s == "false" || s == "no" || s == "off") {
      out.group_access = GroupAccess::off;
    } else {
      params.fail("group_access", "expected auto, true or false");
    }
  }

  if (auto n = params.integer("max_entries", 1, 10'000'000))
    out.max_entries = static_cast<std::size_t>(*n);
  return out;
}

namespace {

class DatadirCheck final : public Check {
 public:
  explicit DatadirCheck(DatadirParams params) : params_(std::move(params)) {}

  asio::awaitable<CheckResult> run(CheckContext& ctx) override {
    struct Probe {
      std::optional<std::string> error;  // a name did not resolve
      DatadirExpect expect;
      DatadirScan scan;
    };
    // NSS lookups may block too (LDAP, sssd), so they run on the worker with the scan.
    // A named lambda, not a temporary in the co_await expression: GCC 12 destroys such
    // temporaries twice (a double free of the captured strings).
    auto job = [p = params_]() {
      Probe out;
      try {
        out.expect = resolve_datadir_expect(p.owner, p.group, p.group_access);
      } catch (const std::runtime_error& e) {
        out.error = e.what();
        return out;
      }
      out.scan = scan_datadir(p.path, p.max_entries);
      return out;
    };
    Probe probe = co_await offload(ctx.worker, std::move(job));
    if (probe.error) {
      json ev = {{"path", params_.path}, {"owner", params_.owner}};
      if (params_.group) ev["group"] = *params_.group;
      co_return CheckResult::make(Status::unknown,
                                  "data directory " + params_.path + ": " + *probe.error, ev);
    }
    co_return evaluate_datadir(probe.scan, probe.expect);
  }

 private:
  DatadirParams params_;
};

}  // namespace

std::unique_ptr<Check> make_datadir_check(YamlMap& params, const Config& config) {
  return std::make_unique<DatadirCheck>(parse_datadir_params(params, config));
}

}  // namespace fener
