#include "api/error_response.h"

#include "api/auth.h"

namespace joule::api {

net::HttpResponse ErrorFromStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
      return net::HttpResponse::Error(400, "invalid_argument", status.message());
    case StatusCode::kNotFound:
      return net::HttpResponse::Error(404, "not_found", status.message());
    case StatusCode::kAlreadyExists:
      return net::HttpResponse::Error(409, "already_exists", status.message());
    case StatusCode::kUnauthenticated: {
      net::HttpResponse r = net::HttpResponse::Error(401, "unauthorized", status.message());
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
    case StatusCode::kPermissionDenied:
      return net::HttpResponse::Error(403, "forbidden", status.message());
    case StatusCode::kResourceExhausted:
      return net::HttpResponse::Error(413, "payload_too_large", status.message());
    case StatusCode::kUnavailable: {
      net::HttpResponse r = net::HttpResponse::Error(503, "unavailable", status.message());
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    default:
      return net::HttpResponse::Error(500, "internal", status.message());
  }
}

net::HttpResponse Unauthorized() {
  return ErrorFromStatus(Status::Unauthenticated("missing or unknown token"));
}

net::HttpResponse Unauthorized(const Caller& caller) {
  if (caller.store_unavailable) {
    return ErrorFromStatus(
        Status::Unavailable("cannot check the token now: the metadata store is unreachable"));
  }
  // What to fix, as far as it tells nothing about which tokens exist (found by a black-box
  // test: every case read "missing or unknown token").
  switch (caller.problem) {
    case Caller::Problem::kNoHeader:
      return ErrorFromStatus(
          Status::Unauthenticated("missing token: send 'Authorization: Bearer <token>'"));
    case Caller::Problem::kNotBearer:
      return ErrorFromStatus(Status::Unauthenticated(
          "the Authorization header is not a Bearer token: send 'Authorization: Bearer "
          "<token>'"));
    case Caller::Problem::kUnknownToken:
      return ErrorFromStatus(Status::Unauthenticated(
          "unknown token (mistyped, rotated, revoked, or its device deleted)"));
    case Caller::Problem::kNone:
      break;
  }
  return Unauthorized();
}

net::HttpResponse DeviceNotFound() {
  return net::HttpResponse::Error(404, "not_found", "no such device");
}

}  // namespace joule::api
