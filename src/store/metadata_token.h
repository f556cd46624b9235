// Credentials of the metadata store: random bearer tokens and their stored form.
// A token is a prefix ("jd_" device token, "jo_" owner key) and 32 random bytes
// (OpenSSL RAND_bytes) in unpadded base64url — 46 characters. Only SHA-256(token) is
// stored; a presented token is hashed, looked up by hash, and the stored hash compared
// with CRYPTO_memcmp (constant time). Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace joule::store {

inline constexpr std::string_view kDeviceTokenPrefix = "jd_";
inline constexpr std::string_view kOwnerKeyPrefix = "jo_";
inline constexpr size_t kTokenRandomBytes = 32;
inline constexpr size_t kTokenHashBytes = 32;

// A new token: prefix + base64url(32 random bytes).
Result<std::string> GenerateToken(std::string_view prefix);
// `n` random bytes as lower-case hex (for ids such as owner key ids).
Result<std::string> RandomHex(size_t n);
// SHA-256 of the token, 32 raw bytes.
std::string HashToken(std::string_view token);
// Whether the token has a known prefix and the right length and alphabet; a cheap
// filter before any database lookup.
bool TokenLooksValid(std::string_view token);
// Constant-time equality of two hashes (false when lengths differ).
bool HashesEqual(std::string_view a, std::string_view b);

}  // namespace joule::store
