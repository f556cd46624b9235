#include "web/web_routes.h"

#include <string>

#include "net/router.h"
#include "web/embedded_assets.h"

namespace joule::web {
namespace {

// The page loads only its own scripts and styles and talks only to this origin.
// uPlot and Preact set inline style attributes, hence 'unsafe-inline' for styles only.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'";

// True if `list` (a comma-separated header value) contains `token` as a whole item,
// ignoring parameters (";q=...") and case. "gzip;q=0" counts as refused.
bool ListHasToken(std::string_view list, std::string_view token) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string_view::npos) end = list.size();
    std::string_view item = list.substr(pos, end - pos);
    std::string_view params;
    if (size_t semi = item.find(';'); semi != std::string_view::npos) {
      params = item.substr(semi + 1);
      item = item.substr(0, semi);
    }
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    bool equal = item.size() == token.size();
    for (size_t i = 0; equal && i < item.size(); ++i) {
      char c = item[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      equal = c == token[i];
    }
    if (equal) {
      std::string p(params);
      std::erase(p, ' ');
      return !(p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000");
    }
    pos = end + 1;
  }
  return false;
}

// If-None-Match: "*" or a list of (possibly weak) entity tags.
bool EtagMatches(std::string_view if_none_match, std::string_view etag) {
  size_t pos = 0;
  while (pos < if_none_match.size()) {
    size_t end = if_none_match.find(',', pos);
    if (end == std::string_view::npos) end = if_none_match.size();
    std::string_view tag = if_none_match.substr(pos, end - pos);
    while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
    while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
    pos = end + 1;
  }
  return false;
}

}  // namespace

net::HttpResponse ServeEmbedded(std::string_view path, const net::HttpRequest& request) {
  const EmbeddedAsset* asset = FindEmbeddedAsset(path);
  if (asset == nullptr) {
    return net::HttpResponse::Error(404, "not_found", "no such file: " + std::string(path));
  }
  const bool html = path.ends_with(".html");
  const std::string* accept = request.Header("accept-encoding");
  const bool gzip = asset->gzip_data != nullptr && accept && ListHasToken(*accept, "gzip");
  // Each encoding has its own strong validator, and If-None-Match is compared with the one
  // of the representation this request gets (found by a black-box test: both shared one).
  const char* etag = gzip ? asset->gzip_etag : asset->etag;
  net::HttpResponse res;
  res.headers.emplace_back("ETag", etag);
  res.headers.emplace_back("Cache-Control",
                           html ? "no-cache" : "public, max-age=31536000, immutable");
  res.headers.emplace_back("Vary", "Accept-Encoding");
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (html) {
    res.headers.emplace_back("Content-Security-Policy", kContentSecurityPolicy);
    res.headers.emplace_back("Referrer-Policy", "no-referrer");
    res.headers.emplace_back("X-Frame-Options", "DENY");
  }
  if (const std::string* inm = request.Header("if-none-match"); inm && EtagMatches(*inm, etag)) {
    res.status = 304;
    return res;
  }
  res.status = 200;
  res.content_type = asset->content_type;
  if (gzip) {
    res.headers.emplace_back("Content-Encoding", "gzip");
    res.body.assign(asset->gzip_body());
  } else {
    res.body.assign(asset->body());
  }
  return res;
}

void AddWebRoutes(net::Router& router) {
  router.Add("GET", "/", [](net::HttpRequest& req, net::Responder responder) {
    responder.Send(ServeEmbedded("/index.html", req));
  });
  router.Add("GET", "/assets/{path*}", [](net::HttpRequest& req, net::Responder responder) {
    const std::string* rest = req.PathParam("path");
    responder.Send(ServeEmbedded("/assets/" + (rest ? *rest : std::string()), req));
  });
}

}  // namespace joule::web
