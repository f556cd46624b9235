// GET /v1/owners/{owner_id}/energy?from=&to=&resolution=1h|1d&metric=power_w[,energy_wh]
// (CONTRACT §3): per-device and total energy per bucket, read from the devices' own
// pre-computed 1h or 1d (local day) records — so the numbers equal the sums of the
// devices' histories by construction. The energy of a power metric is its energy_wh;
// of a counter metric (e.g. a meter's energy_wh) its delta.
//
// Whole-home meters (`config.whole_home = true`, whole_home_meter.h) measure every
// appliance of the home too: a bucket's total is the sum of its whole-home meters' energy
// when it has any, and of all its devices only when it has none (no meter marked, or none
// with this metric in that bucket — before it was installed, or a meter sending only its
// counter asked for power_w). Summing everything counted the appliances twice.
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "api/api_context.h"
#include "api/device_fields.h"
#include "api/error_response.h"
#include "api/owner_energy_cache.h"
#include "api/query_params.h"
#include "api/record_json_cache.h"
#include "api/routes.h"
#include "api/token_route.h"
#include "api/whole_home_meter.h"
#include "common/clock.h"
#include "common/json_writer.h"
#include "common/metrics.h"
#include "common/time_format.h"
#include "ingest/validation.h"
#include "net/http_server.h"
#include "net/router.h"

namespace joule::api {
namespace {

constexpr size_t kMaxBuckets = 10'000;
constexpr size_t kMaxMetrics = 4;  // in `metric`, tried in order per record

struct Bucket {
  int64_t end_ns = 0;
  std::string local_date;
  double total = 0;             // over every device
  double whole_home_total = 0;  // over the whole-home meters
  bool has_whole_home = false;  // a whole-home meter has energy in this bucket
  struct Device {
    double wh = 0;
    bool present = false;
  };
  std::vector<Device> devices;  // by the device's rank in device-id order
};

struct Counters {
  Counter* hits = nullptr;
  Counter* misses = nullptr;
};

void HandleOwnerEnergy(ApiContext& ctx, OwnerEnergyCache* cache, const Counters& counters,
                       net::HttpRequest& req, net::Responder responder) {
  const Caller caller = ctx.auth->Authenticate(req);
  if (caller.kind == Caller::Kind::kNone) return responder.Send(Unauthorized(caller));
  // Device tokens only ingest: 403 on every read route, whichever owner is asked (found
  // by a black-box test: this route alone answered them 404 "no such owner").
  if (caller.kind == Caller::Kind::kDevice) {
    return responder.Send(net::HttpResponse::Error(
        403, "forbidden", "device tokens may only ingest; use an owner key"));
  }
  const std::string& owner_id = req.path_params["owner_id"];
  // An owner id outside the id syntax is the 400 the owner-key routes give it, naming the
  // syntax (until session 36 it was 404 "no such owner" here; found by a black-box test).
  if (Status valid = ValidateOwnerId(owner_id); !valid.ok()) {
    return responder.Send(ErrorFromStatus(valid));
  }
  if (caller.kind == Caller::Kind::kOwner && caller.owner_id != owner_id) {
    return responder.Send(net::HttpResponse::Error(404, "not_found", "no such owner"));
  }
  if (!ctx.metadata) {
    return responder.Send(net::HttpResponse::Error(404, "not_found", "no such owner"));
  }
  auto fail = [&](const Status& st) { responder.Send(ErrorFromStatus(st)); };
  const int64_t now = ctx.clock->NowNanos();
  // Bounds rounded up to the millisecond select the same buckets and are echoed exactly
  // (query_params.h).
  int64_t to = now;
  WrittenTime written_from, written_to;
  if (const std::string* v = req.Query("to")) {
    Result<int64_t> t = ParseTimeParam("to", *v, &written_to);
    if (!t.ok()) return fail(t.status());
    to = *t;
  }
  to = CeilToMillis(to);
  int64_t from = to - 7 * kNanosPerDay;
  if (const std::string* v = req.Query("from")) {
    Result<int64_t> f = ParseTimeParam("from", *v, &written_from);
    if (!f.ok()) return fail(f.status());
    from = CeilToMillis(*f);
  }
  // Compared as written too: both may clamp to 2170 (WrittenTime).
  if (from > to || (req.Query("from") && req.Query("to") && written_from > written_to)) {
    return fail(Status::InvalidArgument("from must not be after to"));
  }
  std::string res_text = req.Query("resolution") ? *req.Query("resolution") : "1d";
  model::Resolution resolution;
  if (res_text == "1h") {
    resolution = model::Resolution::kHour;
  } else if (res_text == "1d") {
    resolution = model::Resolution::kDay;
  } else {
    return fail(Status::InvalidArgument("resolution must be 1h or 1d"));
  }
  const int64_t width = resolution == model::Resolution::kHour ? kNanosPerHour : kNanosPerDay;
  // Counted up to where data can end (query_params.h, DataEnd): an open-ended `to` asks for
  // everything from `from` on.
  const int64_t counted_to = std::min(to, DataEnd(now, ctx.limits.max_future_skew_ns));
  // A partial bucket counts (CONTRACT §3: "at most 10,000 buckets"; until session 33 only
  // whole ones did, and 10,000 buckets and 1 ms more passed).
  if (counted_to > from &&
      (counted_to - from - 1) / width + 1 > static_cast<int64_t>(kMaxBuckets)) {
    return fail(Status::InvalidArgument(fmt::format(
        "the range spans more than {} buckets of {}{}", kMaxBuckets, res_text,
        resolution == model::Resolution::kHour ? "; use resolution=1d or a shorter range"
                                               : "; use a shorter range")));
  }
  std::string metric = req.Query("metric") ? *req.Query("metric") : "power_w";
  // `metric` may list a few metrics, comma-separated: a device's energy in a bucket is that
  // of the first one its record has as power or counter (`power_w,energy_wh` counts a meter
  // sending only its cumulative counter next to plugs sending power).
  std::vector<std::string> metrics;
  for (size_t pos = 0;;) {
    const size_t comma = metric.find(',', pos);
    std::string name = metric.substr(pos, comma == std::string::npos ? comma : comma - pos);
    if (!ingest::ValidMetricName(name)) {
      return fail(Status::InvalidArgument(fmt::format("metric: '{}' is not a metric name", name)));
    }
    // Energy is that of a power metric or the delta of a counter; a gauge has none, so
    // asking for one is an error, not an empty answer (found by a black-box test:
    // metric=voltage_v answered 200 with no data). The kind follows from the name and
    // [metrics.kinds] (CONTRACT §2); a power or counter name without data is 200 empty.
    const model::MetricKind kind = ctx.KindOf(name);
    if (kind == model::MetricKind::kGauge) {
      return fail(Status::InvalidArgument(fmt::format(
          "metric: '{}' is a gauge; energy needs a power metric (a name ending in _w) or a "
          "counter (_wh, _total), or one set so in [metrics.kinds]",
          name)));
    }
    if (std::find(metrics.begin(), metrics.end(), name) != metrics.end()) {
      return fail(Status::InvalidArgument(fmt::format("metric: '{}' is listed twice", name)));
    }
    metrics.push_back(std::move(name));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (metrics.size() > kMaxMetrics) {
    return fail(Status::InvalidArgument(
        fmt::format("metric: at most {} metrics, comma-separated", kMaxMetrics)));
  }

  std::vector<std::string> device_ids;
  std::vector<bool> whole_home;  // by the device's position in device_ids
  store::ListDevicesOptions list;
  list.owner_id = owner_id;
  list.limit = 1000;
  while (true) {
    Result<store::DevicePage> page = ctx.metadata->ListDevices(list);
    if (!page.ok()) return fail(page.status());
    for (const auto& d : page->devices) {
      device_ids.push_back(d.device_id);
      whole_home.push_back(IsWholeHomeMeter(d.config_json));
    }
    if (page->next_cursor.empty()) break;
    list.after = page->next_cursor;
  }
  // An owner without devices (a new home) has no energy yet: 200 with empty data, for its
  // own key as for the admin (its key proves the owner exists; another owner's id was 404
  // above).

  // A repeated question is answered from the body kept for it while no write reached the
  // owner's devices' series (owner_energy_cache.h has the argument).
  std::string key;
  OwnerEnergyCache::Snapshot snapshot;
  const bool cacheable =
      cache != nullptr && req.Query("to") != nullptr &&
      OwnerEnergyCache::Take(ctx.history_json_cache, device_ids, resolution, &snapshot);
  if (cacheable) {
    // The snapshot follows the device list and the series but not the devices' configs:
    // the whole-home flags (in device_ids' order) are part of the question.
    std::string flags(whole_home.size(), '0');
    for (size_t i = 0; i < whole_home.size(); ++i) flags[i] = whole_home[i] ? '1' : '0';
    key = fmt::format("{}\n{}\n{}\n{}\n{}\n{}", owner_id, res_text, metric, from, to, flags);
    if (std::shared_ptr<const std::string> kept =
            cache->Find(key, snapshot, ctx.history->ReadHorizon(resolution))) {
      if (counters.hits) counters.hits->Inc();
      net::HttpResponse r = net::HttpResponse::Json(200, std::string());
      r.shared_body = std::move(kept);
      return responder.Send(std::move(r));
    }
    if (counters.misses) counters.misses->Inc();
  }

  // Buckets by window start; each holds one value per device (in device-id order, the
  // order of the answer's "devices" object), present or not.
  std::vector<size_t> order(device_ids.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return device_ids[a] < device_ids[b]; });
  std::map<int64_t, Bucket> buckets;
  store::HistoryEnergyFields f;
  model::AggregateRecord scratch;  // for stores that decode whole records
  for (size_t rank = 0; rank < order.size(); ++rank) {
    const bool meter = whole_home[order[rank]];
    store::HistoryQuery q;
    q.device_id = device_ids[order[rank]];
    q.resolution = resolution;
    q.from_ns = from;
    q.to_ns = to;
    q.limit = 10'000;
    // Only the window end, local date and the metric's energy of each record are decoded.
    auto visit = [&](const store::HistoryEntry& e) -> Status {
      bool found = false;
      for (const std::string& m : metrics) {
        JOULE_RETURN_IF_ERROR(e.DecodeEnergy(m, &f, &scratch));
        found = f.metric_found && f.kind != model::MetricKind::kGauge;
        if (found) break;
      }
      if (!found) return Status::Ok();
      const double wh = f.kind == model::MetricKind::kCounter ? f.delta : f.energy_wh;
      Bucket& b = buckets[e.window_start_ns];
      if (b.devices.empty()) b.devices.resize(order.size());
      b.end_ns = std::max(b.end_ns, f.window_end_ns);
      if (b.local_date.empty()) b.local_date.assign(f.local_date);
      b.total += wh;
      if (meter) {
        b.whole_home_total += wh;
        b.has_whole_home = true;
      }
      b.devices[rank].wh += wh;
      b.devices[rank].present = true;
      return Status::Ok();
    };
    while (true) {
      Result<std::string> next = ctx.history->Scan(q, visit);
      if (!next.ok()) return fail(next.status());
      if (next->empty()) break;
      q.cursor = std::move(*next);
    }
  }

  JsonWriter w;
  w.BeginObject();
  w.Key("owner_id");
  w.String(owner_id);
  w.Key("resolution");
  w.String(res_text);
  w.Key("metric");
  w.String(metric);
  w.Key("from");
  w.String(FormatRfc3339Millis(from));
  w.Key("to");
  w.String(FormatRfc3339Millis(to));
  w.Key("whole_home");  // the owner's whole-home meters, in device-id order
  w.BeginArray();
  for (size_t i : order) {
    if (whole_home[i]) w.String(device_ids[i]);
  }
  w.EndArray();
  w.Key("data");
  w.BeginArray();
  for (const auto& [start, b] : buckets) {
    w.BeginObject();
    w.Key("window_start");
    w.String(FormatRfc3339Millis(start));
    w.Key("window_end");
    w.String(FormatRfc3339Millis(b.end_ns));
    if (resolution == model::Resolution::kDay && !b.local_date.empty()) {
      w.Key("local_date");
      w.String(b.local_date);
    }
    w.Key("total_energy_wh");
    w.Double(b.has_whole_home ? b.whole_home_total : b.total);
    w.Key("total_of");
    w.String(b.has_whole_home ? "whole_home" : "all");
    w.Key("devices");
    w.BeginObject();
    for (size_t rank = 0; rank < b.devices.size(); ++rank) {
      if (!b.devices[rank].present) continue;
      w.Key(device_ids[order[rank]]);
      w.Double(b.devices[rank].wh);
    }
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  if (!cacheable) return responder.Send(net::HttpResponse::Json(200, w.Take()));
  auto body = std::make_shared<const std::string>(w.Take());
  cache->Keep(std::move(key), std::move(snapshot),
              buckets.empty() ? std::numeric_limits<int64_t>::max() : buckets.begin()->first, body);
  net::HttpResponse r = net::HttpResponse::Json(200, std::string());
  r.shared_body = std::move(body);
  responder.Send(std::move(r));
}

}  // namespace

void AddOwnerEnergyRoutes(net::Router& router, ApiContext& ctx) {
  auto cache = std::make_shared<OwnerEnergyCache>();
  Counters counters;
  if (ctx.metrics != nullptr) {
    counters.hits = ctx.metrics->GetCounter("joule_owner_energy_cache_hits_total",
                                            "Owner energy answers served from a kept body");
    counters.misses = ctx.metrics->GetCounter(
        "joule_owner_energy_cache_misses_total",
        "Owner energy answers read from the history store (with the cache available)");
  }
  router.Add(
      "GET", "/v1/owners/{owner_id}/energy",
      [&ctx, cache, counters](net::HttpRequest& req, net::Responder r) {
        HandleOwnerEnergy(ctx, cache.get(), counters, req, std::move(r));
      },
      TokenRoute(ctx));
}

}  // namespace joule::api
