// Journal detection, journal records and how log calls carry structured fields.
#include "src/journal_sink.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

using namespace fener;

namespace {

// A logger whose journal records land in `records`, installed as the default logger for
// the test's duration.
struct CapturedJournal {
  std::vector<std::vector<std::string>> records;
  std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  CapturedJournal() {
    auto sink = std::make_shared<JournalSink>([this](const std::vector<std::string>& r) {
      records.push_back(r);
      return 0;
    });
    auto logger = std::make_shared<spdlog::logger>("journal-test", sink);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~CapturedJournal() { spdlog::set_default_logger(previous); }
  CapturedJournal(const CapturedJournal&) = delete;
  CapturedJournal& operator=(const CapturedJournal&) = delete;
};

}  // namespace

TEST_SUITE("journal") {
  TEST_CASE("JOURNAL_STREAM names one device and inode") {
    CHECK(journal_stream_matches("8:12345", 8, 12345));
    CHECK(journal_stream_matches("64769:2", 64769, 2));
    CHECK_FALSE(journal_stream_matches("8:12345", 8, 12346));
    CHECK_FALSE(journal_stream_matches("8:12345", 9, 12345));
    for (const char* bad : {"", ":", "8:", ":12345", "8", "8:12345:1", "x:1", "8 :1", "8: 1",
                            "-8:12345", "8:0x10", "99999999999999999999:1"})
      CHECK_MESSAGE(!journal_stream_matches(bad, 8, 12345), bad);
  }

  TEST_CASE("stderr is the journal only when JOURNAL_STREAM is fd 2's own file") {
    struct stat st {};
    REQUIRE(::fstat(STDERR_FILENO, &st) == 0);
    const char* old = std::getenv("JOURNAL_STREAM");
    const std::string saved = old ? old : "";
    const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
    CHECK(stderr_is_journal());
    const std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
    ::setenv("JOURNAL_STREAM", other.c_str(), 1);
    CHECK_FALSE(stderr_is_journal());
    ::unsetenv("JOURNAL_STREAM");
    CHECK_FALSE(stderr_is_journal());
    if (old) ::setenv("JOURNAL_STREAM", saved.c_str(), 1);
  }

  TEST_CASE("priorities are syslog's") {
    CHECK(journal_priority(spdlog::level::debug) == 7);
    CHECK(journal_priority(spdlog::level::info) == 6);
    CHECK(journal_priority(spdlog::level::warn) == 4);
    CHECK(journal_priority(spdlog::level::err) == 3);
    CHECK(journal_priority(spdlog::level::critical) == 2);
  }

  TEST_CASE("an ordinary log call is MESSAGE, PRIORITY and the identifier") {
    CapturedJournal j;
    spdlog::warn("disk {} almost full", "/data");
    REQUIRE(j.records.size() == 1);
    CHECK(j.records[0] == std::vector<std::string>{"MESSAGE=disk /data almost full", "PRIORITY=4",
                                                   "SYSLOG_IDENTIFIER=fener"});
  }

  TEST_CASE("fields in scope are attached, nested scopes add and then drop theirs") {
    CapturedJournal j;
    {
      LogFields outer("RULE", "postgres_down");
      {
        LogFields inner(std::vector<LogField>{{"REMEDY", "fix_permissions"}});
        spdlog::info("running");
      }
      spdlog::info("done");
    }
    {
      LogFields empty("PREVIOUS_STATUS", "");
      spdlog::info("after");
    }
    REQUIRE(j.records.size() == 3);
    CHECK(j.records[0] == std::vector<std::string>{"MESSAGE=running", "PRIORITY=6",
                                                   "SYSLOG_IDENTIFIER=fener", "RULE=postgres_down",
                                                   "REMEDY=fix_permissions"});
    CHECK(j.records[1] == std::vector<std::string>{"MESSAGE=done", "PRIORITY=6",
                                                   "SYSLOG_IDENTIFIER=fener",
                                                   "RULE=postgres_down"});
    CHECK(j.records[2].size() == 3);  // no field outside the scopes, none without a value
    CHECK(current_log_fields().empty());
  }

  TEST_CASE("a check event logs its summary with CHECK, STATUS and NODE") {
    CapturedJournal j;
    Event e;
    e.kind = Event::Kind::check;
    e.node = "kaptan2";
    e.scope = "liman";
    e.subject = "patroni_node";
    e.state = "critical";
    e.previous = "passing";
    e.severity = Status::critical;
    e.summary = "check patroni_node: passing -> critical: PostgreSQL start failed";
    e.details = {{"message", "PostgreSQL start failed"}, {"check_type", "patroni_node"}};
    log_event(e);
    REQUIRE(j.records.size() == 1);
    CHECK(j.records[0] ==
          std::vector<std::string>{
              "MESSAGE=check patroni_node: passing -> critical: PostgreSQL start failed",
              "PRIORITY=3", "SYSLOG_IDENTIFIER=fener", "NODE=kaptan2", "SCOPE=liman",
              "CHECK=patroni_node", "CHECK_TYPE=patroni_node", "STATUS=critical",
              "PREVIOUS_STATUS=passing"});
    CHECK(current_log_fields().empty());
  }

  TEST_CASE("a remedy event logs RULE, REMEDY, OUTCOME and STATUS") {
    CapturedJournal j;
    Event e;
    e.kind = Event::Kind::remedy;
    e.node = "kaptan2";
    e.subject = "datadir_permissions";
    e.state = "started";
    e.severity = Status::warning;
    e.summary = "rule datadir_permissions: fix_permissions started";
    e.details = {{"remedy", "fix_permissions"}, {"attempt", 1}};
    log_event(e);
    REQUIRE(j.records.size() == 1);
    CHECK(j.records[0] ==
          std::vector<std::string>{"MESSAGE=rule datadir_permissions: fix_permissions started",
                                   "PRIORITY=4", "SYSLOG_IDENTIFIER=fener", "NODE=kaptan2",
                                   "RULE=datadir_permissions", "REMEDY=fix_permissions",
                                   "OUTCOME=started", "STATUS=warning"});
  }

  TEST_CASE("a passing event is info, unknown is a warning") {
    Event e;
    e.subject = "datadir";
    e.summary = "s";
    e.severity = Status::passing;
    CapturedJournal j;
    log_event(e);
    e.severity = Status::unknown;
    log_event(e);
    REQUIRE(j.records.size() == 2);
    CHECK(j.records[0][1] == "PRIORITY=6");
    CHECK(j.records[1][1] == "PRIORITY=4");
  }

  TEST_CASE("a record journald refuses is written to stderr instead") {
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const int saved_stderr = ::dup(STDERR_FILENO);
    REQUIRE(saved_stderr >= 0);
    REQUIRE(::dup2(pipe_fds[1], STDERR_FILENO) == STDERR_FILENO);
    {
      auto sink = std::make_shared<JournalSink>([](const std::vector<std::string>&) {
        return -111;  // -ECONNREFUSED: journald not there
      });
      spdlog::logger logger("journal-fallback", sink);
      logger.set_pattern("%l %v");
      logger.error("lost {}", 1);
    }
    ::dup2(saved_stderr, STDERR_FILENO);
    ::close(saved_stderr);
    ::close(pipe_fds[1]);
    std::string got;
    char buf[256];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0)
      got.append(buf, static_cast<std::size_t>(n));
    ::close(pipe_fds[0]);
    CHECK(got == "error lost 1\n");
  }

  TEST_CASE("make_logger picks the sink") {
    auto plain = make_logger("debug", false);
    auto journal = make_logger("warn", true);
    CHECK(plain->name() == "fener");
    CHECK(plain->level() == spdlog::level::debug);
    CHECK(journal->level() == spdlog::level::warn);
    REQUIRE(journal->sinks().size() == 1);
    CHECK(std::dynamic_pointer_cast<JournalSink>(journal->sinks()[0]) != nullptr);
    CHECK(std::dynamic_pointer_cast<JournalSink>(plain->sinks()[0]) == nullptr);
  }
}
