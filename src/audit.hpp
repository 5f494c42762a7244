// The audit log: one JSON line per remedy decision (rule, finding, remedy, mode, guard
// verdicts, lock, outcome, duration), next to the normal log, so "what did fener do and
// why" has an answer that a program can read. Appends happen on the worker thread, in
// order; the event loop never waits on the disk.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace fener {

class Worker;

class AuditLog {
 public:
  // path "" keeps records in the normal log only. Opening errors are reported by open().
  AuditLog(Worker& worker, std::string path);
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Creates the directory if needed and opens for appending; "" on success, else why.
  std::string open();
  // Adds "time" (UTC, RFC 3339 with milliseconds) and writes the line.
  void write(nlohmann::json record);
  const std::string& path() const { return path_; }

 private:
  struct File;  // closes on destruction; shared with writes still queued on the worker
  Worker& worker_;
  std::string path_;
  std::shared_ptr<File> file_;
};

std::string utc_timestamp();

}  // namespace fener
