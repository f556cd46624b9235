// The passwords inside connection URLs (redis://, postgresql://, mqtt://, a libpq
// "key=value" string) are secrets: `joule config` prints them as "<set>", and no error or
// log message may carry them. Pure functions, thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace joule {

// What a redacted password reads as ("<set>", as `joule config` prints every secret).
inline constexpr std::string_view kRedactedSecret = "<set>";

// Where the passwords of `url` are (offset, length), non-empty ones only, in order: the
// userinfo's password of scheme://user:password@host… (for redis:// and rediss://, whose
// parser takes redis://password@host, also a userinfo without ':'), and the value of every
// password=… and sslpassword=… parameter (a libpq URI's ?password=, or a libpq "key=value"
// string; sslpassword is the passphrase of libpq's client key).
std::vector<std::pair<size_t, size_t>> UrlPasswordSpans(std::string_view url);

// `url` with each password replaced by "<set>"; a URL without one is returned as it is.
std::string RedactUrlPassword(std::string_view url);

// `text` (an error message, say from a parser or libpq, that may quote `url` or a part of
// it) with `url` replaced by its redacted form, and then every password of `url` (as given,
// and percent-decoded) replaced by "<set>" where it still stands as a password: in a URL's
// userinfo (":password@"), as a password= / sslpassword= value, or as a whole quoted token
// ("password", 'password'). Not every occurrence of its text: a one-letter or common-word
// password is a part of other words ("port", "connection"), which stay as they are.
std::string RedactUrlPasswordIn(std::string_view text, std::string_view url);

}  // namespace joule
