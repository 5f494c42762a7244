// /proc/net/tcp and /proc/net/tcp6 as the kernel prints them, and the address helpers the
// listening_sockets check applies to what they yield.
#include <string>

#include "src/procnet.hpp"
#include "tests/fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fener;
  const std::string input = fuzz::text(data, size);
  const ProcNetTable t = parse_proc_net_tcp(input);
  std::vector<ListeningSocket> sockets;
  for (const auto& l : t.listeners) {
    (void)normalize_address(l.address);
    (void)is_wildcard_address(l.address);
    (void)listener_matches(l, "127.0.0.1", 5432);
    ListeningSocket s;
    static_cast<TcpListener&>(s) = l;
    sockets.push_back(s);
  }
  (void)find_listener(sockets, "10.0.0.2", 2379);
  (void)decode_proc_address(input.substr(0, 64));
  (void)normalize_address(input.substr(0, 64));
  return 0;
}
