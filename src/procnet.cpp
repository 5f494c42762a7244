#include "src/procnet.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_map>

namespace fener {

namespace {

constexpr int kListenState = 0x0A;
constexpr std::size_t kMaxParseErrors = 20;
constexpr std::size_t kMaxTableBytes = 64u << 20;

template <class T>
bool parse_number(std::string_view s, T& out, int base) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// Reads a whole (possibly size-0 /proc) file; on failure returns nullopt and sets err
// (and errno_out to the errno).
std::optional<std::string> read_file(const std::string& path, std::string& err,
                                     int* errno_out = nullptr) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno_out) *errno_out = errno;
    err = std::strerror(errno);
    return std::nullopt;
  }
  std::string data;
  char buf[65536];
  while (data.size() < kMaxTableBytes) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno_out) *errno_out = errno;
      err = std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return data;
}

std::string read_comm(const std::string& dir) {
  std::string err;
  auto text = read_file(dir + "/comm", err);
  if (!text) return "";
  while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
  return *text;
}

// "socket:[12345]" -> 12345.
std::optional<std::uint64_t> socket_inode(std::string_view link) {
  constexpr std::string_view prefix = "socket:[";
  if (!link.starts_with(prefix) || !link.ends_with(']')) return std::nullopt;
  std::uint64_t inode = 0;
  if (!parse_number(link.substr(prefix.size(), link.size() - prefix.size() - 1), inode, 10)) {
    return std::nullopt;
  }
  return inode;
}

}  // namespace

std::optional<std::string> decode_proc_address(std::string_view hex) {
  if (hex.size() != 8 && hex.size() != 32) return std::nullopt;
  unsigned char bytes[16];
  for (std::size_t w = 0; w < hex.size() / 8; ++w) {
    std::uint32_t v = 0;
    if (!parse_number(hex.substr(w * 8, 8), v, 16)) return std::nullopt;
    // The kernel prints each 32-bit word of the network-order address as a host integer.
    for (int b = 0; b < 4; ++b) bytes[w * 4 + b] = static_cast<unsigned char>(v >> (8 * b));
  }
  char text[INET6_ADDRSTRLEN];
  int family = hex.size() == 8 ? AF_INET : AF_INET6;
  if (!::inet_ntop(family, bytes, text, sizeof text)) return std::nullopt;
  return std::string(text);
}

ProcNetTable parse_proc_net_tcp(std::string_view text) {
  ProcNetTable out;
  std::size_t skipped_errors = 0;
  auto error = [&](int line, const std::string& what) {
    if (out.errors.size() < kMaxParseErrors) {
      out.errors.push_back("line " + std::to_string(line) + ": " + what);
    } else {
      ++skipped_errors;
    }
  };
  int line_no = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    auto f = fields(line);
    if (f.empty()) continue;
    if (line_no == 1 && f[0] == "sl") continue;  // header
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if (f.size() < 10 || !f[0].ends_with(':')) {
      error(line_no, "expected 'sl: local remote st ... inode', got '" + std::string(line) + "'");
      continue;
    }
    int state = 0;
    if (f[3].size() != 2 || !parse_number(f[3], state, 16)) {
      error(line_no, "bad state '" + std::string(f[3]) + "'");
      continue;
    }
    if (state != kListenState) continue;
    auto colon = f[1].find(':');
    std::optional<std::string> address;
    int port = 0;
    if (colon != std::string_view::npos) {
      address = decode_proc_address(f[1].substr(0, colon));
      std::string_view port_hex = f[1].substr(colon + 1);
      if (port_hex.size() != 4 || !parse_number(port_hex, port, 16)) address.reset();
    }
    if (!address) {
      error(line_no, "bad local address '" + std::string(f[1]) + "'");
      continue;
    }
    std::uint64_t inode = 0;
    if (!parse_number(f[9], inode, 10)) {
      error(line_no, "bad inode '" + std::string(f[9]) + "'");
      continue;
    }
    out.listeners.push_back({*address, port, inode});
  }
  if (skipped_errors > 0) {
    out.errors.push_back("and " + std::to_string(skipped_errors) + " more malformed lines");
  }
  return out;
}

ListenScan scan_listening_sockets(const ScanOptions& options) {
  ListenScan scan;
  for (const char* table : {"tcp", "tcp6"}) {
    std::string path = options.proc_root + "/net/" + table;
    std::string err;
    int error_number = 0;
    auto text = read_file(path, err, &error_number);
    if (!text) {
      scan.notes.push_back("cannot read " + path + ": " + err);
      if (error_number != ENOENT) scan.complete = false;
      continue;
    }
    ++scan.tables_read;
    ProcNetTable parsed = parse_proc_net_tcp(*text);
    for (const auto& e : parsed.errors) scan.notes.push_back(path + ": " + e);
    for (auto& l : parsed.listeners) {
      ListeningSocket s;
      static_cast<TcpListener&>(s) = std::move(l);
      scan.sockets.push_back(std::move(s));
    }
  }

  std::unordered_map<std::uint64_t, std::size_t> by_inode;
  for (std::size_t i = 0; i < scan.sockets.size(); ++i) {
    const auto& s = scan.sockets[i];
    const bool wanted =
        options.ports.empty() ||
        std::find(options.ports.begin(), options.ports.end(), s.port) != options.ports.end();
    if (s.inode != 0 && wanted) by_inode.emplace(s.inode, i);
  }
  if (by_inode.empty()) return scan;

  std::size_t unresolved = by_inode.size(), fds_read = 0, denied = 0;
  bool fd_cap_hit = false;
  // Reads one process's fd links and claims the sockets it holds.
  auto scan_pid = [&](int pid) {
    std::string dir = options.proc_root + "/" + std::to_string(pid);
    int dfd = ::open((dir + "/fd").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      if (errno == EACCES || errno == EPERM) ++denied;
      return;  // ENOENT: the process exited meanwhile
    }
    DIR* fds = ::fdopendir(dfd);
    if (!fds) {
      ::close(dfd);
      return;
    }
    std::string comm;
    bool comm_read = false;
    while (dirent* e = ::readdir(fds)) {
      if (e->d_name[0] == '.') continue;
      if (++fds_read > options.max_fds) {
        fd_cap_hit = true;
        break;
      }
      char link[64];
      ssize_t n = ::readlinkat(dfd, e->d_name, link, sizeof link);
      if (n <= 0 || static_cast<std::size_t>(n) >= sizeof link) continue;
      auto inode = socket_inode(std::string_view(link, static_cast<std::size_t>(n)));
      if (!inode) continue;
      auto it = by_inode.find(*inode);
      if (it == by_inode.end()) continue;
      ListeningSocket& s = scan.sockets[it->second];
      if (s.pid != 0) continue;
      if (!comm_read) {
        comm = read_comm(dir);
        comm_read = true;
      }
      s.pid = pid;
      s.comm = comm;
      --unresolved;
    }
    ::closedir(fds);  // closes dfd too
  };

  // First the processes that owned these sockets last time.
  std::vector<int> cached_pids;
  if (options.cache) {
    std::lock_guard lock(options.cache->mu);
    for (const auto& [inode, idx] : by_inode) {
      auto c = options.cache->owners.find(inode);
      if (c != options.cache->owners.end()) cached_pids.push_back(c->second.first);
    }
  }
  std::sort(cached_pids.begin(), cached_pids.end());
  cached_pids.erase(std::unique(cached_pids.begin(), cached_pids.end()), cached_pids.end());
  for (int pid : cached_pids) scan_pid(pid);
  auto remember = [&] {
    if (!options.cache) return;
    std::lock_guard lock(options.cache->mu);
    options.cache->owners.clear();
    for (const auto& [inode, idx] : by_inode) {
      const auto& s = scan.sockets[idx];
      if (s.pid != 0) options.cache->owners[inode] = {s.pid, s.comm};
    }
  };
  if (unresolved == 0) {
    remember();
    return scan;
  }

  DIR* proc = ::opendir(options.proc_root.c_str());
  if (!proc) {
    scan.notes.push_back("cannot list " + options.proc_root + ": " + std::strerror(errno) +
                         "; socket owners unknown");
    return scan;
  }
  std::vector<int> pids;
  while (dirent* e = ::readdir(proc)) {
    int pid = 0;
    if (parse_number(std::string_view(e->d_name), pid, 10) && pid > 0) pids.push_back(pid);
  }
  ::closedir(proc);
  std::sort(pids.begin(), pids.end());  // lowest pid first: usually the parent of forks
  if (pids.size() > options.max_pids) {
    scan.notes.push_back("examined only the first " + std::to_string(options.max_pids) + " of " +
                         std::to_string(pids.size()) + " processes");
    pids.resize(options.max_pids);
  }

  for (int pid : pids) {
    if (unresolved == 0 || fd_cap_hit) break;
    if (std::binary_search(cached_pids.begin(), cached_pids.end(), pid)) continue;
    scan_pid(pid);
  }
  remember();
  if (fd_cap_hit) {
    scan.notes.push_back("stopped after reading " + std::to_string(options.max_fds) +
                         " file descriptors");
  }
  if (unresolved > 0 && denied > 0) {
    scan.notes.push_back("fds of " + std::to_string(denied) +
                         " processes not readable (permission denied): owners of " +
                         std::to_string(unresolved) + " listening sockets unknown");
  }
  return scan;
}

std::optional<std::string> normalize_address(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  if (auto pct = text.find('%'); pct != std::string_view::npos) text = text.substr(0, pct);
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  unsigned char bytes[16];
  char out[INET6_ADDRSTRLEN];
  if (::inet_pton(AF_INET, s.c_str(), bytes) == 1) {
    ::inet_ntop(AF_INET, bytes, out, sizeof out);
    return std::string(out);
  }
  if (::inet_pton(AF_INET6, s.c_str(), bytes) == 1) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(bytes, kMapped, sizeof kMapped) == 0) {
      ::inet_ntop(AF_INET, bytes + 12, out, sizeof out);
    } else {
      ::inet_ntop(AF_INET6, bytes, out, sizeof out);
    }
    return std::string(out);
  }
  return std::nullopt;
}

bool is_wildcard_address(std::string_view address) {
  auto n = normalize_address(address);
  return n && (*n == "0.0.0.0" || *n == "::");
}

bool listener_matches(const TcpListener& listener, std::string_view address, int port) {
  if (listener.port != port) return false;
  if (address.empty()) return true;
  auto have = normalize_address(listener.address);
  auto want = normalize_address(address);
  if (!have || !want) return listener.address == address;
  if (*have == "::") return true;
  if (*have == "0.0.0.0") return want->find(':') == std::string::npos;
  return *have == *want;
}

const ListeningSocket* find_listener(const std::vector<ListeningSocket>& sockets,
                                     std::string_view address, int port) {
  const ListeningSocket* wildcard = nullptr;
  for (const auto& s : sockets) {
    if (!listener_matches(s, address, port)) continue;
    if (address.empty() || !is_wildcard_address(s.address) || is_wildcard_address(address)) {
      return &s;
    }
    if (!wildcard) wildcard = &s;
  }
  return wildcard;
}

}  // namespace fener
