#include "api/auth.h"

#include "ingest/validation.h"
#include "net/http_server.h"

namespace joule::api {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

Authenticator::Authenticator(std::string mode, std::string admin_token,
                             store::MetadataStore* metadata)
    : disabled_(mode == "disabled"), admin_token_(std::move(admin_token)), metadata_(metadata) {}

Caller Authenticator::Authenticate(const net::HttpRequest& request) const {
  Caller caller;
  if (disabled_) {
    caller.kind = Caller::Kind::kAdmin;
    return caller;
  }
  const std::string* h = request.Header("authorization");
  if (!h) {
    caller.problem = Caller::Problem::kNoHeader;
    return caller;
  }
  caller.problem = Caller::Problem::kNotBearer;
  // "Bearer" + one or more spaces + the token; the scheme name is case-insensitive
  // (RFC 9110 section 11.1).
  std::string_view v(*h);
  constexpr std::string_view kBearer = "bearer";
  if (v.size() <= kBearer.size()) return caller;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if ((v[i] | 0x20) != kBearer[i]) return caller;
  }
  v.remove_prefix(kBearer.size());
  if (v.empty() || v.front() != ' ') return caller;
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  if (v.empty()) return caller;
  caller.problem = Caller::Problem::kUnknownToken;
  if (!admin_token_.empty() && ConstantTimeEquals(v, admin_token_)) {
    caller.kind = Caller::Kind::kAdmin;
    caller.problem = Caller::Problem::kNone;
    return caller;
  }
  if (!metadata_) return caller;
  Result<store::Principal> p = metadata_->AuthenticateToken(v);
  if (!p.ok()) {
    caller.store_unavailable = p.status().code() == StatusCode::kUnavailable;
    return caller;
  }
  caller.problem = Caller::Problem::kNone;
  if (p->kind == store::PrincipalKind::kDevice) {
    caller.kind = Caller::Kind::kDevice;
    caller.device_id = p->device_id;
  } else {
    caller.kind = Caller::Kind::kOwner;
  }
  caller.owner_id = p->owner_id;
  return caller;
}

Result<store::Device> Authenticator::AuthorizeDeviceRead(const Caller& caller,
                                                         std::string_view device_id,
                                                         bool* registered) const {
  if (registered) *registered = false;
  if (!ingest::ValidDeviceId(device_id)) return Status::NotFound("no such device");
  Result<store::Device> device = metadata_ ? metadata_->GetDevice(device_id)
                                           : Result<store::Device>(Status::NotFound("no metadata"));
  if (!device.ok() && device.status().code() != StatusCode::kNotFound) return device.status();
  switch (caller.kind) {
    case Caller::Kind::kAdmin:
      if (device.ok()) {
        if (registered) *registered = true;
        return device;
      } else {
        store::Device empty;
        empty.device_id = std::string(device_id);
        return empty;
      }
    case Caller::Kind::kOwner:
      if (device.ok() && device->owner_id == caller.owner_id) {
        if (registered) *registered = true;
        return device;
      }
      return Status::NotFound("no such device");
    case Caller::Kind::kDevice:
      // Device tokens only ingest (CONTRACT §3), even their own device's data is owner
      // data: 403 there; another device's id answers like a missing one.
      if (device.ok() && device->device_id == caller.device_id) {
        return Status::PermissionDenied("device tokens may only ingest; use an owner key");
      }
      return Status::NotFound("no such device");
    case Caller::Kind::kNone:
      break;
  }
  return Status::Unauthenticated("missing or unknown token");
}

}  // namespace joule::api
