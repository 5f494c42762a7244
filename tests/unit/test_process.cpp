#include "src/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

using namespace fener;
using namespace std::chrono_literals;

namespace {

ProcessRequest request(std::vector<std::string> argv, std::chrono::milliseconds timeout = 10s) {
  ProcessRequest req;
  req.argv = std::move(argv);
  req.timeout = timeout;
  return req;
}

// Runs run_process to completion on a fresh loop (at most 15 s).
std::optional<ProcessResult> run(ProcessRequest req) {
  asio::io_context io;
  std::optional<ProcessResult> out;
  asio::co_spawn(io, run_process(std::move(req)), [&](std::exception_ptr e, ProcessResult r) {
    if (!e) out = std::move(r);
  });
  io.run_for(15s);
  return out;
}

// The pid is neither running nor a zombie of ours.
bool gone(pid_t pid) {
  errno = 0;
  const bool no_process = kill(pid, 0) != 0 && errno == ESRCH;
  errno = 0;
  const bool not_ours = waitpid(pid, nullptr, WNOHANG) < 0 && errno == ECHILD;
  return no_process && not_ours;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

TEST_SUITE("process") {
  TEST_CASE("/bin/true exits 0") {
    const auto r = run(request({"/bin/true"}));
    REQUIRE(r);
    CHECK(r->started);
    CHECK(r->ok());
    CHECK(r->exit_code == 0);
    CHECK(r->term_signal == 0);
    CHECK_FALSE(r->timed_out);
    CHECK_FALSE(r->cancelled);
    CHECK(r->output.empty());
    CHECK(r->pid > 0);
    CHECK(gone(r->pid));
    CHECK(starts_with(r->describe(), "exit 0 in "));
  }

  TEST_CASE("/bin/false exits 1; a bare name is looked up in PATH") {
    auto r = run(request({"/bin/false"}));
    REQUIRE(r);
    CHECK(r->exit_code == 1);
    CHECK_FALSE(r->ok());
    CHECK(starts_with(r->describe(), "exit 1 in "));

    r = run(request({"false"}));
    REQUIRE(r);
    CHECK(r->exit_code == 1);
  }

  TEST_CASE("stdout and stderr are captured together") {
    const auto r = run(request({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}));
    REQUIRE(r);
    CHECK(r->exit_code == 3);
    CHECK(r->output == "out\nerr\n");
    CHECK(r->truncated == 0);
  }

  TEST_CASE("output beyond max_output is read, counted and dropped") {
    auto req = request({"/bin/sh", "-c", "head -c 100000 /dev/zero"});
    req.max_output = 1000;
    const auto r = run(std::move(req));
    REQUIRE(r);
    CHECK(r->exit_code == 0);  // not blocked on a full pipe
    CHECK(r->output.size() == 1000);
    CHECK(r->truncated == 99000);
  }

  TEST_CASE("a child past its deadline is stopped with SIGTERM and reaped") {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = run(request({"/bin/sleep", "30"}, 200ms));
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(r);
    CHECK(r->started);
    CHECK(r->timed_out);
    CHECK(r->term_signal == SIGTERM);
    CHECK(r->exit_code == -1);
    CHECK(r->elapsed >= 200ms);
    CHECK(took < 2s);
    CHECK(gone(r->pid));
    CHECK(r->describe() == "killed by SIGTERM after timeout 200 ms");
  }

  TEST_CASE("a child ignoring SIGTERM gets SIGKILL after the grace period") {
    auto req = request({"/bin/sh", "-c", "trap '' TERM; sleep 30; echo survived"}, 100ms);
    req.kill_grace = 300ms;
    const auto r = run(std::move(req));
    REQUIRE(r);
    CHECK(r->timed_out);
    CHECK(r->term_signal == SIGKILL);
    CHECK(r->elapsed >= 400ms);
    CHECK(r->elapsed < 2s);
    CHECK(r->output.empty());
    CHECK(gone(r->pid));
    CHECK(r->describe() == "killed by SIGKILL after timeout 100 ms");
  }

  TEST_CASE("a missing binary does not start") {
    const auto r = run(request({"/nonexistent/fener-no-such-binary"}));
    REQUIRE(r);
    CHECK_FALSE(r->started);
    CHECK(r->error == "No such file or directory");
    CHECK(r->describe() == "could not start: No such file or directory");
    CHECK(r->pid == 0);
  }

  TEST_CASE("an empty command and a malformed environment entry do not start") {
    auto r = run(request({}));
    REQUIRE(r);
    CHECK_FALSE(r->started);
    CHECK(r->describe() == "could not start: no command given");

    auto req = request({"/bin/true"});
    req.env_extra = {"NOEQUALS"};
    r = run(std::move(req));
    REQUIRE(r);
    CHECK_FALSE(r->started);
    CHECK(r->error == "environment entry \"NOEQUALS\" is not KEY=VALUE");
  }

  TEST_CASE("stdin is /dev/null") {
    const auto r = run(request({"/bin/cat"}, 5s));
    REQUIRE(r);
    CHECK(r->exit_code == 0);
    CHECK_FALSE(r->timed_out);
  }

  TEST_CASE("env_extra is added to the environment and overrides it") {
    auto req = request({"/bin/sh", "-c", "echo \"$FENER_TEST_A $HOME\""});
    req.env_extra = {"FENER_TEST_A=hello", "HOME=/nowhere"};
    const auto r = run(std::move(req));
    REQUIRE(r);
    CHECK(r->output == "hello /nowhere\n");
  }

  TEST_CASE("the child does not inherit descriptors opened without O_CLOEXEC") {
    const int fd = open("/dev/null", O_RDONLY);  // deliberately inheritable
    REQUIRE(fd >= 0);
    REQUIRE(dup2(fd, 57) == 57);
    close(fd);
    const auto r = run(request(
        {"/bin/sh", "-c", "if [ -e /proc/self/fd/57 ]; then echo leaked; else echo closed; fi"}));
    close(57);
    REQUIRE(r);
    CHECK(r->output == "closed\n");
  }

  TEST_CASE("a signalled child reports its signal") {
    const auto r = run(request({"/bin/sh", "-c", "kill -KILL $$"}));
    REQUIRE(r);
    CHECK(r->term_signal == SIGKILL);
    CHECK(r->exit_code == -1);
    CHECK_FALSE(r->timed_out);
    CHECK(starts_with(r->describe(), "killed by SIGKILL in "));
  }

  TEST_CASE("a background grandchild holding the pipe does not hold the result back") {
    const auto r = run(request({"/bin/sh", "-c", "sleep 5 & echo started"}));
    REQUIRE(r);
    CHECK(r->exit_code == 0);
    CHECK(r->output == "started\n");
    CHECK(r->elapsed < 1s);
    kill(-r->pid, SIGKILL);  // the sleep, still in the child's process group
  }

  TEST_CASE("cancellation stops and reaps the child, then completes") {
    asio::io_context io;
    asio::cancellation_signal cancel;
    std::optional<ProcessResult> out;
    asio::co_spawn(
        io, run_process(request({"/bin/sleep", "30"}, 10s)),
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, ProcessResult r) {
          if (!e) out = std::move(r);
        }));
    asio::steady_timer timer(io, 200ms);
    timer.async_wait([&](boost::system::error_code) { cancel.emit(asio::cancellation_type::all); });
    const auto t0 = std::chrono::steady_clock::now();
    io.run_for(15s);
    REQUIRE(out);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(out->cancelled);
    CHECK_FALSE(out->timed_out);
    CHECK(out->term_signal == SIGTERM);
    CHECK(gone(out->pid));
    CHECK(starts_with(out->describe(), "killed by SIGTERM after cancellation at "));
  }

  TEST_CASE("signal_name") {
    CHECK(signal_name(SIGTERM) == "SIGTERM");
    CHECK(signal_name(SIGKILL) == "SIGKILL");
    CHECK(signal_name(1000) == "signal 1000");
  }
}
