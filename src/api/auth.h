// Authentication and authorization of API requests (CONTRACT §3). Three kinds of
// token: the admin token (config), owner keys and device tokens (metadata store, looked up
// by hash through the metadata cache). Comparisons are constant time. With
// auth.mode = "disabled" every request acts as admin (local demos only).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "store/metadata_store.h"

namespace joule::net {
struct HttpRequest;
}

namespace joule::api {

struct Caller {
  enum class Kind { kNone, kAdmin, kOwner, kDevice };
  Kind kind = Kind::kNone;
  std::string owner_id;   // kOwner, kDevice
  std::string device_id;  // kDevice
  // Kind::kNone because the token could not be checked: the metadata store is unreachable
  // and its cache does not hold the token (→ 503 + Retry-After, not 401).
  bool store_unavailable = false;
  // Why Kind::kNone, for the 401's message (found by a black-box test: a missing header, a
  // token without "Bearer " and a revoked token all read "missing or unknown token").
  enum class Problem { kNone, kNoHeader, kNotBearer, kUnknownToken };
  Problem problem = Problem::kNone;
  bool admin() const { return kind == Kind::kAdmin; }
};

class Authenticator {
 public:
  // mode: "required" or "disabled". `metadata` may be null (then only the admin token).
  Authenticator(std::string mode, std::string admin_token, store::MetadataStore* metadata);
  bool disabled() const { return disabled_; }
  // Kind::kNone when the request carries no valid token (→ 401; Unauthorized(caller)).
  Caller Authenticate(const net::HttpRequest& request) const;

  // Read access to one device's data and metadata. Admin (or auth disabled): any device;
  // its metadata when registered (else an empty device with just the id, and
  // *registered = false). Owner: only its own registered devices. Device token: nothing
  // (device tokens only ingest): PermissionDenied (403) on its own device. Everything else
  // is NotFound — never 403, so existence does not leak.
  Result<store::Device> AuthorizeDeviceRead(const Caller& caller, std::string_view device_id,
                                            bool* registered = nullptr) const;

 private:
  bool disabled_;
  std::string admin_token_;
  store::MetadataStore* metadata_;
};

bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace joule::api
