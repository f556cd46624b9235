#include "net/http_server.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include "common/json_writer.h"
#include "net/tests/test_http_client.h"

namespace joule::net {
namespace {

using namespace std::chrono_literals;
using testing::Fetch;
using testing::ParsedResponse;
using testing::TestHttpClient;

constexpr auto kWait = 5s;
// A route limit that leaves the server's max_body_bytes in charge.
constexpr uint64_t kUnlimited = ~uint64_t{0};

std::string Get(std::string_view target, std::string_view extra_headers = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" + std::string(extra_headers) +
         "\r\n";
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Echoes what the server parsed, so tests can check it.
    router_.Add("GET", "/v1/devices/{id}/metrics/realtime", [](HttpRequest& req, Responder r) {
      JsonWriter w;
      w.BeginObject();
      w.Key("id");
      w.String(req.path_params.at("id"));
      w.Key("route");
      w.String(req.route);
      w.Key("path");
      w.String(req.path);
      w.Key("windows");
      w.String(req.Query("windows") ? *req.Query("windows") : "-");
      w.Key("q");
      w.String(req.Query("q") ? *req.Query("q") : "-");
      w.Key("agent");
      w.String(req.Header("user-agent") ? *req.Header("user-agent") : "-");
      w.Key("remote");
      w.String(req.remote_address);
      w.EndObject();
      r.Send(HttpResponse::Json(200, w.Take()));
    });
    router_.Add("POST", "/echo",
                [](HttpRequest& req, Responder r) {
                  HttpResponse resp = HttpResponse::Text(200, req.body);
                  resp.headers.emplace_back("X-Body-Bytes", std::to_string(req.body.size()));
                  r.Send(std::move(resp));
                },
                {.max_body_bytes = kUnlimited, .head_check = nullptr, .on_body_too_large = [this] {
                   ++too_large_;
                 }});
    router_.Add("GET", "/hello",
                [](HttpRequest&, Responder r) { r.Send(HttpResponse::Text(200, "hello")); });
    router_.Add("GET", "/throws",
                [](HttpRequest&, Responder) { throw std::runtime_error("handler bug"); });
  }

  void StartServer(HttpServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    server_ = std::make_unique<HttpServer>(io_, options, router_, &metrics_);
    Status st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_NE(server_->port(), 0);
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }

  void TearDown() override {
    for (auto& t : helpers_) t.join();
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
    server_.reset();
  }

  uint16_t port() const { return server_->port(); }

  // GET /big?bytes=N: N bytes, a letter every 4 KiB so that misplaced parts show.
  void AddBigRoute() {
    router_.Add("GET", "/big", [](HttpRequest& req, Responder r) {
      const size_t n = std::stoul(*req.Query("bytes"));
      std::string body(n, 'x');
      for (size_t i = 0; i < n; i += 4096) body[i] = static_cast<char>('a' + (i / 4096) % 26);
      r.Send(HttpResponse::Text(200, std::move(body)));
    });
  }

  // Declared first: outlives the io_context, whose destruction may destroy connections.
  MetricsRegistry metrics_;
  std::atomic<int> too_large_{0};  // /echo's on_body_too_large calls
  Router router_;
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      boost::asio::make_work_guard(io_)};
  std::unique_ptr<HttpServer> server_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> helpers_;  // threads started by handlers
};

TEST_F(HttpServerTest, RoutesWithParamsQueryAndHeaders) {
  StartServer();
  auto r = Fetch(port(), Get("/v1/devices/plug%2D42/metrics/realtime?windows=60&q=a+b%26c",
                             "User-Agent: gtest\r\n"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"id":"plug-42","route":"/v1/devices/{id}/metrics/realtime",)"
                     R"("path":"/v1/devices/plug-42/metrics/realtime","windows":"60","q":"a b&c",)"
                     R"("agent":"gtest","remote":"127.0.0.1"})");
  ASSERT_NE(r->Header("server"), nullptr);
  EXPECT_EQ(*r->Header("server"), "joule");
  ASSERT_NE(r->Header("content-type"), nullptr);
  EXPECT_EQ(*r->Header("content-type"), "application/json");
  ASSERT_NE(r->Header("content-length"), nullptr);
  EXPECT_EQ(*r->Header("content-length"), std::to_string(r->body.size()));
}

// RFC 9110 §6.6.1: an origin server with a clock sends Date in every 2xx-4xx answer —
// handler answers, the server's own errors and stream heads (found by a black-box test: none
// had one). A handler's own Date is dropped, so there is one.
TEST_F(HttpServerTest, EveryAnswerHasOneDate) {
  router_.Add("GET", "/own-date", [](HttpRequest&, Responder r) {
    HttpResponse resp = HttpResponse::Text(200, "x");
    resp.headers.emplace_back("Date", "Thu, 01 Jan 1970 00:00:00 GMT");
    r.Send(std::move(resp));
  });
  router_.Add("GET", "/v1/stream", [](HttpRequest&, Responder r) {
    r.StartStream({{"Date", "Thu, 01 Jan 1970 00:00:00 GMT"}})->Close();
  });
  HttpServerOptions options;
  options.max_body_bytes = 16;
  StartServer(options);
  auto valid = [](const std::string& date) {
    // "Sun, 06 Nov 1994 08:49:37 GMT", this year or the next
    const time_t now = time(nullptr);
    tm parts{};
    gmtime_r(&now, &parts);
    return date.size() == 29 && date.substr(25) == " GMT" && date[3] == ',' &&
           date.find(std::to_string(1900 + parts.tm_year)) == 12;
  };
  for (const std::string& request :
       {Get("/hello"), Get("/nope"), Get("/own-date"),
        std::string("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"),
        std::string("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(request));
    auto head = client->ReadUntil("\r\n\r\n");
    ASSERT_TRUE(head.has_value()) << request;
    const size_t at = head->find("\r\nDate: ");
    ASSERT_NE(at, std::string::npos) << *head;
    EXPECT_EQ(head->find("\r\nDate: ", at + 1), std::string::npos) << *head;
    EXPECT_TRUE(valid(head->substr(at + 8, head->find("\r\n", at + 2) - at - 8))) << *head;
  }
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  auto head = client->ReadUntil("\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  const size_t at = head->find("\r\nDate: ");
  ASSERT_NE(at, std::string::npos) << *head;
  EXPECT_EQ(head->find("\r\nDate: ", at + 1), std::string::npos) << *head;
  EXPECT_EQ(head->find("1970"), std::string::npos) << *head;
}

TEST_F(HttpServerTest, NotFoundAndMethodNotAllowed) {
  StartServer();
  auto nf = Fetch(port(), Get("/nope"));
  ASSERT_TRUE(nf.has_value());
  EXPECT_EQ(nf->status, 404);
  EXPECT_NE(nf->body.find(R"("code":"not_found")"), std::string::npos);

  auto na = Fetch(port(), "DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_TRUE(na.has_value());
  EXPECT_EQ(na->status, 405);
  EXPECT_NE(na->body.find(R"("code":"method_not_allowed")"), std::string::npos);
  ASSERT_NE(na->Header("allow"), nullptr);
  EXPECT_EQ(*na->Header("allow"), "GET, HEAD");
}

TEST_F(HttpServerTest, PostBodyReachesHandler) {
  StartServer();
  std::string body(100000, 'x');
  auto r = Fetch(port(), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(*r->Header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(*r->Header("x-body-bytes"), "100000");
}

TEST_F(HttpServerTest, ChunkedBodyAndExpectContinue) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(
      client->Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "hello world");

  ASSERT_TRUE(client->Send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
  auto interim = client->ReadResponse();
  ASSERT_TRUE(interim.has_value());
  EXPECT_EQ(interim->status, 100);
  ASSERT_TRUE(client->Send("abc"));
  auto final_response = client->ReadResponse();
  ASSERT_TRUE(final_response.has_value());
  EXPECT_EQ(final_response->status, 200);
  EXPECT_EQ(final_response->body, "abc");
}

TEST_F(HttpServerTest, ResponderCompletedFromAnotherThreadLater) {
  router_.Add("GET", "/slow", [this](HttpRequest&, Responder r) {
    helpers_.emplace_back([r] {
      std::this_thread::sleep_for(50ms);
      r.Send(HttpResponse::Json(202, R"({"late":true})"));
    });
  });
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/slow")));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->body, R"({"late":true})");
  // The connection is still usable afterwards.
  ASSERT_TRUE(client->Send(Get("/hello")));
  auto again = client->ReadResponse();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->body, "hello");
}

TEST_F(HttpServerTest, DroppedResponderAndThrowingHandlerGive500) {
  router_.Add("GET", "/dropped", [](HttpRequest&, Responder) {});
  StartServer();
  auto dropped = Fetch(port(), Get("/dropped"));
  ASSERT_TRUE(dropped.has_value());
  EXPECT_EQ(dropped->status, 500);
  EXPECT_NE(dropped->body.find(R"("code":"internal")"), std::string::npos);
  auto threw = Fetch(port(), Get("/throws"));
  ASSERT_TRUE(threw.has_value());
  EXPECT_EQ(threw->status, 500);
}

// Every 500 is a bug or an unmapped failure, and OPERATIONS.md says to collect the log
// lines around it: until session 31 a handler's 500 (a store error the API did not map)
// logged nothing (found by the operator's black-box test). Logged once a second at most;
// a 503 is not logged here.
TEST_F(HttpServerTest, A500IsLoggedWithItsRouteAndMessageAtMostOnceASecond) {
  router_.Add("POST", "/v1/things/{id}", [](HttpRequest&, Responder r) {
    r.Send(HttpResponse::Error(500, "internal", "sqlite: commit: something broke"));
  });
  router_.Add("GET", "/busy", [](HttpRequest&, Responder r) {
    r.Send(HttpResponse::Error(503, "unavailable", "try later"));
  });
  StartServer();
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) {
    auto r = Fetch(port(), "POST /v1/things/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 500);
  }
  auto busy = Fetch(port(), Get("/busy"));
  ASSERT_TRUE(busy.has_value());
  EXPECT_EQ(busy->status, 503);
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = log.find("answered with a server error"); at != std::string::npos;
       at = log.find("answered with a server error", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;
  EXPECT_NE(log.find(R"("level":"error")"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("route":"/v1/things/{id}")"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("method":"POST")"), std::string::npos) << log;
  EXPECT_NE(log.find("sqlite: commit: something broke"), std::string::npos) << log;
  EXPECT_EQ(log.find("try later"), std::string::npos) << log;
}

TEST_F(HttpServerTest, OversizedContentLengthIs413BeforeTheBodyIsSent) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  // Announce 100 MB, send only the head and a little of the body: the answer must come now.
  ASSERT_TRUE(client->Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n" +
                           std::string(512, 'x')));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find(R"("code":"payload_too_large")"), std::string::npos);
  EXPECT_EQ(*r->Header("connection"), "close");
  EXPECT_TRUE(client->WaitForClose());
  EXPECT_EQ(too_large_.load(), 1);  // the route's hook (ingest counts it as rejected)
  EXPECT_NE(metrics_.Render().find(
                R"(joule_http_requests_total{route="/echo",method="POST",status="413"} 1)"),
            std::string::npos)
      << metrics_.Render();
}

TEST_F(HttpServerTest, OversizedChunkedBodyIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(
      client->Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "800\r\n" +
                   std::string(0x800, 'y') + "\r\n"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(too_large_.load(), 1);
}

// What a request's head decides is answered before its body is read, and the connection
// closes without reading it: no route (404), another method (405), a Content-Length over
// the route's own limit (413), the route's head check (e.g. no token: 401). Found by a
// black-box test: without a token, every route read up to max_body_bytes (4 MiB) per
// connection before answering 401 / 404 / 405.
TEST_F(HttpServerTest, TheHeadIsAnsweredBeforeTheBodyIsRead) {
  std::atomic<int> guarded_calls{0};
  std::atomic<int> head_checks{0};
  std::string checked;  // what the head check saw (set before the response is written)
  router_.Add("POST", "/guarded/{id}",
              [&guarded_calls](HttpRequest& req, Responder r) {
                ++guarded_calls;
                r.Send(HttpResponse::Text(200, req.body));
              },
              {.max_body_bytes = 1 << 20,
               .head_check = [&](const HttpRequest& head) -> std::optional<HttpResponse> {
                 ++head_checks;
                 checked = std::string(head.route) + " " + head.path_params.at("id") + " " +
                           head.path + " body=" + std::to_string(head.body.size());
                 if (head.Header("authorization") != nullptr) return std::nullopt;
                 HttpResponse r = HttpResponse::Error(401, "unauthorized", "missing token");
                 r.headers.emplace_back("WWW-Authenticate", "Bearer");
                 return r;
               },
               .on_body_too_large = {}});
  router_.Add("POST", "/small", [](HttpRequest& req, Responder r) {
    r.Send(HttpResponse::Text(200, req.body));
  });  // the default limit: RouteOptions::kSmallBodyBytes
  StartServer();

  // Each announces 1 MB and sends 512 bytes of it: the answer must come without the rest.
  const std::string partial = std::string(512, 'x');
  struct Case {
    std::string head;
    int status;
    std::string code;
  };
  for (const Case& c : std::vector<Case>{
           {"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n", 404, "not_found"},
           {"PUT /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n", 405,
            "method_not_allowed"},
           {"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n", 405,
            "method_not_allowed"},
           {"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n", 413,
            "payload_too_large"},
           {"POST /guarded/a%2Db HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n"
            "Expect: 100-continue\r\n\r\n",
            401, "unauthorized"},
           {"POST /guarded/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            "f4240\r\n",
            401, "unauthorized"},
       }) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(c.head + partial));
    auto r = client->ReadResponse(2s);
    ASSERT_TRUE(r.has_value()) << c.head << ": no answer before the body";
    EXPECT_EQ(r->status, c.status) << c.head;
    EXPECT_NE(r->body.find("\"code\":\"" + c.code + "\""), std::string::npos) << r->body;
    EXPECT_EQ(*r->Header("connection"), "close") << c.head;
    if (c.status == 405) {
      EXPECT_NE(r->Header("allow"), nullptr);
    }
    if (c.status == 401) {
      EXPECT_EQ(*r->Header("www-authenticate"), "Bearer");
    }
    if (c.status == 413) {
      EXPECT_NE(r->body.find("4096 bytes"), std::string::npos) << r->body;
    }
    EXPECT_TRUE(client->WaitForClose()) << c.head;
  }
  EXPECT_EQ(guarded_calls.load(), 0);
  EXPECT_EQ(head_checks.load(), 2);
  EXPECT_EQ(checked, "/guarded/{id} x /guarded/x body=0");
  EXPECT_NE(metrics_.Render().find(
                R"(joule_http_requests_total{route="/guarded/{id}",method="POST",status="401"} 2)"),
            std::string::npos)
      << metrics_.Render();

  // The head check passed: the body is read and the handler runs; within the route's own
  // limit, and a chunked body is cut off at it.
  const std::string body(100000, 'b');
  auto ok = Fetch(port(),
                  "POST /guarded/x HTTP/1.1\r\nHost: t\r\nAuthorization: yes\r\n"
                  "Content-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, body);
  EXPECT_EQ(guarded_calls.load(), 1);
  auto small = Fetch(port(), "POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n" +
                                 std::string(4096, 's'));
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->status, 200);
  auto chunked = TestHttpClient::Connect(port());
  ASSERT_TRUE(chunked);
  ASSERT_TRUE(
      chunked->Send("POST /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "800\r\n" +
                    std::string(0x800, 'c') + "\r\n801\r\n"));
  auto cut = chunked->ReadResponse(2s);
  ASSERT_TRUE(cut.has_value());
  EXPECT_EQ(cut->status, 413);
  // A request without a body goes to the handler (which checks for itself).
  auto empty = Fetch(port(), "POST /guarded/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->status, 200);
  EXPECT_EQ(head_checks.load(), 3);
}

// A transfer coding other than chunked alone cannot frame a request: refused and closed,
// so that what follows is never read as a next request (request smuggling; found by a
// black-box test: "xchunked" and "chunked, identity" let a pipelined GET through).
// RFC 9112 §3.2.3: an HTTP/1.1 request without Host, or with two, is 400 (found by a
// black-box test); HTTP/1.0 needs none.
TEST_F(HttpServerTest, HostIsRequiredOnceInHttp11) {
  StartServer();
  for (const std::string& req :
       {std::string("GET /hello HTTP/1.1\r\n\r\n"),
        std::string("GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(req));
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << req;
    EXPECT_EQ(r->status, 400) << req;
    EXPECT_NE(r->body.find("Host"), std::string::npos) << r->body;
  }
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("GET /hello HTTP/1.0\r\n\r\n"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, TransferCodingsOtherThanChunkedAreRefused) {
  StartServer();
  for (const std::string te : {"xchunked", "chunked, identity", "gzip, chunked", "identity"}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te +
                             "\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << te;
    EXPECT_EQ(r->status, 501) << te;
    EXPECT_FALSE(client->ReadResponse().has_value()) << te << ": a smuggled request was answered";
  }
  // Two Transfer-Encoding fields (chunked twice): refused too (the HTTP parser's 400).
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
      "chunked\r\n\r\n0\r\n\r\n"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->status == 400 || r->status == 501) << r->status;
  EXPECT_FALSE(client->ReadResponse().has_value());
  // Chunked alone (any case) still works.
  auto ok = TestHttpClient::Connect(port());
  ASSERT_TRUE(ok);
  ASSERT_TRUE(
      ok->Send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n"
               "3\r\nabc\r\n0\r\n\r\n"));
  r = ok->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "abc");
}

// SECURITY.md: Content-Length twice is refused (400) and the connection closed, so that
// nothing after it is read as a request. The parser itself refuses only differing values
// (found by a black-box test: "2" twice, and "2, 2", were accepted and the connection kept).
TEST_F(HttpServerTest, RepeatedContentLengthIs400ThenClosed) {
  StartServer();
  for (const std::string cl :
       {"Content-Length: 2\r\nContent-Length: 2\r\n", "Content-Length: 2, 2\r\n",
        "Content-Length: 2\r\nContent-Length: 3\r\n"}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send("POST /echo HTTP/1.1\r\nHost: t\r\n" + cl +
                             "\r\nabGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << cl;
    EXPECT_EQ(r->status, 400) << cl;
    EXPECT_EQ(*r->Header("connection"), "close") << cl;
    EXPECT_FALSE(client->ReadResponse(500ms).has_value()) << cl << ": a next request was answered";
  }
  auto ok = Fetch(port(), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "ab");
}

TEST_F(HttpServerTest, OversizedHeadersAre431) {
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  StartServer(options);
  auto r = Fetch(port(), Get("/hello", "X-Big: " + std::string(8000, 'h') + "\r\n"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 431);
  EXPECT_NE(r->body.find(R"("code":"request_header_fields_too_large")"), std::string::npos);
}

// A chunked body's trailer section (and a chunk line) waits in the read buffer until it
// ends, and Beast's header_limit does not cover it: bounded by max_header_bytes like the
// headers (found by a black-box test: an unauthenticated client sent 300 MiB of trailer
// fields and the server grew to ~1 GB).
TEST_F(HttpServerTest, ChunkedTrailersAndChunkLinesAreBoundedLikeHeaders) {
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  StartServer(options);
  // Small trailers are fine.
  auto ok = Fetch(port(),
                  "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "2\r\nab\r\n0\r\nX-Trailer: v\r\n\r\n");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "ab");
  const std::string line = "X-Trailer: " + std::string(1000, 'v') + "\r\n";
  for (const std::string& start : {std::string("2\r\nab\r\n0\r\n"), std::string("2;")}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + start));
    // 64 KiB of trailer fields (or of one chunk extension), then the end of the message.
    for (int i = 0; i < 64; ++i) {
      if (!client->Send(start == "2;" ? std::string(1024, 'e') : line)) break;
    }
    client->Send("\r\n\r\n");
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << start;
    EXPECT_EQ(r->status, 431) << start;
    EXPECT_NE(r->body.find(R"("code":"request_header_fields_too_large")"), std::string::npos);
    EXPECT_TRUE(client->WaitForClose()) << start;
  }
}

// The same when the chunk line or the trailer section arrives in one piece, within one
// read (found by a black-box test: 40 KB of either was accepted with a 16 KiB limit; the
// bound held only for what was left over after a read).
TEST_F(HttpServerTest, ChunkLinesAndTrailersArrivingWholeAreBoundedToo) {
  HttpServerOptions options;
  options.max_header_bytes = 4096;
  StartServer(options);
  const std::string head = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const std::string& body : {"2;ext=" + std::string(8000, 'a') + "\r\nab\r\n0\r\n\r\n",
                                  "2\r\nab\r\n0\r\nX-T: " + std::string(8000, 'a') + "\r\n\r\n",
                                  std::string(8000, '0') + "2\r\nab\r\n0\r\n\r\n"}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(head + body));  // one write: it arrives whole
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << body.substr(0, 20);
    EXPECT_EQ(r->status, 431) << body.substr(0, 20);
    EXPECT_TRUE(client->WaitForClose()) << body.substr(0, 20);
  }
  // Within the limit, and a large body of small chunks: parsed as before.
  std::string chunks;
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    const std::string piece(1000 + i, static_cast<char>('a' + i % 26));
    char size[16];
    std::snprintf(size, sizeof size, "%zx", piece.size());
    chunks += std::string(size) + ";e=" + std::string(3000, 'x') + "\r\n" + piece + "\r\n";
    expected += piece;
  }
  auto ok = Fetch(port(), head + chunks + "0\r\nX-T: " + std::string(3000, 't') + "\r\n\r\n");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, expected);
}

TEST_F(HttpServerTest, MalformedRequestsAre400ThenClosed) {
  StartServer();
  for (const std::string& bad : std::vector<std::string>{
           "GARBAGE\r\n\r\n", "GET /hello HTTP/9.9\r\n\r\n",
           "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n", "GET hello HTTP/1.1\r\nHost: t\r\n\r\n",
           "GET /hello%zz HTTP/1.1\r\nHost: t\r\n\r\n",
           "POST /echo HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
           std::string("GET /\0 HTTP/1.1\r\n\r\n", 20)}) {
    auto client = TestHttpClient::Connect(port());
    ASSERT_TRUE(client);
    ASSERT_TRUE(client->Send(bad));
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_TRUE(client->WaitForClose()) << bad;
  }
  // The server still works.
  auto ok = Fetch(port(), Get("/hello"));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
}

// Error messages echo percent-decoded input; the JSON stays valid UTF-8 (found by a
// black-box test: GET /nope%ff answered "no route for /nope\xff").
TEST_F(HttpServerTest, ErrorBodiesAreValidUtf8) {
  StartServer();
  auto r = Fetch(port(), Get("/nope%ff%C3%A9"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body, R"({"error":{"code":"not_found","message":"no route for /nope\ufffd)"
                     "\xc3\xa9"
                     R"("}})");
}

// RFC 9112 §3.2.2: a server must accept the absolute form of a request target (what a
// client sends to a proxy); the path and query are routed, the authority is the Host.
TEST_F(HttpServerTest, AbsoluteFormTargetsAreRouted) {
  router_.Add("GET", "/host", [](HttpRequest& req, Responder r) {
    r.Send(HttpResponse::Text(200, req.Header("host") ? *req.Header("host") : "-"));
  });
  StartServer();
  const std::string authority = "127.0.0.1:" + std::to_string(port());
  auto r = Fetch(port(), "GET http://" + authority +
                             "/v1/devices/plug%2D1/metrics/realtime?windows=5 HTTP/1.1\r\n"
                             "Host: " +
                             authority + "\r\n\r\n");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find(R"("path":"/v1/devices/plug-1/metrics/realtime")"), std::string::npos)
      << r->body;
  EXPECT_NE(r->body.find(R"("windows":"5")"), std::string::npos) << r->body;
  r = Fetch(port(), "GET HTTPS://example.org:8443/host HTTP/1.1\r\nHost: other\r\n\r\n");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "example.org:8443");
  r = Fetch(port(), "GET http://example.org HTTP/1.1\r\nHost: example.org\r\n\r\n");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);  // the path "/", not registered here
  for (const char* bad : {"ftp://example.org/hello", "http:///hello", "*"}) {
    r = Fetch(port(), "GET " + std::string(bad) + " HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_TRUE(r.has_value()) << bad;
    EXPECT_EQ(r->status, 400) << bad;
  }
}

// HTTP/1.0 has no transfer codings: RFC 9112 §6.1 makes such framing faulty, so the
// request is refused and the connection closed (found by a black-box test: it was read as
// chunked and the connection kept open).
TEST_F(HttpServerTest, Http10WithTransferEncodingIs400ThenClosed) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(
      "POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 400);
  EXPECT_TRUE(client->WaitForClose());
}

// No 1xx to an HTTP/1.0 client (RFC 9110 §15.2): it sends its body without waiting.
TEST_F(HttpServerTest, NoContinueForHttp10) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(
      client->Send("POST /echo HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_FALSE(client->ReadResponse(std::chrono::milliseconds(300)).has_value());
  ASSERT_TRUE(client->Send("abc"));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "abc");
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsAndHonorsClose) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/hello")));
  auto first = client->ReadResponse();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->body, "hello");
  EXPECT_EQ(first->Header("connection"), nullptr);  // HTTP/1.1: keep-alive is implied
  ASSERT_TRUE(client->Send(Get("/nope")));
  auto second = client->ReadResponse();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status, 404);
  ASSERT_TRUE(client->Send(Get("/hello", "Connection: close\r\n")));
  auto third = client->ReadResponse();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(*third->Header("connection"), "close");
  EXPECT_TRUE(client->WaitForClose());
}

TEST_F(HttpServerTest, PipelinedRequestsAnswerInOrder) {
  router_.Add("GET", "/slow", [this](HttpRequest&, Responder r) {
    helpers_.emplace_back([r] {
      std::this_thread::sleep_for(30ms);
      r.Send(HttpResponse::Text(200, "slow"));
    });
  });
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/slow") + Get("/hello") + Get("/slow")));
  for (std::string want : {"slow", "hello", "slow"}) {
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->body, want);
  }
}

// Requests with bodies (Content-Length and chunked) pipelined with others in one send,
// and a request split at every byte: the connection's read loop parses what is
// buffered before reading, and reads while the parser needs more.
TEST_F(HttpServerTest, PipelinedBodiesAndByteByByteRequestsAreParsedWhole) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst" +
                           Get("/hello") +
                           "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nthi\r\n2\r\nrd\r\n0\r\n\r\n" +
                           "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"));
  for (std::string want : {"first", "hello", "third", ""}) {
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << want;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, want);
  }
  const std::string split = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsplit!";
  for (char c : split) {
    ASSERT_TRUE(client->Send(std::string(1, c)));
    std::this_thread::sleep_for(1ms);
  }
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "split!");
  // A client that closes in the middle of a head leaves no connection behind.
  ASSERT_TRUE(client->Send("GET /hello HTTP/1.1\r\nHo"));
  client->Close();
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    std::this_thread::sleep_for(10ms);
    gone = server_->connection_count() == 0;
  }
  EXPECT_TRUE(gone);
}

TEST_F(HttpServerTest, HeadHasLengthButNoBody) {
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"));
  // Read the head only: a HEAD response has no body despite its Content-Length.
  auto head = client->ReadUntil("\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  EXPECT_NE(head->find("HTTP/1.1 200"), std::string::npos);
  EXPECT_NE(head->find("Content-Length: 5\r\n"), std::string::npos);
  ASSERT_TRUE(client->Send(Get("/hello")));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "hello");  // nothing stray between the two responses
}

TEST_F(HttpServerTest, SseStreamDeliversEventsAndDetectsDisconnect) {
  auto stream_promise = std::make_shared<std::promise<std::shared_ptr<SseStream>>>();
  auto closed = std::make_shared<std::promise<void>>();
  router_.Add("GET", "/v1/stream", [stream_promise, closed](HttpRequest&, Responder r) {
    std::shared_ptr<SseStream> s = r.StartStream({{"X-Stream", "1"}});
    s->SetOnClose([closed] { closed->set_value(); });
    stream_promise->set_value(s);
  });
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  auto stream_future = stream_promise->get_future();
  ASSERT_EQ(stream_future.wait_for(kWait), std::future_status::ready);
  std::shared_ptr<SseStream> stream = stream_future.get();
  ASSERT_NE(stream, nullptr);
  // Events sent right away may race the response head; the head still goes first.
  EXPECT_TRUE(stream->Send("window", R"({"n":1})"));
  EXPECT_TRUE(stream->Send("alert", "line1\nline2"));

  auto head = client->ReadUntil("\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << *head;
  EXPECT_NE(head->find("Content-Type: text/event-stream\r\n"), std::string::npos);
  EXPECT_NE(head->find("X-Stream: 1\r\n"), std::string::npos);
  auto first = client->ReadUntil("\n\n");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, "event: window\ndata: {\"n\":1}\n\n");
  auto second = client->ReadUntil("\n\n");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*second, "event: alert\ndata: line1\ndata: line2\n\n");
  EXPECT_TRUE(stream->IsOpen());

  client->Close();
  ASSERT_EQ(closed->get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(stream->IsOpen());
  EXPECT_FALSE(stream->Send("window", "{}"));
  // A callback set after the close runs right away.
  bool ran = false;
  stream->SetOnClose([&ran] { ran = true; });
  EXPECT_TRUE(ran);
}

// The server writes the stream's own fields once, even when a handler passes them too
// (found by a black-box test: Cache-Control and X-Accel-Buffering came twice).
TEST_F(HttpServerTest, SseHeadHasEachFieldOnce) {
  router_.Add("GET", "/v1/stream", [](HttpRequest&, Responder r) {
    auto s = r.StartStream(
        {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}, {"X-Stream", "1"}});
    s->Close();
  });
  StartServer();
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  auto head = client->ReadUntil("\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  auto count = [&](std::string_view field) {
    size_t n = 0;
    for (size_t at = head->find(field); at != std::string::npos; at = head->find(field, at + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(count("Cache-Control: no-cache\r\n"), 1u) << *head;
  EXPECT_EQ(count("X-Accel-Buffering: no\r\n"), 1u) << *head;
  EXPECT_EQ(count("Connection: close\r\n"), 1u) << *head;
  EXPECT_EQ(count("X-Stream: 1\r\n"), 1u) << *head;
}

// HEAD falls back to the GET route with the body dropped; on a stream route that means
// the head only: no stream, and the connection serves the next request (found by a
// black-box test: HEAD /v1/stream streamed events and a pipelined GET was never answered).
TEST_F(HttpServerTest, HeadOnAStreamRouteSendsTheHeadOnly) {
  auto closed = std::make_shared<std::promise<void>>();
  router_.Add("GET", "/v1/stream", [closed](HttpRequest&, Responder r) {
    auto s = r.StartStream({{"X-Stream", "1"}});
    s->Send("window", "{}");
    s->SetOnClose([closed] { closed->set_value(); });
  });
  HttpServerOptions options;
  options.sse_keepalive_interval_ns = 20'000'000;  // 20 ms: a started stream would show
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("HEAD /v1/stream HTTP/1.1\r\nHost: t\r\n\r\n" + Get("/hello")));
  auto head = client->ReadUntil("\r\n\r\n");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << *head;
  EXPECT_NE(head->find("Content-Type: text/event-stream\r\n"), std::string::npos) << *head;
  EXPECT_NE(head->find("X-Stream: 1\r\n"), std::string::npos) << *head;
  EXPECT_EQ(head->find("Connection: close"), std::string::npos) << *head;
  ASSERT_EQ(closed->get_future().wait_for(kWait), std::future_status::ready);
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");  // nothing of a stream between the two responses
}

TEST_F(HttpServerTest, SseKeepaliveCommentsAndServerSideClose) {
  auto stream_promise = std::make_shared<std::promise<std::shared_ptr<SseStream>>>();
  router_.Add("GET", "/v1/stream", [stream_promise](HttpRequest&, Responder r) {
    stream_promise->set_value(r.StartStream());
  });
  HttpServerOptions options;
  options.sse_keepalive_interval_ns = 20'000'000;  // 20 ms
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  ASSERT_TRUE(client->ReadUntil("\r\n\r\n").has_value());
  ASSERT_TRUE(client->ReadUntil(": keepalive\n\n").has_value());
  auto stream_future = stream_promise->get_future();
  ASSERT_EQ(stream_future.wait_for(kWait), std::future_status::ready);
  auto stream = stream_future.get();
  EXPECT_TRUE(stream->Send("bye", "x"));
  stream->Close();
  EXPECT_FALSE(stream->Send("late", "x"));
  // The queued event is still written, then the server closes.
  ASSERT_TRUE(client->ReadUntil("event: bye\ndata: x\n\n").has_value());
  EXPECT_TRUE(client->WaitForClose());
}

TEST_F(HttpServerTest, SseSlowClientIsDroppedOnOverflow) {
  auto stream_promise = std::make_shared<std::promise<std::shared_ptr<SseStream>>>();
  auto closed = std::make_shared<std::promise<void>>();
  router_.Add("GET", "/v1/stream", [stream_promise, closed](HttpRequest&, Responder r) {
    auto s = r.StartStream();
    s->SetOnClose([closed] { closed->set_value(); });
    stream_promise->set_value(s);
  });
  HttpServerOptions options;
  options.sse_max_queued_bytes = 4096;
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  auto stream_future = stream_promise->get_future();
  ASSERT_EQ(stream_future.wait_for(kWait), std::future_status::ready);
  auto stream = stream_future.get();
  EXPECT_FALSE(stream->Send("big", std::string(8192, 'z')));  // more than the queue holds
  ASSERT_EQ(closed->get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(stream->IsOpen());
  EXPECT_TRUE(client->WaitForClose());
  // Counted (found by a black-box test: slow subscribers were dropped invisibly).
  EXPECT_NE(metrics_.Render().find("joule_sse_disconnects_total{reason=\"slow\"} 1"),
            std::string::npos)
      << metrics_.Render();
}

// A subscriber that stops reading: once an event's write makes no progress for read_timeout
// the stream is closed, and counted as slow.
TEST_F(HttpServerTest, SseStalledClientIsDroppedAndCounted) {
  auto stream_promise = std::make_shared<std::promise<std::shared_ptr<SseStream>>>();
  router_.Add("GET", "/v1/stream", [stream_promise](HttpRequest&, Responder r) {
    stream_promise->set_value(r.StartStream());
  });
  HttpServerOptions options;
  options.read_timeout_ns = 300'000'000;
  options.sse_max_queued_bytes = 1u << 30;  // the write deadline, not the queue, drops it
  StartServer(options);
  auto client = TestHttpClient::Connect(port());  // never reads
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/v1/stream")));
  auto stream_future = stream_promise->get_future();
  ASSERT_EQ(stream_future.wait_for(kWait), std::future_status::ready);
  auto stream = stream_future.get();
  const std::string event(256u << 10, 'z');
  for (int i = 0; i < 400 && stream->Send("big", event); ++i) std::this_thread::sleep_for(10ms);
  bool closed = false;
  for (int i = 0; i < 200 && !closed; ++i) {
    closed = !stream->IsOpen();
    if (!closed) std::this_thread::sleep_for(25ms);
  }
  EXPECT_TRUE(closed);
  EXPECT_NE(metrics_.Render().find("joule_sse_disconnects_total{reason=\"slow\"} 1"),
            std::string::npos)
      << metrics_.Render();
}

TEST_F(HttpServerTest, GracefulShutdownWaitsForInFlightRequest) {
  auto responder_promise = std::make_shared<std::promise<Responder>>();
  router_.Add("GET", "/inflight", [responder_promise](HttpRequest&, Responder r) {
    responder_promise->set_value(std::move(r));
  });
  StartServer();
  // An idle keep-alive connection, which shutdown closes.
  auto idle = TestHttpClient::Connect(port());
  ASSERT_TRUE(idle);
  ASSERT_TRUE(idle->Send(Get("/hello")));
  ASSERT_TRUE(idle->ReadResponse().has_value());

  auto busy = TestHttpClient::Connect(port());
  ASSERT_TRUE(busy);
  ASSERT_TRUE(busy->Send(Get("/inflight")));
  auto responder_future = responder_promise->get_future();
  ASSERT_EQ(responder_future.wait_for(kWait), std::future_status::ready);
  Responder responder = responder_future.get();

  auto done = std::make_shared<std::promise<void>>();
  server_->Shutdown([done] { done->set_value(); });
  auto done_future = done->get_future();
  EXPECT_TRUE(idle->WaitForClose());
  // Not done while the request is in flight.
  EXPECT_EQ(done_future.wait_for(100ms), std::future_status::timeout);
  EXPECT_EQ(server_->connection_count(), 1u);
  // New connections are refused once the listener is closed.
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    auto late = TestHttpClient::Connect(port());
    refused = late == nullptr;
    if (!refused) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(refused);

  responder.Send(HttpResponse::Text(200, "finished"));
  auto r = busy->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->body, "finished");
  EXPECT_EQ(*r->Header("connection"), "close");
  EXPECT_TRUE(busy->WaitForClose());
  EXPECT_EQ(done_future.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(HttpServerTest, ShutdownTimesOutOnStuckRequests) {
  auto responder_promise = std::make_shared<std::promise<Responder>>();
  router_.Add("GET", "/stuck", [responder_promise](HttpRequest&, Responder r) {
    responder_promise->set_value(std::move(r));
  });
  HttpServerOptions options;
  options.shutdown_timeout_ns = 50'000'000;  // 50 ms
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/stuck")));
  auto responder_future = responder_promise->get_future();
  ASSERT_EQ(responder_future.wait_for(kWait), std::future_status::ready);
  Responder responder = responder_future.get();
  auto done = std::make_shared<std::promise<void>>();
  server_->Shutdown([done] { done->set_value(); });
  EXPECT_EQ(done->get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(client->WaitForClose());
  responder.Send(HttpResponse::Text(200, "too late"));  // harmless
}

// What docs/RELIABILITY.md #13 says of a request still being received at a graceful stop:
// a connection whose request head or body is not complete is closed at once, without an
// answer, and the handler never runs (the client retries; nothing of it was taken in).
TEST_F(HttpServerTest, ShutdownClosesARequestStillBeingReceivedWithoutAnAnswer) {
  std::atomic<int> handled{0};
  router_.Add(
      "POST", "/upload",
      [&handled](HttpRequest&, Responder r) {
        ++handled;
        r.Send(HttpResponse::Text(200, "taken"));
      },
      RouteOptions{.max_body_bytes = 1 << 20, .head_check = nullptr, .on_body_too_large = {}});
  StartServer();
  auto uploading = TestHttpClient::Connect(port());
  ASSERT_TRUE(uploading);
  ASSERT_TRUE(uploading->Send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" +
                              std::string(400, 'x')));
  auto heading = TestHttpClient::Connect(port());
  ASSERT_TRUE(heading);
  ASSERT_TRUE(heading->Send("POST /upload HTTP/1.1\r\nHost: t\r\n"));
  for (int i = 0; i < 100 && server_->connection_count() < 2; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(50ms);  // the server has read what was sent
  auto done = std::make_shared<std::promise<void>>();
  server_->Shutdown([done] { done->set_value(); });
  EXPECT_EQ(done->get_future().wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(uploading->ReadResponse().has_value());  // end of stream, no response
  EXPECT_FALSE(heading->ReadResponse().has_value());
  EXPECT_EQ(handled.load(), 0);
}

TEST_F(HttpServerTest, ShutdownWithNoConnectionsIsImmediate) {
  StartServer();
  auto done = std::make_shared<std::promise<void>>();
  server_->Shutdown([done] { done->set_value(); });
  EXPECT_EQ(done->get_future().wait_for(kWait), std::future_status::ready);
}

TEST_F(HttpServerTest, MaxConnectionsRejectsWith503) {
  HttpServerOptions options;
  options.max_connections = 1;
  StartServer(options);
  auto first = TestHttpClient::Connect(port());
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->Send(Get("/hello")));
  ASSERT_TRUE(first->ReadResponse().has_value());
  auto second = Fetch(port(), Get("/hello"));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->status, 503);
}

// Slow clients (slowloris): a request whose headers or body do not arrive within
// read_timeout is cut off, and a keep-alive connection idle past idle_timeout is closed, so
// stalled clients cannot hold connections forever.
TEST_F(HttpServerTest, SlowClientsAreCutOffByTimeouts) {
  HttpServerOptions options;
  options.read_timeout_ns = 300'000'000;
  options.idle_timeout_ns = 300'000'000;
  StartServer(options);
  auto headers = TestHttpClient::Connect(port());
  ASSERT_TRUE(headers);
  ASSERT_TRUE(headers->Send("GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: "));  // never finished
  EXPECT_TRUE(headers->WaitForClose(kWait));
  auto body = TestHttpClient::Connect(port());
  ASSERT_TRUE(body);
  ASSERT_TRUE(body->Send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"));
  EXPECT_TRUE(body->WaitForClose(kWait));
  auto idle = TestHttpClient::Connect(port());
  ASSERT_TRUE(idle);
  ASSERT_TRUE(idle->Send(Get("/hello")));
  auto r = idle->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(idle->WaitForClose(kWait));  // keep-alive, but nothing more came
  // The server still serves everyone else.
  auto ok = Fetch(port(), Get("/hello"));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->status, 200);
}

// The read deadline covers the whole request head: a client trickling header bytes, each
// well within the timeout, is still cut off once the head took longer than read_timeout.
TEST_F(HttpServerTest, TricklingHeaderBytesDoNotExtendTheDeadline) {
  HttpServerOptions options;
  options.read_timeout_ns = 300'000'000;
  options.idle_timeout_ns = 300'000'000;
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send("GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: "));
  bool closed = false;
  for (int i = 0; i < 200 && !closed; ++i) {  // up to ~10 s of one byte every 50 ms
    closed = !client->Send("a") || client->WaitForClose(50ms);
  }
  EXPECT_TRUE(closed);
}

// Nothing is read or written while a handler runs, so no deadline applies: a handler that
// answers after read_timeout still gets its response out, and the connection stays usable.
TEST_F(HttpServerTest, HandlerSlowerThanTheReadTimeoutStillAnswers) {
  router_.Add("GET", "/slower", [this](HttpRequest&, Responder r) {
    helpers_.emplace_back([r] {
      std::this_thread::sleep_for(700ms);
      r.Send(HttpResponse::Text(200, "late but fine"));
    });
  });
  HttpServerOptions options;
  options.read_timeout_ns = 200'000'000;
  options.idle_timeout_ns = 10'000'000'000;  // the second request may come late
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  ASSERT_TRUE(client->Send(Get("/slower")));
  auto r = client->ReadResponse();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "late but fine");
  ASSERT_TRUE(client->Send(Get("/hello")));
  auto again = client->ReadResponse();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->body, "hello");
}

// Each request moves the idle deadline later, so a keep-alive connection in steady use
// outlives its timeouts many times over (the connection's one timer fires early and
// re-arms for the later deadline); once the client stops, the idle timeout closes it.
TEST_F(HttpServerTest, BusyKeepAliveConnectionOutlivesItsTimeoutsThenIdlesOut) {
  HttpServerOptions options;
  options.read_timeout_ns = 1'500'000'000;
  options.idle_timeout_ns = 1'500'000'000;
  StartServer(options);
  auto client = TestHttpClient::Connect(port());
  ASSERT_TRUE(client);
  const auto start = std::chrono::steady_clock::now();
  int served = 0;
  while (std::chrono::steady_clock::now() - start < 4000ms) {
    ASSERT_TRUE(client->Send(Get("/hello"))) << "after " << served << " requests";
    auto r = client->ReadResponse();
    ASSERT_TRUE(r.has_value()) << "after " << served << " requests";
    ASSERT_EQ(r->status, 200);
    ++served;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GT(served, 10);
  EXPECT_TRUE(client->WaitForClose(kWait));
}

// Responses larger than the socket buffers are written in parts (the first send on the
// spot, the rest asynchronously) and arrive whole.
TEST_F(HttpServerTest, LargeResponsesArriveWhole) {
  AddBigRoute();
  StartServer();
  const size_t kBig = 16u << 20;
  auto reader = TestHttpClient::Connect(port());
  ASSERT_TRUE(reader);
  for (int i = 0; i < 2; ++i) {  // and the connection goes on afterwards
    ASSERT_TRUE(reader->Send(Get("/big?bytes=" + std::to_string(kBig))));
    auto r = reader->ReadResponse(std::chrono::milliseconds(kWait) * 6);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->body.size(), kBig);
    for (size_t k = 0; k < kBig; k += 4096) {
      ASSERT_EQ(r->body[k], static_cast<char>('a' + (k / 4096) % 26)) << k;
    }
  }
}

// A client that stops reading a response is cut off once the write made no progress for
// read_timeout.
TEST_F(HttpServerTest, StalledReaderOfAResponseIsCutOff) {
  AddBigRoute();
  HttpServerOptions options;
  options.read_timeout_ns = 300'000'000;
  options.idle_timeout_ns = 300'000'000;
  StartServer(options);
  auto stalled = TestHttpClient::Connect(port());
  ASSERT_TRUE(stalled);
  ASSERT_TRUE(stalled->Send(Get("/big?bytes=" + std::to_string(64u << 20))));  // never read
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {  // up to ~10 s
    std::this_thread::sleep_for(50ms);
    gone = server_->connection_count() == 0;
  }
  EXPECT_TRUE(gone);
}

// A client that reads a response slowly but steadily gets all of it, however much longer
// than read_timeout the whole write takes: the deadline moves with each part written and
// with each part the client took from the kernel's send queue — the socket reports room for
// more only after a third of its send buffer (megabytes) drained, which at this rate takes
// longer than read_timeout (found by a black-box test: a 4.9 MB history page read at
// 40 KB/s was cut off 30 s into the write, a clean EOF short of Content-Length).
TEST_F(HttpServerTest, SlowButSteadyReaderGetsTheWholeResponse) {
  AddBigRoute();
  HttpServerOptions options;
  options.read_timeout_ns = 300'000'000;
  StartServer(options);
  const size_t kBig = 6u << 20;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  int small = 64 << 10;  // so that the kernel does not read ahead for us
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string request = Get("/big?bytes=" + std::to_string(kBig), "Connection: close\r\n");
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // At most 16 KiB per 15 ms (~1 MB/s): 6 MiB take about 6 s, twenty read_timeouts.
  std::string in;
  std::vector<char> buf(16 << 10);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    in.append(buf.data(), static_cast<size_t>(n));
    std::this_thread::sleep_for(15ms);
  }
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  const size_t head_end = in.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  EXPECT_EQ(in.size() - head_end - 4, kBig)
      << "after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  EXPECT_GT(took, 3s);  // it did take much longer than read_timeout
}

TEST_F(HttpServerTest, RecordsMetrics) {
  StartServer();
  ASSERT_TRUE(Fetch(port(), Get("/v1/devices/a/metrics/realtime")).has_value());
  ASSERT_TRUE(Fetch(port(), Get("/v1/devices/b/metrics/realtime")).has_value());
  ASSERT_TRUE(Fetch(port(), Get("/missing")).has_value());
  std::string text = metrics_.Render();
  EXPECT_NE(text.find(R"(joule_http_requests_total{route="/v1/devices/{id}/metrics/realtime",)"
                      R"(method="GET",status="200"} 2)"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find(R"(joule_http_requests_total{route="unmatched",method="GET",status="404"} 1)"),
      std::string::npos)
      << text;
  EXPECT_NE(
      text.find(
          R"(joule_http_request_duration_seconds_count{route="/v1/devices/{id}/metrics/realtime"} 2)"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("joule_http_connections "), std::string::npos) << text;
}

TEST_F(HttpServerTest, StartFailsWhenTheAddressIsInUse) {
  StartServer();
  HttpServerOptions options;
  options.listen = "127.0.0.1:" + std::to_string(port());
  HttpServer second(io_, options, router_, nullptr);
  Status st = second.Start();
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  HttpServerOptions bad;
  bad.listen = "not-an-address:1";
  HttpServer third(io_, bad, router_, nullptr);
  EXPECT_EQ(third.Start().code(), StatusCode::kInvalidArgument);
}

// Connections spread over single-threaded contexts (HttpServerOptions::connection_contexts):
// each connection is served by one thread only, consecutive connections by different ones,
// answers from other threads still reach the right connection, and shutdown completes.
TEST(HttpServerContextsTest, ConnectionsSpreadOverSingleThreadedContexts) {
  MetricsRegistry metrics;
  Router router;
  router.Add("GET", "/thread", [](HttpRequest&, Responder r) {
    r.Send(HttpResponse::Text(
        200, std::to_string(std::hash<std::thread::id>()(std::this_thread::get_id()))));
  });
  std::vector<std::thread> helpers;
  std::mutex helpers_mu;
  router.Add("GET", "/later", [&](HttpRequest& req, Responder r) {
    std::string id = req.Query("id") ? *req.Query("id") : "";
    std::lock_guard lock(helpers_mu);
    helpers.emplace_back([r, id]() mutable { r.Send(HttpResponse::Text(200, "later " + id)); });
  });
  boost::asio::io_context io(1), a(1), b(1);
  auto wio = boost::asio::make_work_guard(io);
  auto wa = boost::asio::make_work_guard(a), wb = boost::asio::make_work_guard(b);
  std::thread ta([&] { a.run(); }), tb([&] { b.run(); }), tio([&] { io.run(); });
  HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.connection_contexts = {&a, &b};
  auto server = std::make_unique<HttpServer>(io, options, router, &metrics);
  ASSERT_TRUE(server->Start().ok());

  std::vector<std::unique_ptr<TestHttpClient>> clients;
  std::vector<std::string> served_by;
  for (int c = 0; c < 4; ++c) {
    clients.push_back(TestHttpClient::Connect(server->port()));
    ASSERT_TRUE(clients.back());
    std::string first;
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(clients.back()->Send(Get("/thread")));
      auto r = clients.back()->ReadResponse();
      ASSERT_TRUE(r.has_value());
      ASSERT_EQ(r->status, 200);
      if (i == 0) first = r->body;
      EXPECT_EQ(r->body, first) << "a connection moved between threads";
      const std::string id = std::to_string(c * 10 + i);
      ASSERT_TRUE(clients.back()->Send(Get("/later?id=" + id)));
      auto later = clients.back()->ReadResponse();
      ASSERT_TRUE(later.has_value());
      EXPECT_EQ(later->body, "later " + id);
    }
    served_by.push_back(first);
  }
  // Round robin over the two contexts, i.e. over their two threads.
  EXPECT_NE(served_by[0], served_by[1]);
  EXPECT_EQ(served_by[0], served_by[2]);
  EXPECT_EQ(served_by[1], served_by[3]);
  EXPECT_EQ(server->connection_count(), 4u);

  auto done = std::make_shared<std::promise<void>>();
  server->Shutdown([done] { done->set_value(); });
  EXPECT_EQ(done->get_future().wait_for(kWait), std::future_status::ready);
  for (auto& client : clients) EXPECT_TRUE(client->WaitForClose());
  EXPECT_EQ(server->connection_count(), 0u);
  {
    std::lock_guard lock(helpers_mu);
    for (auto& t : helpers) t.join();
  }
  wio.reset();
  wa.reset();
  wb.reset();
  io.stop();
  tio.join();
  ta.join();
  tb.join();
  server.reset();
}

}  // namespace
}  // namespace joule::net
