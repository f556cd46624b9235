// The dashboard's files, compiled into the binary by build_dashboard.cmake (from web/dist
// or a fresh npm build of web/). Immutable static data: thread-safe, lives forever.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace joule::web {

struct EmbeddedAsset {
  const char* path;          // "/index.html", "/assets/index-3f2a.js"
  const char* content_type;  // "text/javascript; charset=utf-8"
  const char* etag;          // strong validator, quoted: "\"9c1e...\""
  const unsigned char* data;
  size_t size;
  const unsigned char* gzip_data;  // the same bytes gzip-compressed, or nullptr
  size_t gzip_size;
  // The gzip copy's own strong validator: `etag` with "-gz" inside the quotes ("\"9c1e...-gz\"");
  // nullptr without a gzip copy. A strong ETag names one representation's bytes, so the
  // two encodings cannot share one (RFC 9110 §8.8.3).
  const char* gzip_etag;

  std::string_view body() const { return {reinterpret_cast<const char*>(data), size}; }
  std::string_view gzip_body() const {
    return {reinterpret_cast<const char*>(gzip_data), gzip_size};
  }
};

// Every embedded file (generated code).
std::span<const EmbeddedAsset> EmbeddedAssets();

// The asset at `path` ("/index.html"), or nullptr.
const EmbeddedAsset* FindEmbeddedAsset(std::string_view path);

}  // namespace joule::web
