// Shared by the fuzz targets: the libFuzzer entry point each defines, and small helpers.
// Built either as libFuzzer binaries (FENER_FUZZ) or with replay_main.cpp, which feeds
// them their corpus as a test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "src/http_client.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fener::fuzz {

// What the code under test logs is noise here.
inline const bool kQuiet = (spdlog::set_level(spdlog::level::off), true);

inline std::string text(const std::uint8_t* data, std::size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// An answer of a peer as HttpClient hands it over.
inline HttpResult answer(long status, std::string body) {
  HttpResult r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("content-type", "application/json");
  return r;
}

}  // namespace fener::fuzz
