#include "net/router.h"

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "common/logging.h"
#include "net/url.h"

namespace joule::net {

namespace {

[[noreturn]] void BadRoute(const std::string& pattern, const char* why) {
  // A programming error (the routes are compiled in), at start: a log line like any other.
  logging::Error("net::Router: invalid route pattern, aborting",
                 {{"pattern", pattern}, {"why", why}});
  std::abort();
}

// "/a/b/" -> {"a", "b", ""}; "/" -> {""}. Up to 8 segments without a heap allocation.
using PathSegments = boost::container::small_vector<std::string_view, 8>;
PathSegments SplitPath(std::string_view path) {
  PathSegments out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

}  // namespace

void Router::Add(std::string method, std::string pattern, Handler handler, RouteOptions options) {
  if (pattern.empty() || pattern.front() != '/') BadRoute(pattern, "must start with '/'");
  if (!handler) BadRoute(pattern, "empty handler");
  Route route;
  PathSegments parts = SplitPath(pattern);
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string_view part = parts[i];
    if (part.empty() || part.front() != '{') {
      if (part.find_first_of("{}") != std::string_view::npos) {
        BadRoute(pattern, "braces must enclose a whole segment");
      }
      route.segments.push_back({SegmentKind::kLiteral, std::string(part)});
      continue;
    }
    if (part.size() < 3 || part.back() != '}') BadRoute(pattern, "malformed {name}");
    std::string_view name = part.substr(1, part.size() - 2);
    SegmentKind kind = SegmentKind::kParam;
    if (name.back() == '*') {
      if (i + 1 != parts.size()) BadRoute(pattern, "{name*} must be the last segment");
      name.remove_suffix(1);
      kind = SegmentKind::kRest;
    }
    if (name.empty() || name.find_first_of("{}*/") != std::string_view::npos) {
      BadRoute(pattern, "malformed {name}");
    }
    for (const Segment& s : route.segments) {
      if (s.kind != SegmentKind::kLiteral && s.text == name) BadRoute(pattern, "duplicate name");
    }
    route.segments.push_back({kind, std::string(name)});
  }
  for (const Route& r : routes_) {
    if (r.method == method && r.pattern == pattern) BadRoute(pattern, "added twice");
  }
  auto it = std::find_if(index_.begin(), index_.end(),
                         [&](const MethodIndex& m) { return m.method == method; });
  if (it == index_.end()) {
    index_.push_back({method, {}, {}});
    it = index_.end() - 1;
  }
  const size_t n = route.segments.size();
  if (route.segments.back().kind == SegmentKind::kRest) {
    it->with_rest.push_back(routes_.size());
  } else {
    if (it->by_segments.size() <= n) it->by_segments.resize(n + 1);
    it->by_segments[n].push_back(routes_.size());
  }
  route.method = std::move(method);
  route.pattern = std::move(pattern);
  route.handler = std::move(handler);
  route.options = std::move(options);
  routes_.push_back(std::move(route));
}

const Router::MethodIndex* Router::IndexFor(std::string_view method) const {
  for (const MethodIndex& m : index_) {
    if (m.method == method) return &m;
  }
  return nullptr;
}

// Matching compares raw segments: only a segment with a '%' is decoded (rarely), and only
// the winning route's parameters are decoded and stored (`params` null: just test).
bool Router::Match(const Route& route, Segments path, bool any_escaped,
                   std::map<std::string, std::string>* params) {
  if (params != nullptr) params->clear();
  const auto& segs = route.segments;
  std::string decoded;
  for (size_t i = 0; i < segs.size(); ++i) {
    const Segment& seg = segs[i];
    if (seg.kind == SegmentKind::kRest) {
      std::string rest;
      for (size_t j = i; j < path.size(); ++j) {
        if (j > i) rest += '/';
        rest.append(path[j]);
      }
      if (!PercentDecode(rest, false, &decoded)) return false;
      if (params != nullptr) (*params)[seg.text] = std::move(decoded);
      return true;
    }
    if (i >= path.size()) return false;
    const std::string_view raw = path[i];
    const bool escaped = any_escaped && raw.find('%') != std::string_view::npos;
    if (seg.kind == SegmentKind::kLiteral) {
      if (!escaped) {
        if (raw != seg.text) return false;
        continue;
      }
      if (!PercentDecode(raw, false, &decoded) || decoded != seg.text) return false;
      continue;
    }
    if (raw.empty()) return false;  // a non-empty escape never decodes to nothing
    if (escaped) {
      if (!PercentDecode(raw, false, &decoded)) return false;
    } else if (params != nullptr) {
      decoded.assign(raw);
    }
    if (params != nullptr) (*params)[seg.text] = std::move(decoded);
  }
  return segs.size() == path.size();
}

int Router::CompareSpecificity(const Route& a, const Route& b) {
  size_t n = std::min(a.segments.size(), b.segments.size());
  for (size_t i = 0; i < n; ++i) {
    int ka = static_cast<int>(a.segments[i].kind);
    int kb = static_cast<int>(b.segments[i].kind);
    if (ka != kb) return ka - kb;
  }
  return 0;
}

const Router::Route* Router::Find(std::string_view method, Segments path, bool escaped,
                                  std::map<std::string, std::string>* params) const {
  // Among equally specific matches, the route added first wins (as when every route was
  // tried in order).
  const Route* best = nullptr;
  auto consider = [&](size_t i) {
    const Route& r = routes_[i];
    if (!Match(r, path, escaped, nullptr)) return;
    if (best == nullptr) {
      best = &r;
      return;
    }
    const int c = CompareSpecificity(r, *best);
    if (c < 0 || (c == 0 && &r < best)) best = &r;
  };
  auto consider_method = [&](std::string_view m) {
    const MethodIndex* index = IndexFor(m);
    if (index == nullptr) return;
    if (path.size() < index->by_segments.size()) {
      for (size_t i : index->by_segments[path.size()]) consider(i);
    }
    for (size_t i : index->with_rest) consider(i);
  };
  consider_method(method);
  if (best == nullptr && method == "HEAD") consider_method("GET");
  if (best != nullptr && params != nullptr) Match(*best, path, escaped, params);
  return best;
}

std::string Router::RouteFor(std::string_view method, std::string_view target,
                             const RouteOptions** options) const {
  target = target.substr(0, target.find('?'));
  const PathSegments path = SplitPath(target);
  const Route* r =
      Find(method, {path.data(), path.size()}, target.find('%') != std::string_view::npos, nullptr);
  if (options != nullptr) *options = r == nullptr ? nullptr : &r->options;
  return r == nullptr ? std::string() : r->pattern;
}

const Router::Route* Router::Resolve(HttpRequest& req, HttpResponse* refusal) const {
  std::string_view raw_path = req.target.empty() ? std::string_view(req.path) : req.target;
  raw_path = raw_path.substr(0, raw_path.find('?'));
  const bool escaped = raw_path.find('%') != std::string_view::npos;
  std::string decoded;
  if (escaped && !PercentDecode(raw_path, false, &decoded)) {
    *refusal = HttpResponse::Error(400, "bad_request", "malformed percent-encoding in path");
    return nullptr;
  }
  const PathSegments segments = SplitPath(raw_path);
  const Segments path(segments.data(), segments.size());

  std::map<std::string, std::string> best_params;
  const Route* best = Find(req.method, path, escaped, &best_params);
  if (best == nullptr) {
    std::set<std::string> allowed;  // methods of routes whose path matches
    for (const Route& r : routes_) {
      if (Match(r, path, escaped, nullptr)) allowed.insert(r.method);
    }
    if (allowed.empty()) {
      if (!escaped) decoded.assign(raw_path);
      *refusal = HttpResponse::Error(404, "not_found", "no route for " + decoded);
      return nullptr;
    }
    if (allowed.count("GET") != 0) allowed.insert("HEAD");
    std::string allow;
    for (const std::string& m : allowed) {
      if (!allow.empty()) allow += ", ";
      allow += m;
    }
    *refusal = HttpResponse::Error(405, "method_not_allowed",
                                   req.method + " is not allowed here; allowed: " + allow);
    refusal->headers.emplace_back("Allow", allow);
    return nullptr;
  }
  req.route = best->pattern;
  req.path_params = std::move(best_params);
  return best;
}

std::optional<HttpResponse> Router::CheckHead(HttpRequest& head, uint64_t* max_body_bytes,
                                              const RouteOptions** options) const {
  HttpResponse refusal;
  const Route* route = Resolve(head, &refusal);
  if (options != nullptr) *options = route != nullptr ? &route->options : nullptr;
  if (route == nullptr) return refusal;
  *max_body_bytes = route->options.max_body_bytes;
  if (route->options.head_check) return route->options.head_check(head);
  return std::nullopt;
}

void Router::Dispatch(HttpRequest& req, Responder responder) const {
  HttpResponse refusal;
  const Route* route = Resolve(req, &refusal);
  if (route == nullptr) {
    responder.Send(std::move(refusal));
    return;
  }
  route->handler(req, std::move(responder));
}

}  // namespace joule::net
