#include "src/audit.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>

#include "src/worker.hpp"

namespace fener {

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms.count()));
  return out;
}

struct AuditLog::File {
  int fd = -1;
  ~File() {
    if (fd >= 0) ::close(fd);
  }
};

AuditLog::AuditLog(Worker& worker, std::string path) : worker_(worker), path_(std::move(path)) {}

std::string AuditLog::open() {
  if (path_.empty()) return "";
  std::error_code ec;
  const auto dir = std::filesystem::path(path_).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  auto f = std::make_shared<File>();
  f->fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (f->fd < 0) return "cannot open audit log " + path_ + ": " + strerror(errno);
  file_ = std::move(f);
  return "";
}

void AuditLog::write(nlohmann::json record) {
  record["time"] = utc_timestamp();
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  spdlog::debug("audit: {}", line.substr(0, line.size() - 1));
  if (!file_) return;
  // One thread in the worker pool keeps the lines in order.
  asio::post(worker_.pool(), [f = file_, line = std::move(line)] {
    const int fd = f->fd;
    std::size_t off = 0;
    while (off < line.size()) {
      const ssize_t n = ::write(fd, line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      off += static_cast<std::size_t>(n);
    }
  });
}

}  // namespace fener
