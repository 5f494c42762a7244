#include "remedies/fix_permissions.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include "checks/datadir.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

// PostgreSQL data dirs are a few levels deep; this only guards fds against a hostile tree.
constexpr int kMaxDepth = 64;
constexpr std::size_t kReportedChanges = 20;
constexpr std::size_t kReportedErrors = 10;
constexpr std::size_t kMessageErrors = 3;

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

std::string octal(mode_t mode) {
  std::array<char, 8> buf{};
  std::snprintf(buf.data(), buf.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return buf.data();
}

std::string join_path(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

std::string type_name(mode_t m) {
  if (S_ISREG(m)) return "regular file";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISFIFO(m)) return "FIFO";
  if (S_ISCHR(m) || S_ISBLK(m)) return "device";
  return "special file";
}

std::string plural(std::size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};
using DirPtr = std::unique_ptr<DIR, DirCloser>;

// Where an open descriptor really is, from /proc: the path as written may pass through
// symlinked directories.
std::optional<std::string> real_path_of(int fd) {
  std::array<char, PATH_MAX> buf{};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = readlink(link.c_str(), buf.data(), buf.size() - 1);
  if (n <= 0) return std::nullopt;
  return std::string(buf.data(), static_cast<std::size_t>(n));
}

std::optional<std::string> real_path(const std::string& path) {
  char* p = realpath(path.c_str(), nullptr);
  if (p == nullptr) return std::nullopt;
  std::string out = p;
  std::free(p);
  return out;
}

std::string list(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

class Fixer {
 public:
  Fixer(const FixOptions& opts, FixReport& report) : opts_(opts), rep_(report) {}

  // The top directory, open on fd (owned from here on): fix it, then everything below.
  void run(int fd, const std::string& path) {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      error(path, errno, "stat");
      close(fd);
      return;
    }
    ++rep_.checked;
    fix_open(fd, st, path, rep_.dir_mode);
    walk(fd, path, 0);
  }

 private:
  // Lists the directory open on fd (owned from here on), fixes its entries and descends.
  void walk(int fd, const std::string& dir_path, int depth) {
    DirPtr dir(fdopendir(fd));
    if (!dir) {
      const int err = errno;
      close(fd);
      error(dir_path, err, "open");
      return;
    }
    const int dfd = dirfd(dir.get());
    std::vector<std::string> subdirs;
    for (;;) {
      errno = 0;
      const dirent* de = readdir(dir.get());
      if (de == nullptr) {
        if (errno != 0) error(dir_path, errno, "list");
        break;
      }
      const std::string_view name = de->d_name;
      if (name == "." || name == "..") continue;
      if (full()) return;
      const std::string path = join_path(dir_path, name);
      struct stat st {};
      if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        // ENOENT: removed since readdir; PostgreSQL recycles WAL and temp files all the time.
        if (errno != ENOENT) error(path, errno, "stat");
        continue;
      }
      ++rep_.checked;
      if (S_ISLNK(st.st_mode)) {
        skip_symlink(path);
      } else if (S_ISDIR(st.st_mode)) {
        subdirs.emplace_back(name);  // fixed through its own descriptor below
      } else if (S_ISREG(st.st_mode)) {
        fix_file(dfd, de->d_name, st, path);
      } else {
        ++rep_.others_skipped;  // a socket's mode is its access control: not ours to change
      }
    }
    for (const auto& name : subdirs) {
      const std::string path = join_path(dir_path, name);
      if (depth + 1 >= kMaxDepth) {
        error(path, 0, "deeper than " + std::to_string(kMaxDepth) + " levels, not descended");
        continue;
      }
      // O_NOFOLLOW: a directory swapped for a symlink since fstatat is not followed either.
      const int sub = openat(dfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) {
        if (errno == ELOOP) {
          skip_symlink(path);
        } else if (errno != ENOENT) {
          error(path, errno, "open");
        }
        continue;
      }
      struct stat st {};
      if (fstat(sub, &st) != 0) {
        error(path, errno, "stat");
        close(sub);
        continue;
      }
      fix_open(sub, st, path, rep_.dir_mode);
      walk(sub, path, depth + 1);
      if (rep_.truncated) return;
    }
  }

  bool full() {
    if (rep_.checked < opts_.max_entries) return false;
    rep_.truncated = true;
    return true;
  }

  bool owner_wrong(const struct stat& st) const {
    return st.st_uid != opts_.uid || st.st_gid != opts_.gid;
  }

  // A directory, through its descriptor: no path lookup between looking and changing.
  void fix_open(int fd, const struct stat& st, const std::string& path, mode_t want) {
    FixChange c{path, st.st_uid, st.st_gid, static_cast<mode_t>(st.st_mode & 07777)};
    if (owner_wrong(st)) {
      if (fchown(fd, opts_.uid, opts_.gid) == 0) {
        c.owner_changed = true;
      } else {
        error(path, errno, "chown");
      }
    }
    if (c.old_mode != want) {
      if (fchmod(fd, want) == 0) {
        c.mode_changed = true;
        c.new_mode = want;
      } else {
        error(path, errno, "chmod");
      }
    }
    record(std::move(c));
  }

  // A regular file, by name in its directory, never through a symlink (the names may
  // have been swapped since fstatat).
  void fix_file(int dfd, const char* name, const struct stat& st, const std::string& path) {
    const mode_t want = rep_.file_mode;
    FixChange c{path, st.st_uid, st.st_gid, static_cast<mode_t>(st.st_mode & 07777)};
    if (!owner_wrong(st) && c.old_mode == want) return;
    if (st.st_uid != opts_.uid && st.st_nlink > 1) {
      error(path, 0,
            "has " + std::to_string(st.st_nlink) + " hard links and belongs to uid " +
                std::to_string(st.st_uid) + "; left alone");
      return;
    }
    if (owner_wrong(st)) {
      if (fchownat(dfd, name, opts_.uid, opts_.gid, AT_SYMLINK_NOFOLLOW) == 0) {
        c.owner_changed = true;
      } else {
        error(path, errno, "chown");
      }
    }
    // Also after a chown: it clears set-id bits, and the mode was compared before it.
    if (c.old_mode != want) {
      // glibc does this through an O_PATH|O_NOFOLLOW descriptor and fails with
      // EOPNOTSUPP on a symlink, so a file swapped for one is not followed.
      if (fchmodat(dfd, name, want, AT_SYMLINK_NOFOLLOW) == 0) {
        c.mode_changed = true;
        c.new_mode = want;
      } else {
        error(path, errno, "chmod");
      }
    }
    record(std::move(c));
  }

  void record(FixChange c) {
    if (!c.owner_changed && !c.mode_changed) return;
    if (c.owner_changed) ++rep_.owners_changed;
    if (c.mode_changed) ++rep_.modes_changed;
    ++rep_.entries_changed;
    if (rep_.changes.size() < kReportedChanges) rep_.changes.push_back(std::move(c));
  }

  void skip_symlink(const std::string& path) {
    ++rep_.symlinks_skipped;
    if (rep_.symlinks.size() < kReportedChanges) rep_.symlinks.push_back(path);
  }

  void error(const std::string& path, int err, const std::string& what) {
    ++rep_.error_count;
    if (rep_.errors.size() >= kReportedErrors) return;
    rep_.errors.push_back({path, err, err != 0 ? what + ": " + errno_text(err) : what});
  }

  const FixOptions& opts_;
  FixReport& rep_;
};

}  // namespace

std::optional<std::string> normal_absolute_path(const std::string& path) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  std::string out;
  std::size_t i = 0;
  while (i < path.size()) {
    const std::size_t end = std::min(path.find('/', i), path.size());
    const std::string_view part(path.data() + i, end - i);
    if (part == "." || part == "..") return std::nullopt;
    if (!part.empty()) {
      out += '/';
      out += part;
    }
    i = end + 1;
  }
  return out.empty() ? "/" : out;
}

bool path_inside(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  if (path.size() < root.size() || path.compare(0, root.size(), root) != 0) return false;
  return path.size() == root.size() || path[root.size()] == '/';
}

FixReport fix_tree(const FixOptions& opts) {
  FixReport rep;
  rep.path = opts.path;
  rep.owner = opts.owner.empty() ? std::to_string(opts.uid) : opts.owner;
  rep.group = opts.group.empty() ? std::to_string(opts.gid) : opts.group;
  rep.dir_mode = opts.group_access ? 0750 : 0700;
  rep.file_mode = opts.group_access ? 0640 : 0600;
  rep.max_entries = opts.max_entries;

  const auto path = normal_absolute_path(opts.path);
  if (!path) {
    rep.refused = "not an absolute path without . or .. components";
    return rep;
  }
  rep.path = *path;
  if (*path == "/") {
    rep.refused = "will not change the whole filesystem";
    return rep;
  }
  std::vector<std::string> roots;
  for (const auto& r : opts.roots) {
    const auto root = normal_absolute_path(r);
    if (!root || *root == "/") {
      rep.refused = "root \"" + r + "\" is not an absolute directory other than /";
      return rep;
    }
    roots.push_back(*root);
  }
  bool inside = false;
  for (const auto& root : roots) inside = inside || path_inside(*path, root);
  if (!inside) {
    rep.refused = "outside the allowed roots (" + (roots.empty() ? "none" : list(roots)) + ")";
    return rep;
  }

  struct stat st {};
  if (lstat(path->c_str(), &st) != 0) {
    rep.error_count = 1;
    rep.errors.push_back({*path, errno, errno_text(errno)});
    return rep;
  }
  if (S_ISLNK(st.st_mode)) {
    rep.refused = "it is a symlink; give the real directory's path";
    return rep;
  }
  if (!S_ISDIR(st.st_mode)) {
    rep.refused = "it is a " + type_name(st.st_mode) + ", not a directory";
    return rep;
  }
  const int fd = open(path->c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ELOOP) {
      rep.refused = "it is a symlink; give the real directory's path";
    } else {
      rep.error_count = 1;
      rep.errors.push_back({*path, err, "open: " + errno_text(err)});
    }
    return rep;
  }

  // The path as written may cross symlinked directories: what was opened must be inside
  // a root too, both resolved.
  const auto real = real_path_of(fd);
  bool real_inside = false;
  if (real && *real != "/") {
    for (const auto& root : roots) {
      const auto real_root = real_path(root);
      real_inside = real_inside || (real_root && path_inside(*real, *real_root));
    }
  }
  if (!real_inside) {
    close(fd);
    rep.refused = real ? "it resolves to " + *real + ", outside the allowed roots"
                       : "cannot tell where it resolves to (is /proc mounted?)";
    return rep;
  }

  Fixer(opts, rep).run(fd, *path);
  return rep;
}

std::string FixReport::summary() const {
  if (!refused.empty()) return "refused to fix " + path + ": " + refused;
  const std::string target = owner + ":" + group + " " + octal(dir_mode) + "/" + octal(file_mode);
  if (checked == 0 && !errors.empty()) return "could not fix " + path + ": " + errors[0].what;

  std::string out;
  if (owners_changed == 0 && modes_changed == 0) {
    out = (error_count == 0 ? "nothing to change under " : "nothing changed under ") + path + ": " +
          plural(checked, "entry", "entries") + (error_count == 0 ? " already " : ", ") + target;
  } else {
    std::string what;
    if (owners_changed > 0) what = plural(owners_changed, "owner", "owners");
    if (modes_changed > 0)
      what += (what.empty() ? "" : " and ") + plural(modes_changed, "mode", "modes");
    out = (error_count == 0 ? "fixed " : "partly fixed ") + path + ": " + what + " changed to " +
          target + " (" + plural(checked, "entry", "entries") + ")";
  }
  if (symlinks_skipped > 0)
    out += "; " + plural(symlinks_skipped, "symlink", "symlinks") + " skipped, not followed";
  if (others_skipped > 0)
    out += "; " + plural(others_skipped, "special file", "special files") + " skipped";
  if (error_count > 0) {
    out += "; " + plural(error_count, "error", "errors") + ": ";
    for (std::size_t i = 0; i < errors.size() && i < kMessageErrors; ++i)
      out += (i ? ", " : "") + errors[i].path + " (" + errors[i].what + ")";
    if (error_count > kMessageErrors) out += ", ...";
  }
  if (truncated)
    out += "; stopped after " + std::to_string(max_entries) + " entries, the rest was not checked";
  return out;
}

nlohmann::json FixReport::to_json() const {
  nlohmann::json j = {
      {"path", path},
      {"owner", owner},
      {"group", group},
      {"dir_mode", octal(dir_mode)},
      {"file_mode", octal(file_mode)},
  };
  if (!refused.empty()) j["refused"] = refused;
  j["checked"] = checked;
  j["owners_changed"] = owners_changed;
  j["modes_changed"] = modes_changed;
  j["entries_changed"] = entries_changed;
  j["symlinks_skipped"] = symlinks_skipped;
  j["others_skipped"] = others_skipped;
  j["error_count"] = error_count;
  j["truncated"] = truncated;
  j["max_entries"] = max_entries;
  nlohmann::json errs = nlohmann::json::array();
  for (const auto& e : errors) errs.push_back({{"path", e.path}, {"error", e.what}});
  j["errors"] = errs;
  nlohmann::json changed = nlohmann::json::array();
  for (const auto& c : changes) {
    nlohmann::json one = {{"path", c.path}};
    if (c.owner_changed)
      one["owner"] = std::to_string(c.old_uid) + ":" + std::to_string(c.old_gid) + " -> " + owner +
                     ":" + group;
    if (c.mode_changed) one["mode"] = octal(c.old_mode) + " -> " + octal(c.new_mode);
    changed.push_back(one);
  }
  j["changes"] = changed;
  j["symlinks"] = symlinks;
  return j;
}

FixPermissionsParams parse_fix_permissions_params(YamlMap& params, const Config& config) {
  FixPermissionsParams out;
  const bool explicit_path = params.has("path");
  std::string path = params.str("path").value_or(config.pg_data_dir);
  if (path.empty()) {
    params.fail("path", explicit_path ? "expected an absolute path, got an empty string"
                                      : "expected an absolute path (no data directory is known: "
                                        "set path or give --patroni-config)");
  }
  const std::string from = explicit_path ? "" : " (the data directory from patroni.yml)";
  const auto norm = normal_absolute_path(path);
  if (!norm) {
    params.fail("path", "expected an absolute path without . or .. components, got " + path + from);
  }
  if (*norm == "/") params.fail("path", "expected a directory other than /, got " + path + from);
  out.path = *norm;

  out.owner = params.str("owner").value_or(config.pg_owner);
  if (out.owner.empty() || out.owner.find_first_of(":/ ") != std::string::npos)
    params.fail("owner", "expected a user name, got \"" + out.owner + "\"");
  if (auto group = params.str("group")) {
    if (group->empty() || group->find_first_of(":/ ") != std::string::npos)
      params.fail("group", "expected a group name, got \"" + *group + "\"");
    out.group = *group;
  }
  out.group_access = params.boolean("group_access").value_or(false);

  if (auto roots = params.str_list("roots")) {
    if (roots->empty()) params.fail("roots", "expected a list of absolute directories, got []");
    for (const auto& r : *roots) {
      const auto root = normal_absolute_path(r);
      if (!root) {
        params.fail("roots", "expected absolute directories without . or .. components, got " + r);
      }
      if (*root == "/") params.fail("roots", "expected directories other than /, got /");
      out.roots.push_back(*root);
    }
  } else {
    out.roots = {out.path};
  }
  bool inside = false;
  for (const auto& root : out.roots) inside = inside || path_inside(out.path, root);
  if (!inside) {
    params.fail("path", "expected a directory inside roots (" + list(out.roots) + "), got " +
                            out.path + from);
  }
  return out;
}

namespace {

class FixPermissionsRemedy final : public Remedy {
 public:
  explicit FixPermissionsRemedy(FixPermissionsParams params) : params_(std::move(params)) {}

  Risk risk() const override { return Risk::safe; }

  std::string plan(const RemedyContext&) const override {
    // Without a group, chown's "owner:" form: the owner's primary group (resolved at run).
    const std::string modes = params_.group_access ? "0750/0640" : "0700/0600";
    return "chown -R " + params_.owner + ":" + params_.group.value_or("") + " and chmod " + modes +
           " under " + params_.path + " (no symlinks followed)";
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
    // Names resolve on the worker with the walk: NSS may block (LDAP, sssd). A named
    // lambda, not a temporary in the co_await expression (GCC 12 destroys those twice).
    auto job = [p = params_]() {
      FixOptions opts;
      opts.path = p.path;
      opts.group_access = p.group_access;
      opts.roots = p.roots;
      try {
        const auto ids = resolve_datadir_expect(p.owner, p.group, GroupAccess::automatic);
        opts.uid = ids.uid;
        opts.gid = ids.gid;
        opts.owner = ids.owner;
        opts.group = ids.group;
      } catch (const std::runtime_error& e) {
        FixReport rep;
        rep.path = p.path;
        rep.owner = p.owner;
        rep.group = p.group.value_or("");
        rep.refused = e.what();
        return rep;
      }
      return fix_tree(opts);
    };
    FixReport report = co_await offload(ctx.worker, std::move(job));
    if (report.ok() && report.entries_changed == 0)
      co_return RemedyOutcome::nothing_to_do(report.summary(), report.to_json());
    if (report.ok()) co_return RemedyOutcome::success(report.summary(), report.to_json());
    co_return RemedyOutcome::failure(report.summary(), report.to_json());
  }

 private:
  FixPermissionsParams params_;
};

}  // namespace

std::unique_ptr<Remedy> make_fix_permissions_remedy(YamlMap& params, const Config& config) {
  return std::make_unique<FixPermissionsRemedy>(parse_fix_permissions_params(params, config));
}

}  // namespace fener
