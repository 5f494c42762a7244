#include "remedies/copy_from_leader.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <utility>

#include "checks/leader_files.hpp"
#include "src/fd.hpp"
#include "src/http_client.hpp"
#include "src/sha256.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

InstalledFile install_failure(std::string why) {
  InstalledFile out;
  out.error = std::move(why);
  return out;
}

std::string errno_text(int e) {
  return std::strerror(e);
}

// The destination may be absent or a regular file; anything else is left alone.
std::optional<std::string> destination_refusal(int dirfd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return std::nullopt;
    return "cannot stat destination " + name + ": " + errno_text(errno);
  }
  if (S_ISLNK(st.st_mode)) return "destination " + name + " is a symlink: refused";
  if (!S_ISREG(st.st_mode)) return "destination " + name + " is not a regular file: refused";
  return std::nullopt;
}

std::string temp_name() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = ".fener-copy-";
  auto v = rng();
  for (int i = 0; i < 16; ++i, v >>= 4) out.push_back(kHex[v & 0xf]);
  return out + ".tmp";
}

Duration remaining(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
  return std::max(left, Duration{100});
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// One file to bring over: where it goes and what the leader listed for it.
struct CopyJob {
  const PeerFileRoot* root;
  PeerFile leader;
};

// GCC 12 inlines Asio's coroutine frame allocation here and then mistakes its matching
// deallocation for a mismatched one (a false positive of -Wmismatched-new-delete).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

class CopyFromLeaderRemedy final : public Remedy {
 public:
  explicit CopyFromLeaderRemedy(CopyFromLeaderParams p) : p_(std::move(p)) {}

  Risk risk() const override { return Risk::safe; }

  std::string plan(const RemedyContext& ctx) const override {
    std::vector<std::string> patterns, dirs;
    for (const auto& r : p_.roots) {
      dirs.push_back(r.dir);
      for (const auto& pat : r.patterns)
        if (std::find(patterns.begin(), patterns.end(), pat) == patterns.end())
          patterns.push_back(pat);
    }
    const std::string what = "files matching " + join(patterns) + " that are missing or differ";
    if (!ctx.facts.leader_name || !ctx.facts.leader_host)
      return "copy " + what + " from the leader, which is unknown now: nothing would be copied";
    if (*ctx.facts.leader_name == p_.node_name)
      return "nothing: this node (" + p_.node_name + ") is the leader";
    return describe_copy({what}, *ctx.facts.leader_name, endpoint(*ctx.facts.leader_host), dirs);
  }

  asio::awaitable<RemedyOutcome> run(RemedyContext& ctx) override {
    const auto deadline = std::chrono::steady_clock::now() + std::min(p_.timeout, ctx.timeout);
    const auto& facts = ctx.facts;
    if (!facts.leader_name || facts.leader_name->empty() || !facts.leader_host ||
        facts.leader_host->empty())
      co_return RemedyOutcome::failure("leader unknown: refusing to copy peer files");
    const std::string leader = *facts.leader_name;
    if (leader == p_.node_name || leader == facts.self_name)
      co_return RemedyOutcome::failure("this node (" + leader +
                                       ") is the leader: no other source to copy from");
    if (p_.token.empty())
      co_return RemedyOutcome::failure("no api.token configured: cannot ask leader " + leader +
                                       " for its files");
    const std::string base = peer_api_url(*facts.leader_host, p_.port);
    const std::string source = base + "/v1/peer/files";
    json details = {{"leader", leader},
                    {"source", source},
                    {"copied", json::array()},
                    {"refused", json::array()},
                    {"identical", 0}};

    std::string why;
    std::string url = source;
    std::string token = p_.token;
    std::string leader_name = leader;
    auto theirs = co_await fetch_leader_listing(ctx.http, std::move(url), std::move(token),
                                                std::move(leader_name), remaining(deadline), &why);
    if (!theirs) co_return RemedyOutcome::failure(why, std::move(details));

    auto list_job = [node = p_.node_name, roots = p_.roots, max = p_.max_size] {
      return list_peer_roots(node, roots, max);
    };
    PeerListing ours = co_await offload(ctx.worker, std::move(list_job));
    const PeerFilesComparison cmp = compare_peer_files(*theirs, ours, p_.roots);
    details["identical"] = cmp.identical;
    if (!cmp.unknown.empty()) details["unknown"] = cmp.unknown;
    for (const auto& r : cmp.refused)
      details["refused"].push_back({{"root", r.root}, {"name", r.name}, {"reason", r.reason}});

    std::vector<CopyJob> jobs;
    for (const auto* list : {&cmp.missing, &cmp.differing})
      for (const auto& d : *list)
        if (const PeerFileRoot* root = find_peer_root(p_.roots, d.root))
          jobs.push_back({root, d.leader});

    std::vector<std::string> copied, dirs, refused;
    for (const auto& job : jobs) {
      std::string failure;
      json entry = co_await copy_one(ctx, base, leader, job, deadline, &failure);
      if (!failure.empty()) {
        refused.push_back(job.leader.name + " (" + failure + ")");
        details["refused"].push_back(std::move(entry));
        continue;
      }
      copied.push_back(job.leader.name);
      if (std::find(dirs.begin(), dirs.end(), job.root->dir) == dirs.end())
        dirs.push_back(job.root->dir);
      details["copied"].push_back(std::move(entry));
    }
    for (const auto& r : cmp.refused) refused.push_back(r.name + " (" + r.reason + ")");

    const std::string where = endpoint(*facts.leader_host);
    std::string msg = copied.empty() ? "" : describe_copy(copied, leader, where, dirs, "copied");
    if (!refused.empty()) {
      msg += (msg.empty() ? "" : "; ") + std::string("refused ") + join(refused);
      co_return RemedyOutcome::failure(msg, std::move(details));
    }
    if (copied.empty())
      co_return RemedyOutcome::success("nothing to copy: " + std::to_string(cmp.identical) +
                                           " allow-listed file(s) already same as on leader " +
                                           leader,
                                       std::move(details));
    co_return RemedyOutcome::success(msg, std::move(details));
  }

 private:
  std::string endpoint(const std::string& host) const {
    return peer_api_url(host, p_.port).substr(7);  // without "http://"
  }

  // Fetches, verifies and installs one file; sets *failure when it did not.
  asio::awaitable<json> copy_one(RemedyContext& ctx, const std::string& base,
                                 const std::string& leader, const CopyJob& job,
                                 std::chrono::steady_clock::time_point deadline,
                                 std::string* failure) {
    const PeerFile& f = job.leader;
    json entry = {{"root", job.root->name}, {"name", f.name}};
    auto refuse = [&](std::string reason) {
      *failure = reason;
      entry["reason"] = std::move(reason);
      return entry;
    };
    if (auto why = invalid_name_reason(f.name, *job.root)) co_return refuse(*why);
    const auto mode = parse_mode_string(f.mode);
    if (!mode || !copy_mode_allowed(*mode))
      co_return refuse("mode " + f.mode + " not allowed (read/write bits within 0644 only)");
    if (f.size < 0 || static_cast<std::uint64_t>(f.size) > p_.max_size)
      co_return refuse("too large (" + std::to_string(f.size) + " bytes)");

    const std::string url = base + peer_file_path(job.root->name, f.name);
    HttpRequest req;
    req.url = url;
    req.timeout = remaining(deadline);
    req.headers.push_back("Authorization: Bearer " + p_.token);
    req.max_body = p_.max_size;
    HttpResult r = co_await ctx.http.fetch(std::move(req));
    if (!r.ok()) co_return refuse(url + ": " + r.describe());
    if (r.header("x-fener-node") != leader)
      co_return refuse(url + " answered as node \"" + r.header("x-fener-node").value_or("") +
                       "\", not the leader " + leader);
    if (r.status != 200) {
      auto body = parse_json(r.body);
      const std::string detail =
          body && body->is_object() && body->contains("error") && (*body)["error"].is_string()
              ? (*body)["error"].get<std::string>()
              : snippet(r.body);
      co_return refuse(url + " answered HTTP " + std::to_string(r.status) + ": " + detail);
    }
    const std::string digest = sha256_hex(r.body);
    if (static_cast<std::int64_t>(r.body.size()) != f.size)
      co_return refuse("got " + std::to_string(r.body.size()) + " bytes, the listing said " +
                       std::to_string(f.size));
    if (r.header("x-fener-sha256") != f.sha256 || digest != f.sha256)
      co_return refuse("SHA-256 mismatch (listed " + f.sha256 + ", got " + digest + ")");
    if (r.header("x-fener-mode") != f.mode)
      co_return refuse("mode changed on the leader since listing (" +
                       r.header("x-fener-mode").value_or("none") + ", listed " + f.mode + ")");

    auto install = [dir = job.root->dir, name = f.name, bytes = std::move(r.body), m = *mode,
                    owner = p_.owner] { return install_peer_file(dir, name, bytes, m, owner); };
    InstalledFile done = co_await offload(ctx.worker, std::move(install));
    if (!done.ok) co_return refuse(done.error);
    entry["bytes"] = f.size;
    entry["sha256"] = f.sha256;
    entry["mode"] = f.mode;
    entry["owner"] = p_.owner;
    entry["uid"] = done.uid;
    entry["gid"] = done.gid;
    co_return entry;
  }

  CopyFromLeaderParams p_;
};

#pragma GCC diagnostic pop

}  // namespace

bool copy_mode_allowed(unsigned mode) {
  return (mode & ~0644u) == 0 && (mode & 0400u) != 0;
}

InstalledFile install_peer_file(const std::string& dir, const std::string& name,
                                const std::string& bytes, unsigned mode, const std::string& owner) {
  if (auto why = invalid_name_reason(name)) return install_failure(*why);
  if (!copy_mode_allowed(mode))
    return install_failure("mode " + mode_string(mode) + " not allowed");

  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  const int rc = ::getpwnam_r(owner.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || !found)
    return install_failure("no user " + owner + (rc ? ": " + errno_text(rc) : std::string()));
  InstalledFile out;
  out.uid = pw.pw_uid;
  out.gid = pw.pw_gid;

  Fd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dirfd.fd < 0) return install_failure("cannot open " + dir + ": " + errno_text(errno));
  if (auto why = destination_refusal(dirfd.fd, name)) return install_failure(*why);

  const std::string tmp = temp_name();
  Fd fd(
      ::openat(dirfd.fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.fd < 0)
    return install_failure("cannot create " + dir + "/" + tmp + ": " + errno_text(errno));
  auto fail = [&](const std::string& what) {
    const std::string text = what + ": " + errno_text(errno);
    ::unlinkat(dirfd.fd, tmp.c_str(), 0);
    return install_failure(text);
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write " + dir + "/" + tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.fd) != 0) return fail("cannot fsync " + dir + "/" + tmp);
  if (::fchown(fd.fd, out.uid, out.gid) != 0)
    return fail("cannot give " + dir + "/" + tmp + " to " + owner);
  if (::fchmod(fd.fd, mode) != 0) return fail("cannot chmod " + dir + "/" + tmp);
  // Judged again right before the rename: the name may have changed since.
  if (auto why = destination_refusal(dirfd.fd, name)) {
    ::unlinkat(dirfd.fd, tmp.c_str(), 0);
    return install_failure(*why);
  }
  if (::renameat(dirfd.fd, tmp.c_str(), dirfd.fd, name.c_str()) != 0)
    return fail("cannot rename " + tmp + " to " + name + " in " + dir);
  if (::fsync(dirfd.fd) != 0)
    return install_failure("installed " + name + " but cannot fsync " + dir + ": " +
                           errno_text(errno));
  out.ok = true;
  return out;
}

std::string describe_copy(const std::vector<std::string>& names, const std::string& leader,
                          const std::string& endpoint, const std::vector<std::string>& dirs,
                          const std::string& verb) {
  return verb + " " + join(names) + " from leader " + leader + " (" + endpoint + ") into " +
         join(dirs);
}

std::unique_ptr<Remedy> make_copy_from_leader_remedy(YamlMap& params, const Config& config) {
  CopyFromLeaderParams p;
  p.roots = read_peer_roots_param(params, config);
  p.port = read_peer_port_param(params, config);
  p.owner = params.str("owner").value_or(config.pg_owner);
  if (p.owner.empty()) params.fail("owner", "expected a user name");
  p.timeout = params.duration("timeout").value_or(p.timeout);
  p.token = config.api.token;
  p.max_size = config.api.max_file_size;
  p.node_name = config.node_name;
  return std::make_unique<CopyFromLeaderRemedy>(std::move(p));
}

}  // namespace fener
