// GET /v1/devices/{id}/metrics/history (CONTRACT §3): a key-range read of pre-computed
// records from the history store — never an aggregation at request time.
#include <fmt/format.h>
#include <zstd.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <set>

#include "api/api_context.h"
#include "api/device_json.h"
#include "api/device_known.h"
#include "api/error_response.h"
#include "api/query_params.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kAutoMaxWindows = 1500;
constexpr size_t kDefaultLimit = 1500;
constexpr size_t kMaxLimit = 10000;
// A range may span at most this many windows of its resolution (1m over ~69 days).
constexpr int64_t kMaxWindowsInRange = 100'000;

int64_t NominalWidth(model::Resolution r, int64_t base_ns) {
  switch (r) {
    case model::Resolution::kBase:
      return base_ns;
    case model::Resolution::kHour:
      return kNanosPerHour;
    case model::Resolution::kDay:
      return kNanosPerDay;
  }
  return base_ns;
}

void AppendCsvNumber(std::string* out, double v) { JsonWriter::AppendDouble(out, v); }

// One flat row per window: fixed columns (1d: with the local day's date and time zone, as
// in JSON), then <metric>.<field> for every metric present on the page (sorted by name).
std::string ToCsv(const std::vector<model::AggregateRecord>& records,
                  const std::vector<std::string>& only, bool days) {
  struct Column {
    std::string metric;
    model::MetricKind kind;
  };
  std::map<std::string, model::MetricKind> metrics;
  for (const auto& r : records) {
    for (const auto& m : r.metrics) {
      if (only.empty() || std::find(only.begin(), only.end(), m.name) != only.end()) {
        metrics.emplace(m.name, m.kind);
      }
    }
  }
  std::string out = days ? "device_id,resolution,window_start,window_end,local_date,timezone,"
                           "final,version,count"
                         : "device_id,resolution,window_start,window_end,final,version,count";
  for (const auto& [name, kind] : metrics) {
    for (const char* f : {"count", "min", "max", "avg", "first", "last", "sum"}) {
      out += fmt::format(",{}.{}", name, f);
    }
    if (kind == model::MetricKind::kPower)
      out += fmt::format(",{0}.twa,{0}.energy_wh,{0}.coverage", name);
    if (kind == model::MetricKind::kCounter) out += fmt::format(",{0}.delta,{0}.resets", name);
  }
  out += "\n";
  out.reserve(out.size() + records.size() * (160 + 180 * metrics.size()));
  std::string resolution_name;
  int64_t named_width = -1;
  for (const auto& r : records) {
    if (r.window_end_ns - r.window_start_ns != named_width) {
      named_width = r.window_end_ns - r.window_start_ns;
      resolution_name = model::ResolutionName(r);
    }
    const double width = static_cast<double>(r.window_end_ns - r.window_start_ns);
    out += r.device_id;  // CONTRACT §1 ids need no CSV quoting: [A-Za-z0-9._:-]
    out += ',';
    out += resolution_name;
    out += ',';
    AppendRfc3339Millis(&out, r.window_start_ns);
    out += ',';
    AppendRfc3339Millis(&out, r.window_end_ns);
    if (days) {  // "YYYY-MM-DD" and an IANA name: no CSV quoting needed
      out += ',';
      out += r.local_date;
      out += ',';
      out += r.timezone;
    }
    out += r.final ? ",true," : ",false,";
    JsonWriter::AppendUint(&out, r.version);
    out += ',';
    JsonWriter::AppendUint(&out, r.count);
    for (const auto& [name, kind] : metrics) {
      const model::MetricAggregate* m = r.FindMetric(name);
      int cells = 7 + (kind == model::MetricKind::kPower ? 3 : 0) +
                  (kind == model::MetricKind::kCounter ? 2 : 0);
      if (!m) {
        out.append(static_cast<size_t>(cells), ',');
        continue;
      }
      out += ',';
      JsonWriter::AppendUint(&out, m->count);
      if (m->count > 0) {
        for (double v :
             {m->min, m->max, m->sum / static_cast<double>(m->count), m->first, m->last, m->sum}) {
          out += ',';
          AppendCsvNumber(&out, v);
        }
      } else {
        out += ",,,,,,";
      }
      if (kind == model::MetricKind::kPower) {
        out += ',';
        if (m->covered_ns > 0) {
          AppendCsvNumber(&out, m->energy_wh * 3600.0 / (static_cast<double>(m->covered_ns) / 1e9));
        }
        out += ',';
        AppendCsvNumber(&out, m->energy_wh);
        out += ',';
        AppendCsvNumber(&out, width > 0 ? static_cast<double>(m->covered_ns) / width : 0.0);
      }
      if (kind == model::MetricKind::kCounter) {
        out += ',';
        AppendCsvNumber(&out, m->delta);
        out += ',';
        JsonWriter::AppendUint(&out, m->resets);
      }
    }
    out += "\n";
  }
  return out;
}

// True when Accept-Encoding lists zstd without q=0 (RFC 9110 12.5.3; only the explicit
// token, not "*").
bool AcceptsZstd(const net::HttpRequest& req) {
  const std::string* header = req.Header("accept-encoding");
  if (header == nullptr) return false;
  std::string_view rest = *header;
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  };
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t semi = item.find(';');
    std::string_view coding = trim(item.substr(0, semi));
    if (coding.size() != 4) continue;
    std::string lower(coding);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower != "zstd") continue;
    if (semi == std::string_view::npos) return true;
    std::string_view params = trim(item.substr(semi + 1));
    if (params.size() < 2 || (params[0] != 'q' && params[0] != 'Q') || params[1] != '=') {
      return true;
    }
    params.remove_prefix(2);
    // q=0, q=0.0, q=0.00, q=0.000 refuse it.
    return params.find_first_not_of("0.") != std::string_view::npos;
  }
  return false;
}

// `in` as one zstd frame (level 1); false on failure.
bool CompressFrame(std::string_view in, std::string* out) {
  thread_local std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(),
                                                                       &ZSTD_freeCCtx);
  if (!cctx) return false;
  out->resize(ZSTD_compressBound(in.size()));
  const size_t n = ZSTD_compressCCtx(cctx.get(), out->data(), out->size(), in.data(), in.size(), 1);
  if (ZSTD_isError(n)) return false;
  out->resize(n);
  return true;
}

// Closes the "data" array and the object.
void FinishPage(std::string_view next_cursor, std::string* out) {
  *out += "],\"next_cursor\":";
  if (next_cursor.empty()) {
    *out += "null";
  } else {
    JsonWriter::AppendEscaped(out, next_cursor);
  }
  *out += '}';
}

void HandleHistory(ApiContext& ctx, net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  const std::string& device_id = req.path_params["id"];
  bool registered = false;
  Result<store::Device> device = ctx.auth->AuthorizeDeviceRead(caller, device_id, &registered);
  if (!device.ok()) return responder.Send(ErrorFromStatus(device.status()));
  auto fail = [&](const Status& st) { responder.Send(ErrorFromStatus(st)); };
  // A first page without records for a device that is not registered (auth.mode =
  // "disabled"): 404 only for an id Joule has never seen, as realtime and the stream decide
  // (device_known.h); a device it knows gets its empty page (found by the archive's
  // black-box test: 404 "no such device" for a range without records, 200 for one with).
  // Returns true when it has answered.
  auto answered_unknown = [&](size_t records, const std::string& cursor) {
    if (registered || records > 0 || !cursor.empty()) return false;
    Result<bool> known = DeviceKnown(ctx, device_id);
    if (!known.ok()) {
      fail(known.status());
      return true;
    }
    if (*known) return false;
    responder.Send(DeviceNotFound());
    return true;
  };

  const int64_t now = ctx.clock->NowNanos();
  // Bounds rounded up to the millisecond select the same windows and are echoed exactly
  // (query_params.h).
  int64_t to = now, from = 0;
  WrittenTime written_from, written_to;
  if (const std::string* v = req.Query("to")) {
    Result<int64_t> t = ParseTimeParam("to", *v, &written_to);
    if (!t.ok()) return fail(t.status());
    to = *t;
  }
  to = CeilToMillis(to);
  if (const std::string* v = req.Query("from")) {
    Result<int64_t> f = ParseTimeParam("from", *v, &written_from);
    if (!f.ok()) return fail(f.status());
    from = CeilToMillis(*f);
  } else {
    from = to - kNanosPerDay;
  }
  // Compared as written too: both may clamp to 2170 (WrittenTime).
  if (from > to || (req.Query("from") && req.Query("to") && written_from > written_to)) {
    return fail(Status::InvalidArgument("from must not be after to"));
  }
  // The windows of the range are counted up to where data can end (query_params.h,
  // DataEnd): an open-ended `to` asks for everything from `from` on, for `auto` as for the
  // limit below.
  const int64_t counted_to =
      std::max(from, std::min(to, DataEnd(now, ctx.limits.max_future_skew_ns)));

  // The windows a range selects: those starting in [from, to) (a partial one at each end
  // counts: 1500 whole minutes and 1 ms more are 1501 windows). `auto` picks by it, and the
  // range limit below counts by it too (until session 33 the limit took whole spans only,
  // and 100,000 windows and 1 ms more passed; found by a black-box test).
  auto windows = [&](int64_t width) {
    auto ceil_div = [](int64_t a, int64_t b) { return a / b + (a % b > 0 ? 1 : 0); };
    return ceil_div(counted_to, width) - ceil_div(from, width);
  };
  model::Resolution resolution = model::Resolution::kBase;
  std::string res_text = req.Query("resolution") ? *req.Query("resolution") : "auto";
  if (res_text == "auto") {
    // Only a resolution whose retention reaches back to `from`: a day older than the 1m
    // retention answered `data: []` with 1m although its 1h records exist (found by a
    // black-box test). 1d is the fallback, as for a range too long for 1h.
    auto fits = [&](model::Resolution r, int64_t width) {
      return windows(width) <= static_cast<int64_t>(kAutoMaxWindows) &&
             ctx.history->ReadHorizon(r) <= from;
    };
    if (fits(model::Resolution::kBase, ctx.base_window_ns)) {
      resolution = model::Resolution::kBase;
    } else if (fits(model::Resolution::kHour, kNanosPerHour)) {
      resolution = model::Resolution::kHour;
    } else {
      resolution = model::Resolution::kDay;
    }
  } else {
    Result<model::Resolution> r = ParseResolution(res_text, ctx.base_window_ns);
    if (!r.ok()) return fail(r.status());
    resolution = *r;
  }
  const int64_t width = NominalWidth(resolution, ctx.base_window_ns);
  if (windows(width) > kMaxWindowsInRange) {
    model::AggregateRecord probe;
    probe.resolution = resolution;
    probe.window_end_ns = width;
    return fail(Status::InvalidArgument(fmt::format(
        "the range spans more than {} windows of {}; use a coarser resolution or a shorter range",
        kMaxWindowsInRange, model::ResolutionName(probe))));
  }
  std::vector<std::string> only;
  if (const std::string* v = req.Query("metrics")) {
    Result<std::vector<std::string>> m = ParseMetricList(*v);
    if (!m.ok()) return fail(m.status());
    only = *m;
  }
  std::string format = req.Query("format") ? *req.Query("format") : "json";
  if (format != "json" && format != "csv") {
    return fail(Status::InvalidArgument("format must be json or csv"));
  }
  Result<size_t> limit = ParseLimit(req.Query("limit"), kDefaultLimit, kMaxLimit);
  if (!limit.ok()) return fail(limit.status());

  store::HistoryQuery q;
  q.device_id = device_id;
  q.resolution = resolution;
  q.from_ns = from;
  q.to_ns = to;
  q.limit = *limit;
  if (const std::string* c = req.Query("cursor")) q.cursor = *c;

  if (format == "csv") {
    auto send = [&](const RecordJsonCache::KeyedPage& csv) {
      net::HttpResponse r;
      r.status = 200;
      r.content_type = "text/csv; charset=utf-8";
      r.shared_body = csv.body;
      if (!csv.next_cursor.empty()) r.headers.emplace_back("X-Next-Cursor", csv.next_cursor);
      responder.Send(std::move(r));
    };
    // A repeated request is answered from the CSV kept by the cache (KeepPage explains
    // why that is exact). The key holds every parameter of the answer; the horizon is
    // read before the store, so a key never names records retention has hidden since.
    RecordJsonCache* cache = ctx.history_json_cache;
    std::shared_ptr<RecordJsonCache::Series> series;
    std::string key;
    int64_t first = 0;
    uint64_t writes = 0;
    if (cache != nullptr && cache->attached()) {
      if (Status st = store::ValidateHistoryQuery(q); !st.ok()) return fail(st);
      Result<int64_t> start = store::history_cursor::Start(q);
      if (!start.ok()) return fail(start.status());
      first = std::max(*start, ctx.history->ReadHorizon(resolution));
      series = cache->Open(device_id, resolution);
    }
    if (series) {
      key = fmt::format("csv\n{}\n{}\n{}", first, to, q.limit);
      for (const std::string& m : only) key.append("\n").append(m);
      if (std::optional<RecordJsonCache::KeyedPage> kept = cache->FindPage(*series, key)) {
        return send(*kept);
      }
      writes = cache->WriteCount(*series);
    }
    Result<store::HistoryPage> page = ctx.history->Range(q);
    if (!page.ok()) return fail(page.status());
    if (answered_unknown(page->records.size(), q.cursor)) return;
    RecordJsonCache::KeyedPage csv{
        std::make_shared<const std::string>(
            ToCsv(page->records, only, q.resolution == model::Resolution::kDay)),
        page->next_cursor};
    if (series && !page->records.empty()) {
      cache->KeepPage(*series, std::move(key), first, to, writes, csv);
    }
    return send(csv);
  }

  model::AggregateRecord probe;
  probe.resolution = resolution;
  probe.window_end_ns = width;
  JsonWriter w;
  w.BeginObject();
  w.Key("device_id");
  w.String(device_id);
  w.Key("device");
  WriteDeviceJson(w, *device);
  w.Key("resolution");
  w.String(model::ResolutionName(probe));
  w.Key("from");
  w.String(FormatRfc3339Millis(from));
  w.Key("to");
  w.String(FormatRfc3339Millis(to));
  w.Key("source");
  w.String("history");
  w.Key("data");
  w.BeginArray();
  w.EndArray();
  std::string body = w.Take();
  body.pop_back();  // the records go between the brackets

  // The records. Fastest: a range the JSON cache holds completely (RecordJsonCache explains
  // why that is exact) is copied from memory. Otherwise a key-range scan that decodes only
  // the records the cache does not hold with the stored version; a complete scan then
  // marks the range covered. The body is sized once from the first record.
  std::shared_ptr<RecordJsonCache::Series> cached;
  RecordJsonCache* cache = ctx.history_json_cache;
  if (cache != nullptr && only.empty()) cached = cache->Open(device_id, resolution);
  size_t records = 0;
  std::string next_cursor;
  if (cached && cache->attached()) {
    if (Status st = store::ValidateHistoryQuery(q); !st.ok()) return fail(st);
    Result<int64_t> start = store::history_cursor::Start(q);
    if (!start.ok()) return fail(start.status());
    const int64_t first = std::max(*start, ctx.history->ReadHorizon(resolution));
    // The page (records and the closing part) is shared with the cache: sent after the
    // head of the body without being copied.
    if (std::shared_ptr<const std::string> page =
            cache->CoveredPage(*cached, q, first, &FinishPage, &records)) {
      if (answered_unknown(records, q.cursor)) return;
      net::HttpResponse r;
      std::shared_ptr<const std::string> zpage;
      if (AcceptsZstd(req) && (zpage = cache->CompressedPage(*cached, page)) &&
          CompressFrame(body, &r.body)) {
        // Two zstd frames: this request's head of the body, then the cached page's.
        r.shared_body = std::move(zpage);
        r.headers.emplace_back("Content-Encoding", "zstd");
      } else {
        r.body = std::move(body);
        r.shared_body = std::move(page);
      }
      r.headers.emplace_back("Vary", "Accept-Encoding");
      return responder.Send(std::move(r));
    }
  }
  // A metrics= filtered answer: its page (records and the closing part) is kept per request
  // parameters, as CSV is (RecordJsonCache::KeepPage).
  std::shared_ptr<RecordJsonCache::Series> filtered;
  std::string filtered_key;
  int64_t filtered_first = 0;
  uint64_t filtered_writes = 0;
  if (!only.empty() && cache != nullptr && cache->attached()) {
    if (Status st = store::ValidateHistoryQuery(q); !st.ok()) return fail(st);
    Result<int64_t> start = store::history_cursor::Start(q);
    if (!start.ok()) return fail(start.status());
    filtered_first = std::max(*start, ctx.history->ReadHorizon(resolution));
    filtered = cache->Open(device_id, resolution);
  }
  if (filtered) {
    filtered_key = fmt::format("json\n{}\n{}\n{}", filtered_first, to, q.limit);
    for (const std::string& m : only) filtered_key.append("\n").append(m);
    if (std::optional<RecordJsonCache::KeyedPage> kept = cache->FindPage(*filtered, filtered_key)) {
      net::HttpResponse r = net::HttpResponse::Json(200, std::move(body));
      r.shared_body = std::move(kept->body);
      return responder.Send(std::move(r));
    }
    filtered_writes = cache->WriteCount(*filtered);
  }
  const size_t head_size = body.size();
  {
    const size_t expected = std::min<size_t>(q.limit, static_cast<size_t>((to - from) / width) + 2);
    bool all_kept = cached != nullptr;
    auto visit = [&](const store::HistoryEntry& e) -> Status {
      const size_t before = body.size();
      if (records++ > 0) body.push_back(',');
      const size_t at = body.size();
      if (!cached || !cache->Append(*cached, e.window_start_ns, e.version, &body)) {
        Result<model::AggregateRecord> record = e.Decode();
        if (!record.ok()) return record.status();
        model::AppendRecordJson(*record, &body, only);
        if (cached && !cache->Insert(*cached, e.window_start_ns, e.version,
                                     std::string_view(body).substr(at))) {
          all_kept = false;
        }
      }
      if (records == 1) body.reserve(before + (body.size() - before + 64) * expected + 256);
      return Status::Ok();
    };
    Result<std::string> scanned = ctx.history->Scan(q, visit);
    if (!scanned.ok()) return fail(scanned.status());
    next_cursor = std::move(*scanned);
    if (all_kept && cache->attached()) {
      // Covered: from where the store began (the horizon read after the scan is not
      // earlier than the store's) to the next record, or to `to` when there is none.
      Result<int64_t> start = store::history_cursor::Start(q);
      store::HistoryQuery next = q;
      next.cursor = next_cursor;
      Result<int64_t> end =
          next_cursor.empty() ? Result<int64_t>(to) : store::history_cursor::Start(next);
      if (start.ok() && end.ok()) {
        cache->MarkCovered(*cached, std::max(*start, ctx.history->ReadHorizon(resolution)), *end);
      }
    }
  }
  if (answered_unknown(records, q.cursor)) return;
  FinishPage(next_cursor, &body);
  if (filtered && records > 0) {
    auto page = std::make_shared<const std::string>(body.substr(head_size));
    body.resize(head_size);
    cache->KeepPage(*filtered, std::move(filtered_key), filtered_first, to, filtered_writes,
                    {page, next_cursor});
    net::HttpResponse r = net::HttpResponse::Json(200, std::move(body));
    r.shared_body = std::move(page);
    return responder.Send(std::move(r));
  }
  responder.Send(net::HttpResponse::Json(200, std::move(body)));
}

}  // namespace

void AddHistoryRoutes(net::Router& router, ApiContext& ctx) {
  router.Add(
      "GET", "/v1/devices/{id}/metrics/history",
      [&ctx](net::HttpRequest& req, net::Responder r) { HandleHistory(ctx, req, std::move(r)); },
      TokenRoute(ctx));
}

}  // namespace joule::api
