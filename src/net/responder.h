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

#include <atomic>
#include <functional>
#include <memory>
#include <utility>

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

  // A Responder whose sink, a `Sink` made from `args`, lives in the same allocation as the
  // state its copies share (one allocation per request instead of two; the HTTP server's).
  template <typename Sink, typename... Args>
  static Responder Make(Args&&... args) {
    return Responder(std::make_shared<Inline<Sink>>(std::forward<Args>(args)...));
  }

  // A Responder that hands the response to `fn` (on the thread that sends it). For
  // tests of handlers; StartStream on it returns nullptr and `fn` gets a 500.
  static Responder FromCallback(std::function<void(HttpResponse)> fn);

  void Send(HttpResponse response) const;
  // Turns the response into a Server-Sent Events stream. Never returns nullptr from the
  // HTTP server (a stream whose client already left is returned closed).
  std::shared_ptr<SseStream> StartStream(HttpHeaders headers = {}) const;
  // True once Send or StartStream has been called on any copy.
  bool completed() const;

  // What the copies of one Responder share: the sink and whether it was used.
  class State {
   public:
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    virtual ~State() = default;
    // True for the one caller allowed to complete the request.
    bool Claim();
    bool done() const { return done_.load(std::memory_order_acquire); }
    virtual ResponseSink& sink() = 0;

   protected:
    // From the most derived destructor (the sink is still alive there): a request that
    // was never answered — a handler dropped its Responder — gets 500 internal.
    void AnswerIfUnanswered();

   private:
    std::atomic<bool> done_{false};
  };

 private:
  template <typename Sink>
  class Inline final : public State {
   public:
    template <typename... Args>
    explicit Inline(Args&&... args) : sink_(std::forward<Args>(args)...) {}
    ~Inline() override { AnswerIfUnanswered(); }
    ResponseSink& sink() override { return sink_; }

   private:
    Sink sink_;
  };
  class Shared;

  explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace joule::net
