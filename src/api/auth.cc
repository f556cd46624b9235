#include "api/auth.h"

#include "net/http_server.h"

namespace joule::api {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Authenticator::Authenticator(std::string mode, std::string admin_token)
    : disabled_(mode == "disabled"), admin_token_(std::move(admin_token)) {}

Principal Authenticator::Authenticate(const net::HttpRequest& request) const {
  if (disabled_) return Principal::kAdmin;
  const std::string* h = request.Header("authorization");
  if (!h) return Principal::kNone;
  std::string_view v(*h);
  constexpr std::string_view kBearer = "Bearer ";
  if (v.size() <= kBearer.size() || v.substr(0, kBearer.size()) != kBearer) return Principal::kNone;
  v.remove_prefix(kBearer.size());
  if (!admin_token_.empty() && ConstantTimeEquals(v, admin_token_)) return Principal::kAdmin;
  return Principal::kNone;
}

}  // namespace joule::api
