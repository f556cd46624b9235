// Authentication of API requests (CONTRACT §3). Until the metadata store lands, the
// only principal besides "disabled" mode is the admin token. Comparisons are constant
// time.
#pragma once

#include <string>
#include <string_view>

namespace joule::net {
struct HttpRequest;
}

namespace joule::api {

enum class Principal { kNone, kAdmin };

class Authenticator {
 public:
  // mode: "required" or "disabled".
  Authenticator(std::string mode, std::string admin_token);
  bool disabled() const { return disabled_; }
  // kNone when the request carries no valid token (→ 401).
  Principal Authenticate(const net::HttpRequest& request) const;

 private:
  bool disabled_;
  std::string admin_token_;
};

bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace joule::api
