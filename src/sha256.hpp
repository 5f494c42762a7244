// SHA-256 through OpenSSL's EVP interface: file digests for the peer file API, equal
// length digests of tokens so that comparing them in constant time leaks no length, and
// HMAC-SHA256 signatures of alert deliveries.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace fener {

using Sha256Digest = std::array<std::uint8_t, 32>;

// Incremental hashing, for files read in chunks.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view data);
  Sha256Digest finish();  // once; the object is spent afterwards

 private:
  void* ctx_;  // EVP_MD_CTX*, kept out of this header
};

Sha256Digest sha256(std::string_view data);
std::string sha256_hex(std::string_view data);
std::string to_hex(const Sha256Digest& digest);  // lowercase

// HMAC-SHA256 (RFC 2104) of data under key.
Sha256Digest hmac_sha256(std::string_view key, std::string_view data);

// Constant-time equality of two digests (CRYPTO_memcmp).
bool digests_equal(const Sha256Digest& a, const Sha256Digest& b);

}  // namespace fener
