// An owned file descriptor, closed when it goes out of scope.
#pragma once

#include <unistd.h>

namespace fener {

struct Fd {
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int fd;
};

}  // namespace fener
