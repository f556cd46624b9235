#include "net/router.h"

#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <string>

#include "net/sse_stream.h"
#include "net/url.h"

namespace joule::net {
namespace {

TEST(UrlTest, PercentDecode) {
  std::string out;
  ASSERT_TRUE(PercentDecode("plug%2D42%2fx+y", false, &out));
  EXPECT_EQ(out, "plug-42/x+y");
  ASSERT_TRUE(PercentDecode("a+b%20c", true, &out));
  EXPECT_EQ(out, "a b c");
  EXPECT_FALSE(PercentDecode("%4", false, &out));
  EXPECT_FALSE(PercentDecode("%zz", false, &out));
  EXPECT_FALSE(PercentDecode("abc%", false, &out));
}

// The decoder before runs were copied whole: one character at a time.
std::optional<std::string> ReferenceDecode(std::string_view in, bool plus_is_space) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (in.size() - i < 3 || hex(in[i + 1]) < 0 || hex(in[i + 2]) < 0) return std::nullopt;
      out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i] == '+' && plus_is_space ? ' ' : in[i]);
    }
  }
  return out;
}

TEST(UrlTest, PercentDecodeAgreesWithCharacterAtATime) {
  std::mt19937 rng(3);
  const std::string alphabet = "ab/%+2fF0zZ-.";
  std::string out = "left over";
  for (int i = 0; i < 100'000; ++i) {
    std::string in(rng() % 12, 'x');
    for (char& c : in) c = alphabet[rng() % alphabet.size()];
    const bool plus = rng() % 2 == 0;
    const std::optional<std::string> want = ReferenceDecode(in, plus);
    ASSERT_EQ(PercentDecode(in, plus, &out), want.has_value()) << in;
    if (want) {
      ASSERT_EQ(out, *want) << in;
    }
  }
}

TEST(UrlTest, ParseQuery) {
  HttpHeaders q;
  ASSERT_TRUE(ParseQuery("a=1&&b=x%20y&c&d=e%3Df+g", &q));
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>{"b", "x y"}));
  EXPECT_EQ(q[2], (std::pair<std::string, std::string>{"c", ""}));
  EXPECT_EQ(q[3], (std::pair<std::string, std::string>{"d", "e=f g"}));
  HttpHeaders bad;
  EXPECT_FALSE(ParseQuery("a=%g0", &bad));
}

TEST(UrlTest, ParseHostPort) {
  auto a = ParseHostPort("127.0.0.1:8080");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 8080);
  auto b = ParseHostPort("[::1]:0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->port, 0);
  auto c = ParseHostPort(":9000");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->host, "");
  EXPECT_FALSE(ParseHostPort("localhost").ok());
  EXPECT_FALSE(ParseHostPort("localhost:99999").ok());
  EXPECT_FALSE(ParseHostPort("localhost:8x").ok());
  EXPECT_FALSE(ParseHostPort("[::1]8080").ok());
}

TEST(HttpResponseTest, ErrorIsJson) {
  HttpResponse r = HttpResponse::Error(404, "not_found", "no \"device\"");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, R"({"error":{"code":"not_found","message":"no \"device\""}})");
}

TEST(SseStreamTest, EncodeEvent) {
  EXPECT_EQ(EncodeSseEvent("window", "{\"a\":1}"), "event: window\ndata: {\"a\":1}\n\n");
  EXPECT_EQ(EncodeSseEvent("", "x"), "data: x\n\n");
  EXPECT_EQ(EncodeSseEvent("a\nb", "l1\nl2\r\nl3\rl4"),
            "event: ab\ndata: l1\ndata: l2\ndata: l3\ndata: l4\n\n");
  EXPECT_EQ(EncodeSseEvent("e", ""), "event: e\ndata: \n\n");
}

// Dispatches a request and returns what the router (or handler) answered.
struct Dispatched {
  HttpResponse response;
  HttpRequest request;
};

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto echo = [this](HttpRequest& req, Responder r) {
      seen_ = req;
      r.Send(HttpResponse::Json(200, "{}"));
    };
    router_.Add("GET", "/v1/devices", echo);
    router_.Add("POST", "/v1/devices", echo);
    router_.Add("GET", "/v1/devices/{id}", echo);
    router_.Add("DELETE", "/v1/devices/{id}", echo);
    router_.Add("GET", "/v1/devices/search", echo);
    router_.Add("GET", "/v1/devices/{id}/metrics/realtime", echo);
    router_.Add("GET", "/assets/{path*}", echo);
    router_.Add("GET", "/", echo);
  }

  HttpResponse Dispatch(std::string method, std::string target) {
    HttpRequest req;
    req.method = std::move(method);
    req.target = std::move(target);
    std::optional<HttpResponse> got;
    seen_.reset();
    router_.Dispatch(req, Responder::FromCallback([&](HttpResponse r) { got = std::move(r); }));
    EXPECT_TRUE(got.has_value());
    return got.value_or(HttpResponse{});
  }

  Router router_;
  std::optional<HttpRequest> seen_;
};

TEST_F(RouterTest, CapturesDecodedParams) {
  HttpResponse r = Dispatch("GET", "/v1/devices/plug%2D42/metrics/realtime?windows=60");
  EXPECT_EQ(r.status, 200);
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/v1/devices/{id}/metrics/realtime");
  EXPECT_EQ(seen_->path_params.at("id"), "plug-42");
  ASSERT_NE(seen_->PathParam("id"), nullptr);
  EXPECT_EQ(seen_->PathParam("nope"), nullptr);
}

TEST_F(RouterTest, LiteralBeatsParamWhateverTheOrder) {
  Dispatch("GET", "/v1/devices/search");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/v1/devices/search");
  Dispatch("GET", "/v1/devices/searchx");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/v1/devices/{id}");
}

TEST_F(RouterTest, RestParamTakesTheRest) {
  Dispatch("GET", "/assets/js/app%20v2.js");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->path_params.at("path"), "js/app v2.js");
  Dispatch("GET", "/");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/");
}

// Routes are looked up by method and number of segments, and routes ending in {name*}
// apart; the most specific match still wins across those groups, and among equally
// specific ones the route added first.
TEST_F(RouterTest, MostSpecificWinsAcrossLengthsAndRestRoutes) {
  auto echo = [this](HttpRequest& req, Responder r) {
    seen_ = req;
    r.Send(HttpResponse::Json(200, "{}"));
  };
  router_.Add("GET", "/files/{rest*}", echo);
  router_.Add("GET", "/files/{name}", echo);
  router_.Add("GET", "/files/{other}", echo);  // as specific as {name}, added later
  router_.Add("GET", "/files/a/b", echo);
  Dispatch("GET", "/files/x");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/files/{name}");
  Dispatch("GET", "/files/a/b");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/files/a/b");
  Dispatch("GET", "/files/a/c");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/files/{rest*}");
  EXPECT_EQ(seen_->path_params.at("rest"), "a/c");
  Dispatch("GET", "/files");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/files/{rest*}");
  EXPECT_EQ(seen_->path_params.at("rest"), "");
  Dispatch("HEAD", "/files/x");
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/files/{name}");
  EXPECT_EQ(Dispatch("POST", "/files/x").status, 405);
  EXPECT_EQ(Dispatch("GET", "/v1/devices/a/b/c/d/e/f/g").status, 404);
}

TEST_F(RouterTest, UnknownPathIs404) {
  HttpResponse r = Dispatch("GET", "/v2/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("\"not_found\""), std::string::npos);
  EXPECT_FALSE(seen_.has_value());
  // An empty segment does not match {id}.
  EXPECT_EQ(Dispatch("GET", "/v1/devices//metrics/realtime").status, 404);
  EXPECT_EQ(Dispatch("GET", "/v1/devices/x/").status, 404);
}

TEST_F(RouterTest, WrongMethodIs405WithAllow) {
  HttpResponse r = Dispatch("PUT", "/v1/devices/plug-1");
  EXPECT_EQ(r.status, 405);
  EXPECT_NE(r.body.find("\"method_not_allowed\""), std::string::npos);
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Allow");
  EXPECT_EQ(r.headers[0].second, "DELETE, GET, HEAD");
}

TEST_F(RouterTest, HeadFallsBackToGet) {
  EXPECT_EQ(Dispatch("HEAD", "/v1/devices").status, 200);
  ASSERT_TRUE(seen_.has_value());
  EXPECT_EQ(seen_->route, "/v1/devices");
}

TEST_F(RouterTest, MalformedEscapeIs400) {
  EXPECT_EQ(Dispatch("GET", "/v1/devices/%zz").status, 400);
}

TEST_F(RouterTest, RouteForLabelsWithoutDispatching) {
  EXPECT_EQ(router_.RouteFor("GET", "/v1/devices/a?x=1"), "/v1/devices/{id}");
  EXPECT_EQ(router_.RouteFor("PATCH", "/v1/devices/a"), "");
  EXPECT_EQ(router_.RouteFor("GET", "/zzz"), "");
}

TEST(RouterDeathTest, BadPatternsAbort) {
  Router r;
  auto h = [](HttpRequest&, Responder) {};
  EXPECT_DEATH(r.Add("GET", "no-slash", h), "must start with");
  EXPECT_DEATH(r.Add("GET", "/a/{id", h), "malformed");
  EXPECT_DEATH(r.Add("GET", "/a/{rest*}/b", h), "last segment");
  EXPECT_DEATH(r.Add("GET", "/a/{x}/{x}", h), "duplicate");
  r.Add("GET", "/a", h);
  EXPECT_DEATH(r.Add("GET", "/a", h), "added twice");
}

TEST(ResponderTest, DroppedResponderAnswers500) {
  std::vector<int> statuses;
  {
    Responder r =
        Responder::FromCallback([&](HttpResponse resp) { statuses.push_back(resp.status); });
    Responder copy = r;  // NOLINT(performance-unnecessary-copy-initialization)
    EXPECT_FALSE(copy.completed());
  }
  EXPECT_EQ(statuses, std::vector<int>{500});
}

TEST(ResponderTest, OnlyTheFirstCompletionCounts) {
  std::vector<int> statuses;
  {
    Responder r =
        Responder::FromCallback([&](HttpResponse resp) { statuses.push_back(resp.status); });
    Responder copy = r;
    copy.Send(HttpResponse::Json(201, "{}"));
    EXPECT_TRUE(r.completed());
    r.Send(HttpResponse::Json(202, "{}"));
    EXPECT_EQ(r.StartStream(), nullptr);
  }
  EXPECT_EQ(statuses, std::vector<int>{201});
}

// CheckHead: what the server answers from a request's head before reading its body.
TEST_F(RouterTest, CheckHeadResolvesTheRouteAndItsLimitAndRunsItsHeadCheck) {
  int checks = 0;
  router_.Add(
      "PUT", "/v1/devices/{id}", [](HttpRequest&, Responder r) { r.Send(HttpResponse{}); },
      {.max_body_bytes = 1000,
       .head_check =
           [&checks](const HttpRequest& head) {
             ++checks;
             return head.path_params.at("id") == "no"
                        ? std::optional<HttpResponse>(HttpResponse::Error(401, "unauthorized", "x"))
                        : std::nullopt;
           },
       .on_body_too_large = {}});
  auto check = [this](std::string method, std::string target, uint64_t* limit) {
    HttpRequest head;
    head.method = std::move(method);
    head.target = std::move(target);
    *limit = 0;
    return router_.CheckHead(head, limit);
  };
  uint64_t limit = 0;
  EXPECT_EQ(check("POST", "/nope", &limit)->status, 404);
  std::optional<HttpResponse> other = check("PATCH", "/v1/devices/d1", &limit);
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->status, 405);
  EXPECT_EQ(other->headers.at(0).second, "DELETE, GET, HEAD, PUT");
  EXPECT_EQ(check("POST", "/v1/devices/%zz", &limit)->status, 400);
  EXPECT_FALSE(check("POST", "/v1/devices", &limit).has_value());
  EXPECT_EQ(limit, RouteOptions::kSmallBodyBytes);  // the default
  EXPECT_FALSE(check("PUT", "/v1/devices/d1", &limit).has_value());
  EXPECT_EQ(limit, 1000u);
  EXPECT_EQ(check("PUT", "/v1/devices/no", &limit)->status, 401);
  EXPECT_EQ(checks, 2);
}

}  // namespace
}  // namespace joule::net
