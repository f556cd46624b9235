// ParseScratch: a TelemetryParser and a ParsedBody kept per thread by an ingest handler
// (HTTP route, MQTT listener), so that the events of one request are built in the
// strings and vectors of the previous request's events (ParseInto's reuse): no
// per-event allocation once warm.
//
// Lifetime rule: a handler takes a lease, parses into lease.body(), hands the events to
// EventAppender (which encodes them before it returns) and drops the lease before it
// returns, without suspending in between. So a body is never referenced after the next
// parse on the same thread, whatever connections interleave on that thread. A lease taken
// while the thread's slot is already leased (a handler re-entered from inside another)
// gets a private parser and body instead — correct, only not reused.
#pragma once

#include <memory>

#include "ingest/telemetry_parser.h"

namespace joule::ingest {

// One per call site and thread: `thread_local ParseScratch scratch;`.
class ParseScratch {
 public:
  class Lease {
   public:
    Lease(ParseScratch* scratch, const IngestLimits& limits);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    TelemetryParser& parser() { return *parser_; }
    ParsedBody& body() { return *body_; }

   private:
    ParseScratch* scratch_ = nullptr;  // null when private (the slot was busy)
    std::unique_ptr<TelemetryParser> own_parser_;
    std::unique_ptr<ParsedBody> own_body_;
    TelemetryParser* parser_ = nullptr;
    ParsedBody* body_ = nullptr;
  };

 private:
  std::unique_ptr<TelemetryParser> parser_;
  ParsedBody body_;
  bool busy_ = false;
};

}  // namespace joule::ingest
