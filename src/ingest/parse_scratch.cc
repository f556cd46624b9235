#include "ingest/parse_scratch.h"

namespace joule::ingest {

namespace {

bool SameLimits(const IngestLimits& a, const IngestLimits& b) {
  return a.max_body_bytes == b.max_body_bytes &&
         a.max_events_per_request == b.max_events_per_request &&
         a.max_future_skew_ns == b.max_future_skew_ns && a.max_event_age_ns == b.max_event_age_ns;
}

}  // namespace

ParseScratch::Lease::Lease(ParseScratch* scratch, const IngestLimits& limits) {
  if (scratch->busy_) {
    own_parser_ = std::make_unique<TelemetryParser>(limits);
    own_body_ = std::make_unique<ParsedBody>();
    parser_ = own_parser_.get();
    body_ = own_body_.get();
    return;
  }
  scratch_ = scratch;
  scratch->busy_ = true;
  // A thread may serve handlers of different limits (tests run several servers in one
  // process): the parser follows the caller's limits.
  if (!scratch->parser_ || !SameLimits(scratch->parser_->limits(), limits)) {
    scratch->parser_ = std::make_unique<TelemetryParser>(limits);
  }
  parser_ = scratch->parser_.get();
  body_ = &scratch->body_;
}

ParseScratch::Lease::~Lease() {
  if (scratch_ != nullptr) scratch_->busy_ = false;
}

}  // namespace joule::ingest
