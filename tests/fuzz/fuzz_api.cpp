// HTTP requests to fener's own API: the bytes go through the server's request parsing
// (Boost.Beast, the same limits), then the route table, path decoding, token check and
// handlers: the status routes and the peer file API, whose root is a scratch directory
// under /dev/shm holding an allow-listed file, a file that is not, a symlink and a
// directory. The input is also read as a peer listing (what a leader answers to
// GET /v1/peer/files) and compared with this node's.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "src/api_server.hpp"
#include "src/config.hpp"
#include "src/peer_files.hpp"
#include "src/status.hpp"
#include "src/worker.hpp"
#include "tests/fuzz/fuzz.hpp"

namespace {

namespace fs = std::filesystem;

struct Harness {
  fs::path dir = fs::path("/dev/shm") / ("fener-fuzz-api-" + std::to_string(getpid()));
  fener::Config config;
  boost::asio::io_context io;
  fener::Worker worker;
  std::optional<fener::ApiServer> server;

  Harness() {
    fs::create_directories(dir / "data" / ".dir.swp");
    std::ofstream(dir / "data" / ".a.swp") << "swap";
    std::ofstream(dir / "data" / "postgresql.conf") << "port = 5432\n";
    std::ofstream(dir / "secret") << "secret";
    fs::create_symlink(dir / "secret", dir / "data" / ".link.swp");
    config.node_name = "kaptan1";
    config.peer_files = {{"data_dir", (dir / "data").string(), {".*.swp"}}};
    fener::ApiServerOptions o;
    o.listen = "127.0.0.1:0";  // never started: requests come through handle()
    o.node_name = "kaptan1";
    o.token = "fuzz-token";
    server.emplace(io, o);
    fener::add_peer_file_routes(*server, config, worker);
    fener::add_status_routes(*server, [] {
      fener::StatusSnapshot s;
      s.node = "kaptan1";
      s.scope = "liman";
      return s;
    });
  }
  ~Harness() {
    server.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  static Harness h;
  const std::string input = fuzz::text(data, size);
  auto parsed = parse_api_request(input, h.server->options());
  if (auto* req = std::get_if<ApiRequest>(&parsed)) {
    req->remote = "127.0.0.1:40312";
    std::optional<ApiResponse> resp;
    boost::asio::co_spawn(h.io, h.server->handle(std::move(*req)),
                          [&resp](std::exception_ptr e, ApiResponse r) {
                            if (e) std::rethrow_exception(e);
                            resp = std::move(r);
                          });
    h.io.restart();
    h.io.run();
    if (!resp) __builtin_trap();  // every request gets an answer
  }
  if (const auto doc = parse_json(input)) {
    std::string why;
    if (auto listing = parse_peer_listing(*doc, &why)) {
      const PeerListing local = list_peer_roots("kaptan1", h.config.peer_files);
      (void)compare_peer_files(*listing, local, h.config.peer_files);
    }
  }
  return 0;
}
