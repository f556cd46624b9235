// Router: maps (method, path pattern) to a Handler.
//
// Patterns are '/'-separated segments: a literal ("devices"), "{name}" capturing one
// non-empty segment, or, as the last segment only, "{name*}" capturing the rest of the path
// (possibly empty, slashes kept). Captured values are percent-decoded. When several
// patterns match, the most specific wins, segment by segment (literal before {name} before
// {name*}), so "/v1/devices/search" beats "/v1/devices/{id}" whatever the order of Add.
// A HEAD request with no HEAD route is served by the GET route (the server drops the body).
//
// Routes are added at startup; after that, Dispatch is thread-safe (const).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/http_message.h"
#include "net/responder.h"

namespace joule::net {

// Handlers run on an I/O thread and must not block: answer right away, or hand the work
// (and the Responder) to another thread.
using Handler = std::function<void(HttpRequest& req, Responder responder)>;

// What the server may decide from a request's head before it reads the body: a response
// to send at once (the body is not read and the connection closes after it), or nullopt
// to read the body and run the handler. `head` is the request as the handler would see
// it, route and path_params filled, but with an empty body. Runs on an I/O thread like a
// Handler, and only for requests that announce a body (a handler must still check
// everything itself: a request without a body goes straight to it).
using HeadCheck = std::function<std::optional<HttpResponse>(const HttpRequest& head)>;

struct RouteOptions {
  // A route that takes no body, or a tiny one: what it may be sent (and what the server
  // reads before the handler ignores it).
  static constexpr uint64_t kSmallBodyBytes = 4 * 1024;
  // The largest request body the route takes (capped by the server's own max_body_bytes):
  // a larger Content-Length is answered 413 before the body is read, a chunked body is
  // cut off at it.
  uint64_t max_body_bytes = kSmallBodyBytes;
  HeadCheck head_check;  // optional
  // Optional: called on the I/O thread when the server answers 413 because the body is over
  // max_body_bytes (a Content-Length over it, or a chunked body cut off at it) — the
  // handler never sees such a request (ingest counts it as a rejected request).
  std::function<void()> on_body_too_large;
};

class Router {
 public:
  // REQUIRES: `pattern` starts with '/', its braces are well formed, and (method, pattern)
  // was not added before. Violations are programming errors and abort with a message.
  void Add(std::string method, std::string pattern, Handler handler, RouteOptions options = {});

  // Matches `req` (by req.target's path, or req.path when target is empty), fills
  // req.route and req.path_params, and calls the handler. Otherwise answers
  // 404 not_found, or 405 method_not_allowed with an Allow header when the path matches
  // routes of other methods, or 400 bad_request for a malformed escape in the path.
  void Dispatch(HttpRequest& req, Responder responder) const;

  // For the server, once a request's head is parsed and before its body is read: finds
  // the route as Dispatch would (filling head.route and head.path_params) and returns
  // what to answer without reading the body — Dispatch's 400, 404 or 405, or the route's
  // head check's refusal — or nullopt, with *max_body_bytes set to the route's limit.
  // `options` (may be null): set to the route's options when a route serves it, else null.
  std::optional<HttpResponse> CheckHead(HttpRequest& head, uint64_t* max_body_bytes,
                                        const RouteOptions** options = nullptr) const;

  // The pattern of the route that would serve (method, target), or "" if none would
  // (for labelling requests that fail before dispatch, e.g. 413).
  // `options` (may be null): set to that route's options, or null.
  std::string RouteFor(std::string_view method, std::string_view target,
                       const RouteOptions** options = nullptr) const;

  size_t size() const { return routes_.size(); }

 private:
  enum class SegmentKind { kLiteral = 0, kParam = 1, kRest = 2 };
  struct Segment {
    SegmentKind kind;
    std::string text;  // literal text, or the parameter name
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler handler;
    RouteOptions options;
  };
  using Segments = std::span<const std::string_view>;
  // True if `route` matches the (raw, not yet decoded) path segments; then fills `params`
  // with the decoded captures unless it is nullptr. `escaped`: some segment has a '%'
  // (when not, no segment is searched for one).
  static bool Match(const Route& route, Segments path, bool escaped,
                    std::map<std::string, std::string>* params);
  // Negative if a is more specific than b, positive if less, 0 if equal.
  static int CompareSpecificity(const Route& a, const Route& b);
  // The most specific route for `method` (HEAD falls back to GET) and path, or nullptr;
  // fills `params` (if not nullptr) with its captures.
  const Route* Find(std::string_view method, Segments path, bool escaped,
                    std::map<std::string, std::string>* params) const;
  // The route that serves `req`, with req.route and req.path_params filled; or nullptr
  // and *refusal set to the 400, 404 or 405 answer.
  const Route* Resolve(HttpRequest& req, HttpResponse* refusal) const;

  // Routes of one method, by their number of segments (routes ending in {name*} apart),
  // so that a lookup tries only the few routes that could match the path's length instead
  // of every route (indices into routes_; a lookup took ~2,600 instructions of the
  // ~12,000 a keep-alive GET /healthz cost the server).
  struct MethodIndex {
    std::string method;
    std::vector<std::vector<size_t>> by_segments;  // [n]: routes of n segments, no {name*}
    std::vector<size_t> with_rest;                 // routes ending in {name*}
  };
  const MethodIndex* IndexFor(std::string_view method) const;

  std::vector<Route> routes_;
  std::vector<MethodIndex> index_;
};

}  // namespace joule::net
