// Runs a child process on the Asio event loop without blocking it: remedies restart
// services and run operators' commands, and fener must keep polling while they run.
// The child gets stdin from /dev/null, one pipe for stdout and stderr, none of fener's
// other descriptors, default signal handling, and its own process group, so a deadline or
// a cancellation can stop everything it started (SIGTERM, then SIGKILL). The child is
// always reaped before run_process returns: no zombies, nothing killed by name.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

namespace fener {

namespace asio = boost::asio;

struct ProcessRequest {
  std::vector<std::string> argv;  // argv[0] without a '/' is looked up in PATH
  // From the start; then SIGTERM to the process group. Zero: no deadline of its own
  // (cancellation still stops the child).
  std::chrono::milliseconds timeout{30'000};
  std::size_t max_output = 64 * 1024;  // bytes kept; the rest is read and counted
  std::vector<std::string> env_extra;  // KEY=VALUE, over fener's own environment
  // Between SIGTERM and SIGKILL at the deadline or on cancellation.
  std::chrono::milliseconds kill_grace{2'000};
};

struct ProcessResult {
  bool started = false;
  std::string error;   // why it could not start (strerror text), when !started
  pid_t pid = 0;       // the child's pid, reaped by now; 0 when !started
  int exit_code = -1;  // -1 when killed by a signal (or not started)
  int term_signal = 0;
  bool timed_out = false;     // the deadline passed and the child was stopped
  bool cancelled = false;     // the caller cancelled and the child was stopped
  std::string output;         // stdout and stderr interleaved, at most max_output bytes
  std::size_t truncated = 0;  // output bytes read beyond max_output and dropped
  std::chrono::milliseconds elapsed{0};
  std::chrono::milliseconds timeout{0};  // the request's, for describe()

  bool ok() const { return started && exit_code == 0 && term_signal == 0; }
  // One line: "exit 0 in 120 ms", "killed by SIGTERM after timeout 30000 ms",
  // "could not start: No such file or directory".
  std::string describe() const;
};

// Never throws for the failures it expects (they are in the result). Cancellation stops
// and reaps the child, then completes with cancelled set.
asio::awaitable<ProcessResult> run_process(ProcessRequest req);

// "SIGTERM", "SIGKILL", ... or "signal 42".
std::string signal_name(int sig);

}  // namespace fener
