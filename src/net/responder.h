// Responder: the way a handler completes its request, exactly once, from any thread.
//
// A handler receives a Responder by value and may answer at once, or keep (copy or move)
// it and answer later from another thread; the server posts the answer back to the
// connection's strand. The first Send or StartStream wins; later calls are ignored. If the
// last copy is destroyed without either, the client gets 500 internal.
//
// ResponseSink is the transport behind it; the HTTP server provides one per request, and
// tests of handlers can provide their own (or use Responder::FromCallback).
#pragma once

#include <functional>
#include <memory>

#include "net/http_message.h"
#include "net/sse_stream.h"

namespace joule::net {

class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Called at most once per sink, and only one of Send and StartStream. Any thread.
  virtual void Send(HttpResponse response) = 0;
  // Sends a 200 text/event-stream head with `headers` added; returns the open stream, or
  // nullptr if this sink cannot stream.
  virtual std::shared_ptr<SseStream> StartStream(HttpHeaders headers) = 0;
};

class Responder {
 public:
  explicit Responder(std::shared_ptr<ResponseSink> sink);

  // A Responder that hands the response to `fn` (on the thread that sends it). For
  // tests of handlers; StartStream on it returns nullptr and `fn` gets a 500.
  static Responder FromCallback(std::function<void(HttpResponse)> fn);

  void Send(HttpResponse response) const;
  // Turns the response into a Server-Sent Events stream. Never returns nullptr from the
  // HTTP server (a stream whose client already left is returned closed).
  std::shared_ptr<SseStream> StartStream(HttpHeaders headers = {}) const;
  // True once Send or StartStream has been called on any copy.
  bool completed() const;

 private:
  class State;
  std::shared_ptr<State> state_;
};

}  // namespace joule::net
