// Listening TCP sockets from /proc/net/tcp{,6}, and which process owns each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fener {

struct TcpListener {
  std::string address;  // "127.0.1.3", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1"
  int port = 0;
  std::uint64_t inode = 0;
};

struct ProcNetTable {
  std::vector<TcpListener> listeners;  // state 0A (LISTEN) only
  std::vector<std::string> errors;     // "line 3: ...", one per malformed line
};

// Parses the text of /proc/net/tcp or /proc/net/tcp6 (the address width tells which).
// Addresses are hex words as the kernel prints them on a little-endian machine.
ProcNetTable parse_proc_net_tcp(std::string_view text);

// Decodes "0301007F" (IPv4) or 32 hex digits (IPv6) to text; nullopt if malformed.
std::optional<std::string> decode_proc_address(std::string_view hex);

struct ListeningSocket : TcpListener {
  int pid = 0;       // owner with the lowest pid; 0 if unknown
  std::string comm;  // its /proc/<pid>/comm; "" if unknown
};

struct ListenScan {
  std::vector<ListeningSocket> sockets;
  std::vector<std::string> notes;  // what could not be read, for evidence
  int tables_read = 0;             // how many of tcp and tcp6 were read; 0 means "unknown"
  bool complete = true;  // false when a table exists but could not be read (absent is fine:
                         // no tcp6 means IPv6 is off, so nothing can listen there)
};

// Owners found by earlier scans (inode -> pid, comm). Listening sockets live long, so
// the next scan looks at those processes first and walks /proc only for what is new.
struct OwnerCache {
  std::mutex mu;
  std::unordered_map<std::uint64_t, std::pair<int, std::string>> owners;
};

struct ScanOptions {
  std::string proc_root = "/proc";
  std::size_t max_pids = 32768;     // processes examined at most
  std::size_t max_fds = 1'000'000;  // fd links read at most, over all processes
  std::vector<int> ports;           // resolve owners of listeners on these ports only (empty: all)
  OwnerCache* cache = nullptr;      // optional
};

// Blocking (reads /proc): run it on the worker. Never throws for unreadable entries;
// a process whose fds cannot be read (permissions, it exited) just stays unknown.
ListenScan scan_listening_sockets(const ScanOptions& options = {});

// Canonical text of an IP address: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed.
// nullopt when text is no IP literal (brackets are accepted around IPv6).
std::optional<std::string> normalize_address(std::string_view text);
bool is_wildcard_address(std::string_view address);  // 0.0.0.0 or ::

// Would a connection to (address, port) reach this listener? A listener on :: takes any
// address, one on 0.0.0.0 any IPv4 address (mapped forms included). An empty address
// means "any address": only the port must match.
bool listener_matches(const TcpListener& listener, std::string_view address, int port);

// The listener that serves (address, port), preferring an exact address over a wildcard;
// nullptr if none.
const ListeningSocket* find_listener(const std::vector<ListeningSocket>& sockets,
                                     std::string_view address, int port);

}  // namespace fener
