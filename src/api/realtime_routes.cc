// GET /v1/devices/{id}/metrics/realtime (CONTRACT §3).
#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "api/api_context.h"
#include "api/device_json.h"
#include "api/device_known.h"
#include "api/error_response.h"
#include "api/history_tail_cache.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

// The encoded JSON of the newest windows of polled devices, by (device, window_start,
// version): a record's content never changes for a given version (RecordJsonCache), so a
// poller re-reading the same windows gets their bytes copied instead of ~40 numbers
// formatted per record. Not attached to the history store (it holds no covered ranges);
// each request trims its series to the windows it asked for and kTrimMargin more.
constexpr size_t kRealtimeJsonCacheBytes = 16 << 20;
constexpr int64_t kTrimMarginWindows = 64;

bool ParseWindows(const std::string* text, size_t* out) {
  if (!text) return true;
  size_t v = 0;
  auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
  if (ec != std::errc() || p != text->data() + text->size() || v < 1 || v > 10000) return false;
  *out = v;
  return true;
}

void Lit(std::string* out, std::string_view text) { out->append(text.data(), text.size()); }

using RecordPtrs = std::vector<const model::AggregateRecord*>;

// Newest window first; per window the higher version.
bool Newer(const model::AggregateRecord* a, const model::AggregateRecord* b) {
  if (a->window_start_ns != b->window_start_ns) return a->window_start_ns > b->window_start_ns;
  return a->version > b->version;
}

bool SortedNewestFirst(const std::vector<model::AggregateRecord>& records) {
  for (size_t i = 1; i < records.size(); ++i) {
    if (Newer(&records[i], &records[i - 1])) return false;
  }
  return true;
}

// The latest store's and history's records in one list, newest window first, one record
// per window: the higher version, the latest store's on a tie; at most `windows`. Both
// stores answer newest first, so this is a merge (std::merge's order: on a tie the first
// list's record first), with a stable sort for an input that is not ordered.
void MergeWindows(const std::vector<model::AggregateRecord>& latest,
                  const std::vector<model::AggregateRecord>& history, size_t windows,
                  RecordPtrs* chosen) {
  chosen->reserve(latest.size() + history.size());
  if (SortedNewestFirst(latest) && SortedNewestFirst(history)) {
    size_t i = 0, j = 0;
    while (i < latest.size() || j < history.size()) {
      if (j == history.size() || (i < latest.size() && !Newer(&history[j], &latest[i]))) {
        chosen->push_back(&latest[i++]);
      } else {
        chosen->push_back(&history[j++]);
      }
    }
  } else {
    for (const model::AggregateRecord& r : latest) chosen->push_back(&r);
    for (const model::AggregateRecord& r : history) chosen->push_back(&r);
    std::stable_sort(chosen->begin(), chosen->end(), Newer);
  }
  size_t out = 0;
  for (size_t i = 0; i < chosen->size() && out < windows; ++i) {
    if (out > 0 && (*chosen)[out - 1]->window_start_ns == (*chosen)[i]->window_start_ns) continue;
    (*chosen)[out++] = (*chosen)[i];
  }
  chosen->resize(out);
}

// Writes through a pointer into room made in the body up front, so that a literal key is a
// fixed-size copy instead of a std::string::append call, a number or a time is formatted
// in place. Room is checked per item: a short estimate costs a regrowth, never an overrun.
class HeadWriter {
 public:
  HeadWriter(std::string* out, size_t room) : out_(out), at_(out->size()) {
    out_->resize(at_ + room);
  }
  HeadWriter(const HeadWriter&) = delete;
  HeadWriter& operator=(const HeadWriter&) = delete;
  ~HeadWriter() { out_->resize(at_); }

  template <size_t N>
  void Lit(const char (&text)[N]) {
    std::memcpy(Room(N - 1), text, N - 1);
    at_ += N - 1;
  }
  void Raw(std::string_view text) {
    std::memcpy(Room(text.size()), text.data(), text.size());
    at_ += text.size();
  }
  // Quoted and escaped as JsonWriter::AppendEscaped does.
  void Str(std::string_view s) {
    if (JsonWriter::NeedsEscape(s)) {
      std::string escaped;
      JsonWriter::AppendEscaped(&escaped, s);
      return Raw(escaped);
    }
    char* p = Room(s.size() + 2);
    *p++ = '"';
    std::memcpy(p, s.data(), s.size());
    p[s.size()] = '"';
    at_ += s.size() + 2;
  }
  void Double(double v) {
    at_ = JsonWriter::WriteDouble(Room(JsonWriter::kMaxDoubleChars), v) - Base();
  }
  void Time(int64_t nanos) {
    char* p = Room(26);
    *p++ = '"';
    p = WriteRfc3339Millis(p, nanos);
    *p++ = '"';
    at_ = p - Base();
  }
  void Char(char c) { *Room(1) = c, ++at_; }

 private:
  char* Base() { return out_->data(); }
  char* Room(size_t n) {
    if (out_->size() - at_ < n) [[unlikely]]
      Grow(n);
    return Base() + at_;
  }
  [[gnu::noinline]] void Grow(size_t n) { out_->resize(std::max(2 * out_->size(), at_ + n)); }
  std::string* const out_;
  size_t at_;
};

// The body up to the records: {"device_id":…,"device":{…},"source":…,"latest":{…} or null,
// "data":[ — the bytes JsonWriter wrote before (literal keys, JsonWriter's escaping and
// number formatting; tests/realtime_routes_test.cc pins them).
void AppendHead(std::string* out, std::string_view device_id, const store::Device& device,
                std::string_view source, const store::LatestSnapshot& snap) {
  Lit(out, "{\"device_id\":");
  JsonWriter::AppendEscaped(out, device_id);
  Lit(out, ",\"device\":");
  AppendDeviceJson(out, device);
  size_t room = 128 + source.size();
  if (snap.has_reading) {
    room += snap.reading.meta_json.size();
    for (const auto& m : snap.reading.metrics) room += m.name.size() + 28;
  }
  HeadWriter w(out, room);
  w.Lit(",\"source\":");
  w.Str(source);
  w.Lit(",\"latest\":");
  if (snap.has_reading) {
    w.Lit("{\"timestamp\":");
    w.Time(snap.reading.timestamp_ns);
    w.Lit(",\"received_at\":");
    w.Time(snap.reading.received_at_ns);
    w.Lit(",\"metrics\":{");
    bool first = true;
    for (const auto& m : snap.reading.metrics) {
      if (!first) w.Char(',');
      first = false;
      w.Str(m.name);
      w.Char(':');
      w.Double(m.value);
    }
    w.Lit("},\"meta\":");
    if (snap.reading.meta_json.empty()) {
      w.Lit("{}");
    } else {
      w.Raw(snap.reading.meta_json);
    }
    w.Char('}');
  } else {
    w.Lit("null");
  }
  w.Lit(",\"data\":[");
}

// Enough for the whole body in the common case, so it is allocated once: the head's parts
// (escaping at most doubles a name; a number takes at most 24 bytes), and per record what
// model::AppendRecordJson reserves for it.
size_t BodySizeHint(std::string_view device_id, const store::Device& device,
                    const store::LatestSnapshot& snap, const RecordPtrs& records) {
  size_t n = 192 + 2 * device_id.size() + DeviceJsonSizeHint(device);
  if (snap.has_reading) {
    n += snap.reading.meta_json.size();
    for (const auto& m : snap.reading.metrics) n += 2 * m.name.size() + 28;
  }
  for (const model::AggregateRecord* r : records) n += 320 + 200 * r->metrics.size();
  return n;
}

void HandleRealtime(ApiContext& ctx, RecordJsonCache& cache, HistoryTailCache& tail,
                    net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  const std::string& device_id = req.path_params["id"];
  bool registered = false;
  Result<store::Device> device = ctx.auth->AuthorizeDeviceRead(caller, device_id, &registered);
  if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
  size_t windows = ctx.latest_windows;
  if (!ParseWindows(req.Query("windows"), &windows)) {
    responder.Send(net::HttpResponse::Error(400, "invalid_argument",
                                            "windows must be an integer in [1, 10000]"));
    return;
  }
  // The fast path is the latest store. When it has nothing for the device (a restart
  // with the memory store, an expired or unreachable Redis), answer from history.
  store::LatestSnapshot snap;
  std::string_view source = ctx.latest->backend();
  // A latest store that is down, or still catching up after an outage, is skipped: its
  // newest windows may be missing, and history has them.
  const bool usable = !ctx.latest_state || ctx.latest_state().usable();
  Result<bool> found = usable ? ctx.latest->Get(device_id, windows, &snap) : Result<bool>(false);
  // A read that finds it unreachable (a timeout, a refused connection) marks it down as a
  // failed write does, so the next reads go to history without waiting for a timeout each.
  if (!found.ok() && found.status().code() == StatusCode::kUnavailable && ctx.latest_failed) {
    ctx.latest_failed(found.status());
  }
  // Skipped or failed: the answer is history's alone, whatever it holds — never an empty
  // answer in the latest store's name while it was not asked (found by a black-box test:
  // a frozen Redis gave 503 without Retry-After, then "source": "redis" with no data).
  const bool from_history = !usable || !found.ok();
  const Status latest_error = found.ok() ? Status::Ok() : found.status();
  if (from_history) {
    snap = store::LatestSnapshot();
    source = "history";
    found = false;
  }
  // It may also hold fewer windows than asked (after a restart it only has what was
  // emitted since; a device younger than `windows` windows): older windows then come
  // from history, the higher version winning. History's answer is kept while no history
  // write reaches the device (HistoryTailCache), so a poller does not read RocksDB each time.
  HistoryTailCache::Records history;  // owns what `chosen` points into
  RecordPtrs chosen;                  // newest window first
  if (ctx.history && (!*found || snap.records.size() < windows)) {
    auto records = tail.Latest(*ctx.history, ctx.history_json_cache, device_id, windows);
    // Without an answer from the latest store, a failed history read fails the request
    // (an empty 200 would claim the device has no data).
    if (!records.ok() && !*found) return responder.Send(ErrorFromStatus(records.status()));
    if (records.ok() && !(*records)->empty()) {
      history = std::move(*records);
      if (!*found || snap.records.empty()) {
        if (!*found) snap = store::LatestSnapshot();
        source = "history";
        found = true;
        chosen.reserve(history->size());
        for (const model::AggregateRecord& r : *history) chosen.push_back(&r);
      } else {
        MergeWindows(snap.records, *history, windows, &chosen);
      }
    }
  }
  if (history == nullptr) {
    chosen.reserve(snap.records.size());
    for (const model::AggregateRecord& r : snap.records) chosen.push_back(&r);
  }
  if (!*found) {
    // A registered device with nothing in history yet: an empty answer (from history when
    // the latest store was skipped or failed: "latest" is null then, as documented). An
    // unregistered id is unknown only if the latest store was asked; otherwise it may hold
    // the device's data, and the client should retry (503 + Retry-After).
    if (!registered && from_history) {
      return responder.Send(ErrorFromStatus(
          latest_error.ok() ? Status::Unavailable("the latest store is down or catching up, and "
                                                  "history holds nothing for this device yet")
                            : latest_error));
    }
    if (!registered) {
      // Nothing in the latest store, no base window in history: still known (an empty
      // answer, as for a registered device) when the engine holds it or history has its
      // hours or days — the rule history and the stream apply too (device_known.h).
      Result<bool> known = DeviceKnown(ctx, device_id);
      if (!known.ok()) return responder.Send(ErrorFromStatus(known.status()));
      if (!*known) return responder.Send(DeviceNotFound());
    }
    snap = store::LatestSnapshot();  // registered (or known), no data yet
  }
  std::string body;
  body.reserve(BodySizeHint(device_id, *device, snap, chosen));
  AppendHead(&body, device_id, *device, source, snap);
  std::shared_ptr<RecordJsonCache::Series> series;
  if (!chosen.empty()) series = cache.Open(device_id, model::Resolution::kBase);
  int64_t oldest = INT64_MAX, width = 0;
  for (size_t i = 0; i < chosen.size(); ++i) {
    const model::AggregateRecord& r = *chosen[i];
    if (i > 0) body.push_back(',');
    oldest = std::min(oldest, r.window_start_ns);
    width = std::max(width, r.window_end_ns - r.window_start_ns);
    if (series && cache.Append(*series, r.window_start_ns, r.version, &body)) continue;
    const size_t at = body.size();
    model::AppendRecordJson(r, &body);
    if (series)
      cache.Insert(*series, r.window_start_ns, r.version, std::string_view(body).substr(at));
  }
  if (series) cache.Trim(*series, oldest - kTrimMarginWindows * width);
  body += "]}";
  responder.Send(net::HttpResponse::Json(200, std::move(body)));
}

}  // namespace

void AddRealtimeRoutes(net::Router& router, ApiContext& ctx) {
  auto cache = std::make_shared<RecordJsonCache>(kRealtimeJsonCacheBytes, nullptr);
  auto tail = std::make_shared<HistoryTailCache>();
  router.Add(
      "GET", "/v1/devices/{id}/metrics/realtime",
      [&ctx, cache, tail](net::HttpRequest& req, net::Responder r) {
        HandleRealtime(ctx, *cache, *tail, req, std::move(r));
      },
      TokenRoute(ctx));
}

}  // namespace joule::api
