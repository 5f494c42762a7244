#include "src/peer_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <utility>

#include <boost/asio/awaitable.hpp>

#include "src/api_server.hpp"
#include "src/fd.hpp"
#include "src/sha256.hpp"
#include "src/worker.hpp"

namespace fener {

namespace {

constexpr std::string_view kFilesPath = "/v1/peer/files";

bool has_component(std::string_view name, std::string_view comp) {
  std::size_t start = 0;
  while (start <= name.size()) {
    const auto slash = name.find('/', start);
    const auto end = slash == std::string_view::npos ? name.size() : slash;
    if (name.substr(start, end - start) == comp) return true;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return false;
}

bool contains_icase(std::string_view s, std::string_view needle) {
  auto it = std::search(s.begin(), s.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
  return it != s.end();
}

// Strict UTF-8: no overlong forms (C0 AE for '.'), no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0, min = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

bool matches_pattern(const PeerFileRoot& root, const std::string& name) {
  return std::any_of(root.patterns.begin(), root.patterns.end(), [&](const std::string& p) {
    return ::fnmatch(p.c_str(), name.c_str(), 0) == 0;
  });
}

PeerFileRead refuse(PeerFileRefusal r, std::string why) {
  PeerFileRead out;
  out.refusal = r;
  out.error = std::move(why);
  return out;
}

std::string errno_text(int e) {
  return std::strerror(e);
}

// Reads name below an open directory: the one place a peer file is opened.
PeerFileRead read_at(int dirfd, const std::string& name, std::size_t max_size) {
  Fd f(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (f.fd < 0) {
    const int e = errno;
    if (e == ELOOP) return refuse(PeerFileRefusal::symlink, name + " is a symlink: refused");
    if (e == ENOENT) return refuse(PeerFileRefusal::not_found, name + " not found");
    // A socket (ENXIO), or a device without its driver: not a file either way.
    if (e == ENXIO || e == ENODEV)
      return refuse(PeerFileRefusal::not_regular, name + " is not a regular file: refused");
    return refuse(PeerFileRefusal::unreadable, "cannot open " + name + ": " + errno_text(e));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0)
    return refuse(PeerFileRefusal::unreadable, "cannot stat " + name + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode))
    return refuse(PeerFileRefusal::not_regular, name + " is not a regular file: refused");
  // A second link may sit anywhere on this file system: the name in the allow-listed
  // directory would then serve (and a later write would change) a file that is not ours.
  if (st.st_nlink != 1)
    return refuse(PeerFileRefusal::hard_link,
                  name + " has " + std::to_string(st.st_nlink) + " hard links: refused");
  const auto too_large = [&] {
    return refuse(PeerFileRefusal::too_large,
                  name + " is too large (over " + std::to_string(max_size) + " bytes): refused");
  };
  if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) > max_size) return too_large();
  PeerFileRead out;
  out.bytes.reserve(static_cast<std::size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(f.fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return refuse(PeerFileRefusal::unreadable, "cannot read " + name + ": " + errno_text(errno));
    }
    if (n == 0) break;
    // The file may grow after fstat: the cap holds for what is actually read.
    if (out.bytes.size() + static_cast<std::size_t>(n) > max_size) return too_large();
    out.bytes.append(buf, static_cast<std::size_t>(n));
  }
  out.file.name = name;
  out.file.size = static_cast<std::int64_t>(out.bytes.size());
  out.file.mode = mode_string(st.st_mode & 07777);
  out.file.sha256 = sha256_hex(out.bytes);
  return out;
}

bool is_hex64(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

asio::awaitable<ApiResponse> serve_listing(std::string node, std::vector<PeerFileRoot> roots,
                                           Worker& worker, std::size_t max_size) {
  auto job = [node = std::move(node), roots = std::move(roots), max_size] {
    return list_peer_roots(node, roots, max_size);
  };
  PeerListing listing = co_await offload(worker, std::move(job));
  co_return ApiResponse::json_body(200, to_json(listing));
}

asio::awaitable<ApiResponse> serve_file(std::string rest, std::vector<PeerFileRoot> roots,
                                        Worker& worker, std::size_t max_size) {
  const auto slash = rest.find('/');
  const std::string root_name = rest.substr(0, slash);
  const PeerFileRoot* root = find_peer_root(roots, root_name);
  if (!root) co_return ApiResponse::error(404, "unknown root \"" + root_name + "\"");
  if (slash == std::string::npos)
    co_return ApiResponse::error(404, "expected " + std::string(kFilesPath) + "/<root>/<name>");
  const std::string name = rest.substr(slash + 1);
  if (auto why = invalid_name_reason(name)) co_return ApiResponse::error(400, *why);
  if (auto why = invalid_name_reason(name, *root)) co_return ApiResponse::error(403, *why);
  auto job = [r = *root, name, max_size] { return read_peer_file(r, name, max_size); };
  PeerFileRead read = co_await offload(worker, std::move(job));
  if (!read.ok()) co_return ApiResponse::error(http_status(read.refusal), read.error);
  ApiResponse resp;
  resp.status = 200;
  resp.content_type = "application/octet-stream";
  resp.body = std::move(read.bytes);
  resp.headers.emplace_back("X-Fener-Mode", read.file.mode);
  resp.headers.emplace_back("X-Fener-Sha256", read.file.sha256);
  co_return resp;
}

}  // namespace

std::optional<std::string> invalid_name_reason(std::string_view name) {
  if (name.find('\0') != std::string_view::npos) return "NUL in file name";
  if (name.empty()) return "empty file name";
  if (name.front() == '/') return "absolute path refused";
  if (has_component(name, "..")) return "path traversal (..) refused";
  if (name == ".") return "\".\" is not a file name";
  if (name.find('/') != std::string_view::npos) return "path separator in file name refused";
  if (contains_icase(name, "%2f")) return "encoded separator (%2F) in file name refused";
  if (name.find('\\') != std::string_view::npos) return "backslash in file name refused";
  // A '%' left after the one decoding is a second layer of encoding (%252e): never a name.
  if (name.find('%') != std::string_view::npos) return "percent sign (double encoding) refused";
  if (std::any_of(name.begin(), name.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u < 0x20 || u == 0x7f;
      }))
    return "control character in file name refused";
  if (name.size() > 255) return "file name longer than 255 bytes";
  if (!valid_utf8(name)) return "file name is not valid UTF-8 (overlong or broken sequence)";
  return std::nullopt;
}

std::optional<std::string> invalid_name_reason(std::string_view name, const PeerFileRoot& root) {
  if (auto why = invalid_name_reason(name)) return why;
  const std::string n(name);
  if (!matches_pattern(root, n)) {
    std::string pats;
    for (const auto& p : root.patterns) pats += (pats.empty() ? "" : ", ") + p;
    return n + " is not allow-listed in root " + root.name + " (patterns: " + pats + ")";
  }
  return std::nullopt;
}

const PeerFileRoot* find_peer_root(const std::vector<PeerFileRoot>& roots, std::string_view name) {
  for (const auto& r : roots)
    if (r.name == name) return &r;
  return nullptr;
}

std::string mode_string(unsigned mode) {
  std::string out;
  for (int shift = 9; shift >= 0; shift -= 3)
    out.push_back(static_cast<char>('0' + ((mode >> shift) & 7)));
  return out;
}

std::optional<unsigned> parse_mode_string(std::string_view text) {
  if (text.size() < 3 || text.size() > 4) return std::nullopt;
  unsigned v = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    v = v * 8 + static_cast<unsigned>(c - '0');
  }
  return v;
}

int http_status(PeerFileRefusal r) {
  switch (r) {
    case PeerFileRefusal::none:
      return 200;
    case PeerFileRefusal::bad_name:
      return 400;
    case PeerFileRefusal::not_allow_listed:
    case PeerFileRefusal::symlink:
    case PeerFileRefusal::not_regular:
    case PeerFileRefusal::hard_link:
      return 403;
    case PeerFileRefusal::too_large:
      return 413;
    case PeerFileRefusal::unknown_root:
    case PeerFileRefusal::not_found:
      return 404;
    case PeerFileRefusal::unreadable:
      return 500;
  }
  return 500;
}

PeerFileRead read_peer_file(const PeerFileRoot& root, std::string_view name, std::size_t max_size) {
  if (auto why = invalid_name_reason(name)) return refuse(PeerFileRefusal::bad_name, *why);
  if (auto why = invalid_name_reason(name, root))
    return refuse(PeerFileRefusal::not_allow_listed, *why);
  Fd dir(::open(root.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.fd < 0) {
    const int e = errno;
    struct stat st {};
    if (e == ELOOP || (e == ENOTDIR && ::lstat(root.dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode)))
      return refuse(PeerFileRefusal::symlink,
                    "root " + root.name + " (" + root.dir + ") is a symlink: refused");
    return refuse(e == ENOENT ? PeerFileRefusal::not_found : PeerFileRefusal::unreadable,
                  "cannot open root " + root.name + " (" + root.dir + "): " + errno_text(e));
  }
  return read_at(dir.fd, std::string(name), max_size);
}

PeerRootListing list_peer_root(const PeerFileRoot& root, std::size_t max_size) {
  PeerRootListing out;
  out.name = root.name;
  Fd dir(::open(root.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.fd < 0) {
    out.error = "cannot open " + root.dir + ": " + errno_text(errno);
    return out;
  }
  // fdopendir takes the descriptor over; give it its own copy.
  const int listing_fd = ::fcntl(dir.fd, F_DUPFD_CLOEXEC, 0);
  DIR* d = listing_fd >= 0 ? ::fdopendir(listing_fd) : nullptr;
  if (!d) {
    out.error = "cannot list " + root.dir + ": " + errno_text(errno);
    if (listing_fd >= 0) ::close(listing_fd);
    return out;
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || invalid_name_reason(name, root)) continue;
    names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    struct stat st {};
    if (::fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;  // symlinks and anything but regular files are never offered
    PeerFileRead r = read_at(dir.fd, name, max_size);
    if (r.ok()) out.files.push_back(std::move(r.file));
  }
  return out;
}

PeerListing list_peer_roots(const std::string& node, const std::vector<PeerFileRoot>& roots,
                            std::size_t max_size) {
  PeerListing out;
  out.node = node;
  for (const auto& r : roots) out.roots.push_back(list_peer_root(r, max_size));
  return out;
}

nlohmann::json to_json(const PeerFile& f) {
  return {{"name", f.name}, {"size", f.size}, {"mode", f.mode}, {"sha256", f.sha256}};
}

nlohmann::json to_json(const PeerListing& l) {
  nlohmann::json roots = nlohmann::json::array();
  for (const auto& r : l.roots) {
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : r.files) files.push_back(to_json(f));
    nlohmann::json jr = {{"name", r.name}, {"files", std::move(files)}};
    if (!r.error.empty()) jr["error"] = r.error;
    roots.push_back(std::move(jr));
  }
  return {{"node", l.node}, {"roots", std::move(roots)}};
}

std::optional<PeerListing> parse_peer_listing(const nlohmann::json& body, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<PeerListing> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (!body.is_object()) return fail("not a JSON object");
  PeerListing out;
  auto node = body.find("node");
  if (node == body.end() || !node->is_string()) return fail("no \"node\" string");
  out.node = node->get<std::string>();
  auto roots = body.find("roots");
  if (roots == body.end() || !roots->is_array()) return fail("no \"roots\" array");
  for (const auto& jr : *roots) {
    if (!jr.is_object() || !jr.contains("name") || !jr["name"].is_string())
      return fail("a root without a \"name\" string");
    PeerRootListing r;
    r.name = jr["name"].get<std::string>();
    if (jr.contains("error") && jr["error"].is_string()) r.error = jr["error"].get<std::string>();
    if (!jr.contains("files") || !jr["files"].is_array())
      return fail("root " + r.name + " has no \"files\" array");
    for (const auto& jf : jr["files"]) {
      if (!jf.is_object()) return fail("root " + r.name + ": a file entry is not an object");
      PeerFile f;
      if (!jf.contains("name") || !jf["name"].is_string())
        return fail("root " + r.name + ": a file without a \"name\" string");
      f.name = jf["name"].get<std::string>();
      if (!jf.contains("size") || !jf["size"].is_number_integer() ||
          jf["size"].get<std::int64_t>() < 0)
        return fail("root " + r.name + ": " + f.name + " has no size");
      f.size = jf["size"].get<std::int64_t>();
      if (!jf.contains("mode") || !jf["mode"].is_string() ||
          !parse_mode_string(jf["mode"].get<std::string>()))
        return fail("root " + r.name + ": " + f.name + " has no octal mode");
      f.mode = mode_string(*parse_mode_string(jf["mode"].get<std::string>()));
      if (!jf.contains("sha256") || !jf["sha256"].is_string() ||
          !is_hex64(jf["sha256"].get<std::string>()))
        return fail("root " + r.name + ": " + f.name + " has no sha256");
      f.sha256 = jf["sha256"].get<std::string>();
      r.files.push_back(std::move(f));
    }
    out.roots.push_back(std::move(r));
  }
  return out;
}

std::string peer_file_path(std::string_view root, std::string_view name) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto encode = [](std::string_view s) {
    std::string out;
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
        out.push_back(c);
      } else {
        out.push_back('%');
        out.push_back(kHex[u >> 4]);
        out.push_back(kHex[u & 0xf]);
      }
    }
    return out;
  };
  return std::string(kFilesPath) + "/" + encode(root) + "/" + encode(name);
}

PeerFilesComparison compare_peer_files(const PeerListing& leader, const PeerListing& local,
                                       const std::vector<PeerFileRoot>& roots) {
  PeerFilesComparison out;
  auto find_listing = [](const PeerListing& l, const std::string& name) -> const PeerRootListing* {
    for (const auto& r : l.roots)
      if (r.name == name) return &r;
    return nullptr;
  };
  for (const auto& root : roots) {
    const PeerRootListing* theirs = find_listing(leader, root.name);
    const PeerRootListing* ours = find_listing(local, root.name);
    if (!theirs) {
      out.unknown.push_back(root.name + ": the leader does not serve this root");
      continue;
    }
    if (!theirs->error.empty()) {
      out.unknown.push_back(root.name + ": on the leader, " + theirs->error);
      continue;
    }
    if (!ours || !ours->error.empty()) {
      out.unknown.push_back(root.name + ": here, " + (ours ? ours->error : "not listed"));
      continue;
    }
    std::map<std::string, const PeerFile*> here;
    for (const auto& f : ours->files) here[f.name] = &f;
    for (const auto& f : theirs->files) {
      if (auto why = invalid_name_reason(f.name, root)) {
        out.refused.push_back({root.name, f.name, *why});
        continue;
      }
      auto it = here.find(f.name);
      if (it == here.end()) {
        out.missing.push_back({root.name, f, std::nullopt, true, true});
        continue;
      }
      const PeerFile& mine = *it->second;
      const bool content = mine.sha256 != f.sha256 || mine.size != f.size;
      const bool mode = mine.mode != f.mode;
      if (content || mode)
        out.differing.push_back({root.name, f, mine, content, mode});
      else
        ++out.identical;
    }
  }
  return out;
}

void add_peer_file_routes(ApiServer& server, const Config& config, Worker& worker,
                          std::size_t max_size) {
  const std::vector<PeerFileRoot> roots = config.peer_files;
  const std::string node = config.node_name;
  Worker* w = &worker;
  // Handlers call coroutine functions that take copies: a capturing lambda that were the
  // coroutine itself would leave its captures behind in a destroyed closure.
  server.add_route("GET", std::string(kFilesPath), false, true,
                   [roots, node, w, max_size](const ApiRequest&) {
                     return serve_listing(node, roots, *w, max_size);
                   });
  server.add_route("GET", std::string(kFilesPath) + "/", true, true,
                   [roots, w, max_size](const ApiRequest& req) {
                     return serve_file(req.path.substr(kFilesPath.size() + 1), roots, *w, max_size);
                   });
}

}  // namespace fener
