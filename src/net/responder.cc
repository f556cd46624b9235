#include "net/responder.h"

#include <atomic>

#include "common/logging.h"

namespace joule::net {

class Responder::State {
 public:
  explicit State(std::shared_ptr<ResponseSink> sink) : sink_(std::move(sink)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  ~State() {
    if (done_.exchange(true, std::memory_order_acq_rel)) return;  // answered: the normal case
    // Never answered: a handler dropped its Responder. Answer for it.
    sink_->Send(HttpResponse::Error(500, "internal", "the request was not answered"));
  }

  // True for the one caller allowed to complete the request.
  bool Claim() {
    if (!done_.exchange(true, std::memory_order_acq_rel)) return true;
    logging::Warn("http responder completed twice; ignoring the later response");
    return false;
  }
  bool done() const { return done_.load(std::memory_order_acquire); }
  ResponseSink* sink() { return sink_.get(); }

 private:
  std::shared_ptr<ResponseSink> sink_;
  std::atomic<bool> done_{false};
};

Responder::Responder(std::shared_ptr<ResponseSink> sink)
    : state_(std::make_shared<State>(std::move(sink))) {}

namespace {

class CallbackSink final : public ResponseSink {
 public:
  explicit CallbackSink(std::function<void(HttpResponse)> fn) : fn_(std::move(fn)) {}
  void Send(HttpResponse response) override {
    if (response.shared_body) {  // tests read `body`
      response.body += *response.shared_body;
      response.shared_body.reset();
    }
    fn_(std::move(response));
  }
  std::shared_ptr<SseStream> StartStream(HttpHeaders /*headers*/) override {
    fn_(HttpResponse::Error(500, "internal", "streaming is not supported here"));
    return nullptr;
  }

 private:
  std::function<void(HttpResponse)> fn_;
};

}  // namespace

Responder Responder::FromCallback(std::function<void(HttpResponse)> fn) {
  return Responder(std::make_shared<CallbackSink>(std::move(fn)));
}

void Responder::Send(HttpResponse response) const {
  if (state_ && state_->Claim()) state_->sink()->Send(std::move(response));
}

std::shared_ptr<SseStream> Responder::StartStream(HttpHeaders headers) const {
  if (!state_ || !state_->Claim()) return nullptr;
  return state_->sink()->StartStream(std::move(headers));
}

bool Responder::completed() const { return !state_ || state_->done(); }

}  // namespace joule::net
