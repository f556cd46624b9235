#include "net/responder.h"

#include <atomic>

#include "common/logging.h"

namespace joule::net {

bool Responder::State::Claim() {
  if (!done_.exchange(true, std::memory_order_acq_rel)) return true;
  logging::Warn("http responder completed twice; ignoring the later response");
  return false;
}

void Responder::State::AnswerIfUnanswered() {
  if (done_.exchange(true, std::memory_order_acq_rel)) return;  // answered: the normal case
  sink().Send(HttpResponse::Error(500, "internal", "the request was not answered"));
}

class Responder::Shared final : public State {
 public:
  explicit Shared(std::shared_ptr<ResponseSink> sink) : sink_(std::move(sink)) {}
  ~Shared() override { AnswerIfUnanswered(); }
  ResponseSink& sink() override { return *sink_; }

 private:
  std::shared_ptr<ResponseSink> sink_;
};

Responder::Responder(std::shared_ptr<ResponseSink> sink)
    : state_(std::make_shared<Shared>(std::move(sink))) {}

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
  if (state_ && state_->Claim()) state_->sink().Send(std::move(response));
}

std::shared_ptr<SseStream> Responder::StartStream(HttpHeaders headers) const {
  if (!state_ || !state_->Claim()) return nullptr;
  return state_->sink().StartStream(std::move(headers));
}

bool Responder::completed() const { return !state_ || state_->done(); }

}  // namespace joule::net
