#include "web/web_routes.h"

#include <gtest/gtest.h>

#include <optional>

#include "net/router.h"
#include "web/embedded_assets.h"

namespace joule::web {
namespace {

const std::string* FindHeader(const net::HttpResponse& res, std::string_view name) {
  for (const auto& [k, v] : res.headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

net::HttpResponse Get(const net::Router& router, std::string target,
                      net::HttpHeaders headers = {}) {
  net::HttpRequest req;
  req.method = "GET";
  req.target = target;
  req.path = target;
  req.headers = std::move(headers);
  std::optional<net::HttpResponse> out;
  router.Dispatch(req, net::Responder::FromCallback([&](net::HttpResponse r) { out = r; }));
  EXPECT_TRUE(out.has_value());
  return out.value_or(net::HttpResponse{});
}

TEST(WebRoutes, ServesIndexAtRootWithValidators) {
  net::Router router;
  AddWebRoutes(router);
  net::HttpResponse res = Get(router, "/");
  ASSERT_EQ(res.status, 200);
  EXPECT_EQ(res.content_type, "text/html; charset=utf-8");
  EXPECT_NE(res.body.find("<html"), std::string::npos);
  ASSERT_NE(FindHeader(res, "ETag"), nullptr);
  EXPECT_EQ(*FindHeader(res, "Cache-Control"), "no-cache");
  EXPECT_NE(FindHeader(res, "Content-Security-Policy"), nullptr);

  net::HttpResponse again = Get(router, "/", {{"if-none-match", *FindHeader(res, "ETag")}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  EXPECT_EQ(Get(router, "/", {{"if-none-match", "\"other\""}}).status, 200);
}

TEST(WebRoutes, ServesEveryAssetWithItsTypeAndImmutableCaching) {
  net::Router router;
  AddWebRoutes(router);
  size_t assets = 0;
  for (const EmbeddedAsset& a : EmbeddedAssets()) {
    std::string_view path = a.path;
    if (!path.starts_with("/assets/")) continue;
    ++assets;
    net::HttpResponse res = Get(router, std::string(path));
    ASSERT_EQ(res.status, 200) << path;
    EXPECT_EQ(res.body, a.body());
    EXPECT_EQ(res.content_type, a.content_type);
    EXPECT_EQ(*FindHeader(res, "Cache-Control"), "public, max-age=31536000, immutable");
    if (path.ends_with(".js")) {
      EXPECT_EQ(res.content_type, "text/javascript; charset=utf-8");
    } else if (path.ends_with(".css")) {
      EXPECT_EQ(res.content_type, "text/css; charset=utf-8");
    }
  }
  EXPECT_GT(assets, 0u) << "the dashboard build embedded no assets";
}

TEST(WebRoutes, GzipOnlyWhenAccepted) {
  net::Router router;
  AddWebRoutes(router);
  const EmbeddedAsset* gz = nullptr;
  for (const EmbeddedAsset& a : EmbeddedAssets()) {
    if (a.gzip_data) gz = &a;
  }
  ASSERT_NE(gz, nullptr);
  std::string path = std::string(gz->path) == "/index.html" ? "/" : gz->path;
  net::HttpResponse zipped = Get(router, path, {{"accept-encoding", "br, GZip;q=0.8"}});
  ASSERT_NE(FindHeader(zipped, "Content-Encoding"), nullptr);
  EXPECT_EQ(zipped.body, gz->gzip_body());
  EXPECT_EQ(static_cast<unsigned char>(zipped.body[0]), 0x1f);  // gzip magic
  net::HttpResponse plain = Get(router, path, {{"accept-encoding", "gzip;q=0, br"}});
  EXPECT_EQ(FindHeader(plain, "Content-Encoding"), nullptr);
  EXPECT_EQ(plain.body, gz->body());
}

// The gzip and identity representations are different bytes: each has its own strong ETag,
// and If-None-Match matches the representation the request would get (found by a
// black-box test: both carried the identity's ETag).
TEST(WebRoutes, EachEncodingHasItsOwnEtag) {
  net::Router router;
  AddWebRoutes(router);
  size_t checked = 0;
  for (const EmbeddedAsset& a : EmbeddedAssets()) {
    if (!a.gzip_data) continue;
    ++checked;
    const std::string path = std::string(a.path) == "/index.html" ? "/" : a.path;
    const net::HttpHeaders gzip = {{"accept-encoding", "gzip"}};
    net::HttpResponse plain = Get(router, path);
    net::HttpResponse zipped = Get(router, path, gzip);
    ASSERT_NE(FindHeader(plain, "ETag"), nullptr);
    ASSERT_NE(FindHeader(zipped, "ETag"), nullptr);
    const std::string plain_tag = *FindHeader(plain, "ETag"),
                      zipped_tag = *FindHeader(zipped, "ETag");
    EXPECT_EQ(plain_tag, a.etag);
    EXPECT_NE(plain_tag, zipped_tag) << path;
    EXPECT_EQ(zipped_tag, plain_tag.substr(0, plain_tag.size() - 1) + "-gz\"");

    auto with = [](net::HttpHeaders h, std::string inm) {
      h.emplace_back("if-none-match", std::move(inm));
      return h;
    };
    // Its own tag: 304 carrying that tag.
    net::HttpResponse again = Get(router, path, with(gzip, zipped_tag));
    EXPECT_EQ(again.status, 304) << path;
    EXPECT_EQ(*FindHeader(again, "ETag"), zipped_tag);
    EXPECT_EQ(Get(router, path, with({}, plain_tag)).status, 304) << path;
    EXPECT_EQ(Get(router, path, with({}, "W/" + plain_tag)).status, 304) << path;
    // The other encoding's tag: the full answer.
    net::HttpResponse other = Get(router, path, with(gzip, plain_tag));
    EXPECT_EQ(other.status, 200) << path;
    EXPECT_NE(FindHeader(other, "Content-Encoding"), nullptr);
    EXPECT_EQ(Get(router, path, with({}, zipped_tag)).status, 200) << path;
    // A cache holding both lists both: 304 with the tag of the one it should use.
    const std::string both = plain_tag + ", " + zipped_tag;
    EXPECT_EQ(*FindHeader(Get(router, path, with(gzip, both)), "ETag"), zipped_tag);
    EXPECT_EQ(*FindHeader(Get(router, path, with({}, both)), "ETag"), plain_tag);
  }
  EXPECT_GT(checked, 0u) << "no embedded file has a gzip copy";
}

TEST(WebRoutes, UnknownAssetIs404) {
  net::Router router;
  AddWebRoutes(router);
  EXPECT_EQ(Get(router, "/assets/nope.js").status, 404);
  EXPECT_EQ(Get(router, "/assets/").status, 404);
}

}  // namespace
}  // namespace joule::web
