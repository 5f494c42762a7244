// fener.yaml and patroni.yml discovery: each input is written to a file under /dev/shm
// (one directory per process) and loaded once as --config and once as --patroni-config.
// A bad file must end in ConfigError, never in another exception or a crash.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "src/config.hpp"
#include "src/config_error.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

struct Scratch {
  std::filesystem::path dir =
      std::filesystem::path("/dev/shm") / ("fener-fuzz-config-" + std::to_string(getpid()));
  Scratch() { std::filesystem::create_directories(dir); }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

void load(const fener::LoadOptions& o) {
  try {
    (void)fener::load_config(o);
  } catch (const fener::ConfigError&) {
    // The expected answer to a bad file.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Scratch scratch;
  const std::string file = (scratch.dir / "input.yml").string();
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  fener::LoadOptions as_fener;
  as_fener.config_file = file;
  load(as_fener);
  fener::LoadOptions as_patroni;
  as_patroni.patroni_config = file;
  load(as_patroni);
  return 0;
}
