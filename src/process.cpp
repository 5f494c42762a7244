#include "src/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

extern char** environ;

namespace fener {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// After the child exits, output still in the pipe is read at once; a grandchild that kept
// the pipe open (a daemon the command started) must not hold the result back longer.
constexpr milliseconds kDrainGrace{250};
// Polling interval when pidfd_open is unavailable (old kernel, seccomp filter).
constexpr milliseconds kPollInterval{20};

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

milliseconds since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t);
}

// The environment the child sees: fener's, with env_extra's keys replaced or added.
std::vector<std::string> child_environment(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || key_of(x) == key_of(kv);
    if (!replaced) env.push_back(std::move(kv));
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

struct Spawned {
  pid_t pid = 0;
  int output_fd = -1;  // read end of the stdout+stderr pipe
};

// posix_spawn runs the exec in a vfork-like child and reports exec failures (ENOENT,
// EACCES) as its return value, reaping that child itself. Returns 0 or an errno.
int spawn_child(const ProcessRequest& req, Spawned& out) {
  std::vector<std::string> argv = req.argv;
  std::vector<std::string> env = child_environment(req.env_extra);
  std::vector<char*> c_argv = c_strings(argv);
  std::vector<char*> c_env = c_strings(env);

  std::array<int, 2> fds{-1, -1};
  if (pipe2(fds.data(), O_CLOEXEC) != 0) return errno;
  // With fener's own 0-2 closed the pipe could land there and be clobbered below.
  for (int& fd : fds) {
    if (fd > 2) continue;
    const int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    const int err = errno;
    close(fd);
    fd = moved;
    if (moved < 0) {
      for (int other : fds)
        if (other >= 0) close(other);
      return err;
    }
  }

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  int rc = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  // Descriptors opened without O_CLOEXEC (by libraries) must not leak into the child.
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  // Its own process group, so a deadline stops whatever it started; no blocked signals
  // and default dispositions (ignored signals would otherwise survive the exec).
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
  if (rc == 0)
    rc = posix_spawnattr_setflags(
        &attr,
        static_cast<short>(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  if (rc == 0) rc = posix_spawnp(&out.pid, c_argv[0], &actions, &attr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return rc;
  }
  out.output_fd = fds[0];
  return 0;
}

int pidfd_open(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

// One running child: its output pipe, its exit, its deadline. Every handler holds a
// shared_ptr to it; all run on the caller's executor.
class Run : public std::enable_shared_from_this<Run> {
 public:
  using Done = std::function<void(ProcessResult)>;

  Run(const asio::any_io_executor& ex, ProcessRequest req, Done done)
      : ex_(ex),
        req_(std::move(req)),
        done_(std::move(done)),
        pipe_(ex),
        pidfd_(ex),
        timer_(ex),
        poll_timer_(ex) {
    result_.timeout = req_.timeout;
  }

  // Last resort when the event loop is torn down while the child runs (fener exiting):
  // stop and reap it here, blocking, rather than leave it behind.
  ~Run() {
    if (result_.started && !reaped_) {
      signal_group(SIGKILL);
      int status = 0;
      while (waitpid(result_.pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  void start() {
    if (req_.argv.empty() || req_.argv[0].empty()) return fail_to_start("no command given");
    for (const auto& kv : req_.env_extra) {
      if (kv.find('=') == std::string::npos || kv.front() == '=')
        return fail_to_start("environment entry \"" + kv + "\" is not KEY=VALUE");
    }
    Spawned child;
    const int err = spawn_child(req_, child);
    if (err != 0) return fail_to_start(errno_text(err));

    started_at_ = Clock::now();
    result_.started = true;
    result_.pid = child.pid;
    // Armed first: reaping (possibly right below) re-arms this timer for the output drain.
    if (req_.timeout.count() > 0) {
      timer_.expires_after(req_.timeout);
      timer_.async_wait([self = shared_from_this()](boost::system::error_code e) {
        if (e || self->stopping_ || self->reaped_) return;
        self->result_.timed_out = true;
        self->stop();
      });
    }
    boost::system::error_code ec;
    pipe_.assign(child.output_fd, ec);
    if (ec) {
      close(child.output_fd);
      output_done_ = true;
    } else {
      read_output();
    }

    const int pidfd = pidfd_open(child.pid);
    if (pidfd >= 0) {
      pidfd_.assign(pidfd, ec);
      if (ec) close(pidfd);
    }
    if (pidfd >= 0 && !ec) {
      wait_exit();
    } else {
      poll_exit();
    }
  }

  // From the caller's cancellation slot (already on our executor).
  void cancel() {
    if (finished_) return;
    if (reaped_) {
      // Only the output drain is left: stop it now.
      boost::system::error_code ignored;
      pipe_.cancel(ignored);
      return;
    }
    if (stopping_) return;
    result_.cancelled = true;
    stop();
  }

 private:
  void fail_to_start(std::string why) {
    result_.error = std::move(why);
    finished_ = true;
    asio::post(ex_,
               [done = std::move(done_), r = std::move(result_)]() mutable { done(std::move(r)); });
  }

  void read_output() {
    pipe_.async_read_some(asio::buffer(buf_),
                          [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                            self->keep(n);
                            if (ec) {
                              self->output_done_ = true;
                              boost::system::error_code ignored;
                              self->pipe_.close(ignored);
                              self->maybe_finish();
                              return;
                            }
                            self->read_output();
                          });
  }

  void keep(std::size_t n) {
    auto& out = result_.output;
    const std::size_t room = out.size() < req_.max_output ? req_.max_output - out.size() : 0;
    const std::size_t take = n < room ? n : room;
    out.append(buf_.data(), take);
    result_.truncated += n - take;
  }

  void wait_exit() {
    pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                      [self = shared_from_this()](boost::system::error_code ec) {
                        if (ec == asio::error::operation_aborted && self->reaped_) return;
                        // Readable means exited; anything else, or a spurious wake-up,
                        // falls back to polling rather than waiting on an edge again.
                        if (!self->try_reap()) self->poll_exit();
                      });
  }

  void poll_exit() {
    if (try_reap()) return;
    poll_timer_.expires_after(kPollInterval);
    poll_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->reaped_) return;
      self->poll_exit();
    });
  }

  // True once the child is reaped (now or before).
  bool try_reap() {
    if (reaped_) return true;
    int status = 0;
    pid_t r;
    do {
      r = waitpid(result_.pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return false;
    if (r < 0) {
      // ECHILD: someone else reaped it (SIGCHLD ignored, a waitpid(-1) elsewhere).
      result_.error = "exit status lost: " + errno_text(errno);
    } else {
      // The leader is a zombie until now, so its pid still names the group: stop the
      // rest of a group we were already stopping before letting the pid go.
      if (stopping_) signal_group(SIGKILL);
      if (WIFEXITED(status)) {
        result_.exit_code = WEXITSTATUS(status);
      } else if (WIFSIGNALED(status)) {
        result_.term_signal = WTERMSIG(status);
      }
    }
    reaped_ = true;
    result_.elapsed = since(started_at_);
    boost::system::error_code ignored;
    pidfd_.close(ignored);
    poll_timer_.cancel();
    if (!output_done_) {
      timer_.expires_after(kDrainGrace);
      timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (ec || self->output_done_) return;
        boost::system::error_code ignored2;
        self->pipe_.cancel(ignored2);
      });
    }
    maybe_finish();
    return true;
  }

  // SIGTERM now, SIGKILL after the grace period unless it has exited by then.
  void stop() {
    stopping_ = true;
    signal_group(SIGTERM);
    timer_.expires_after(req_.kill_grace);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->reaped_) return;
      self->signal_group(SIGKILL);
    });
  }

  // Only while the child is unreaped: its pid cannot have been reused yet.
  void signal_group(int sig) {
    if (reaped_) return;
    if (kill(-result_.pid, sig) != 0) kill(result_.pid, sig);
  }

  void maybe_finish() {
    if (finished_ || !reaped_ || !output_done_) return;
    finished_ = true;
    timer_.cancel();
    asio::post(ex_,
               [done = std::move(done_), r = std::move(result_)]() mutable { done(std::move(r)); });
  }

  asio::any_io_executor ex_;
  ProcessRequest req_;
  Done done_;
  ProcessResult result_;
  Clock::time_point started_at_{};
  asio::posix::stream_descriptor pipe_;
  asio::posix::stream_descriptor pidfd_;
  asio::steady_timer timer_;       // deadline, then kill grace, then output drain
  asio::steady_timer poll_timer_;  // exit polling without a pidfd
  std::array<char, 16 * 1024> buf_{};
  bool output_done_ = false;
  bool reaped_ = false;
  bool stopping_ = false;
  bool finished_ = false;
};

}  // namespace

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  if (abbrev == nullptr) return "signal " + std::to_string(sig);
  return std::string("SIG") + abbrev;
}

std::string ProcessResult::describe() const {
  if (!started) return "could not start: " + error;
  std::string what;
  if (term_signal != 0) {
    what = "killed by " + signal_name(term_signal);
  } else if (exit_code >= 0) {
    what = "exit " + std::to_string(exit_code);
  } else {
    what = error.empty() ? "exit status unknown" : error;
  }
  if (timed_out) return what + " after timeout " + std::to_string(timeout.count()) + " ms";
  if (cancelled) return what + " after cancellation at " + std::to_string(elapsed.count()) + " ms";
  return what + " in " + std::to_string(elapsed.count()) + " ms";
}

asio::awaitable<ProcessResult> run_process(ProcessRequest req) {
  auto ex = co_await asio::this_coro::executor;
  // A named initiation, not a lambda inside the co_await: GCC 12 mishandles the latter.
  auto init = [ex](auto handler, ProcessRequest r) {
    using Handler = decltype(handler);
    auto slot = asio::get_associated_cancellation_slot(handler);
    auto h = std::make_shared<Handler>(std::move(handler));
    auto done = [h](ProcessResult result) {
      asio::get_associated_cancellation_slot(*h).clear();
      Handler handler_now = std::move(*h);
      std::move(handler_now)(std::move(result));
    };
    auto run = std::make_shared<Run>(ex, std::move(r), std::move(done));
    if (slot.is_connected()) {
      slot.assign([weak = std::weak_ptr<Run>(run), ex](asio::cancellation_type) {
        asio::post(ex, [weak] {
          if (auto self = weak.lock()) self->cancel();
        });
      });
    }
    run->start();
  };
  co_return co_await asio::async_initiate<const decltype(asio::use_awaitable)&,
                                          void(ProcessResult)>(std::move(init), asio::use_awaitable,
                                                               std::move(req));
}

}  // namespace fener
