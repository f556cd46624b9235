// WindowEngine::SaveState / RestoreState — the format is specified in
// docs/formats/checkpoint.md.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "common/crc32c.h"
#include "stream/engine_state.h"
#include "stream/window_engine.h"

namespace joule::stream {

namespace {

constexpr char kMagic[4] = {'J', 'S', 'W', 'E'};
// 1: no version_epoch (read as 0). 2: an open window's last early emission as its full
// content (read as its fingerprint). 3: as its fingerprint. 4: no pending events (events
// are folded on arrival; a format 1–3 file's pending events are folded when it is read),
// gauge histories, and the time from which the histories are complete. 5: the eviction
// bound. 6: the device's last received_at (before: 0, Health falls back to last_seen).
constexpr uint32_t kFormatVersion = 6;
constexpr size_t kHeaderSize = 4 + 4 + 8;

// Appends to a string.
class Writer {
 public:
  static constexpr bool kCountOnly = false;
  explicit Writer(std::string* out) : out_(out) {}
  template <typename T>
  void Fixed(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
    out_->append(buf, sizeof(T));
  }
  void U8(uint8_t v) { Fixed(v); }
  void U32(uint32_t v) { Fixed(v); }
  void U64(uint64_t v) { Fixed(v); }
  void I64(int64_t v) { Fixed(v); }
  void F64(double v) { Fixed(v); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_->append(s);
  }

 private:
  std::string* out_;
};

// Counts what a Writer would append (SaveStateTo's first walk: the size goes first).
class CountingWriter {
 public:
  static constexpr bool kCountOnly = true;
  void U8(uint8_t) { n_ += 1; }
  void U32(uint32_t) { n_ += 4; }
  void U64(uint64_t) { n_ += 8; }
  void I64(int64_t) { n_ += 8; }
  void F64(double) { n_ += 8; }
  void Str(std::string_view s) { n_ += 4 + s.size(); }
  void Skip(size_t n) { n_ += n; }
  uint64_t bytes() const { return n_; }

 private:
  uint64_t n_ = 0;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool Fixed(T* v) {
    if (in_.size() - pos_ < sizeof(T)) return ok_ = false;
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  uint8_t U8() {
    uint8_t v = 0;
    Fixed(&v);
    return v;
  }
  uint32_t U32() {
    uint32_t v = 0;
    Fixed(&v);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    Fixed(&v);
    return v;
  }
  int64_t I64() {
    int64_t v = 0;
    Fixed(&v);
    return v;
  }
  double F64() {
    double v = 0;
    Fixed(&v);
    return v;
  }
  std::string Str() {
    uint32_t n = U32();
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  // A count of items of at least `min_item_bytes` each: rejects counts the remaining
  // input cannot hold (so corrupt input cannot make us allocate gigabytes).
  uint32_t Count(size_t min_item_bytes) {
    uint32_t n = U32();
    if (ok_ && static_cast<uint64_t>(n) * min_item_bytes > in_.size() - pos_) ok_ = false;
    return ok_ ? n : 0;
  }
  bool ok() const { return ok_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

constexpr size_t kAccBytes = 8 + 5 * 8 + 2 * 8 + 8 + 8 + 8 + 8 + 1;

// Acc keeps one (x, y) pair whose meaning depends on the metric's kind; the format keeps
// the four named fields (the ones of the other kinds are 0).
template <class W>
void WriteAcc(W& w, const Acc& a, model::MetricKind kind) {
  const bool power = kind == model::MetricKind::kPower;
  const bool counter = kind == model::MetricKind::kCounter;
  w.U64(a.count);
  w.F64(a.min);
  w.F64(a.max);
  w.F64(a.sum);
  w.F64(a.first);
  w.F64(a.last);
  w.I64(a.first_t);
  w.I64(a.last_t);
  w.F64(power ? a.x : 0.0);
  w.I64(power ? a.y : 0);
  w.F64(counter ? a.x : 0.0);
  w.U64(counter ? static_cast<uint64_t>(a.y) : 0);
  w.U8(a.present ? 1 : 0);
}

Acc ReadAcc(Reader& r, model::MetricKind kind) {
  Acc a;
  a.count = r.U64();
  a.min = r.F64();
  a.max = r.F64();
  a.sum = r.F64();
  a.first = r.F64();
  a.last = r.F64();
  a.first_t = r.I64();
  a.last_t = r.I64();
  const double energy_wh = r.F64();
  const int64_t covered_ns = r.I64();
  const double delta = r.F64();
  const uint64_t resets = r.U64();
  if (kind == model::MetricKind::kPower) {
    a.x = energy_wh;
    a.y = covered_ns;
  } else if (kind == model::MetricKind::kCounter) {
    a.x = delta;
    a.y = static_cast<int64_t>(resets);
  }
  a.present = r.U8() != 0;
  return a;
}

// By metric id. REQUIRES: v.size() <= metrics.size().
template <class W>
void WriteAccs(W& w, const std::vector<Acc>& v, const std::vector<MetricState>& metrics) {
  w.U32(static_cast<uint32_t>(v.size()));
  for (size_t i = 0; i < v.size(); ++i) WriteAcc(w, v[i], metrics[i].kind);
}

// False (and *v untouched beyond its size) for more accumulators than metrics.
bool ReadAccs(Reader& r, std::vector<Acc>* v, const std::vector<MetricState>& metrics) {
  uint32_t n = r.Count(kAccBytes);
  if (n > metrics.size()) return false;
  v->resize(n);
  for (uint32_t i = 0; i < n; ++i) (*v)[i] = ReadAcc(r, metrics[i].kind);
  return true;
}

Window* FindContainingWindow(const std::vector<Window*>& v, int64_t t) {
  for (auto it = v.rbegin(); it != v.rend(); ++it) {
    if ((*it)->start <= t && t < (*it)->end) return *it;
    if ((*it)->end <= t) break;
  }
  return nullptr;
}

// A damaged file: the engine is left empty.
Status Fail(WindowEngine::Impl& E, const char* what) {
  E.ResetState();
  return Status::Corruption(what);
}

}  // namespace

namespace {

// Folds pending rows and brings stale accumulators (a cache of what the histories hold) up
// to date — neither changes a result — so that a checkpoint holds plain values.
void PrepareSave(WindowEngine::Impl& E) {
  E.FlushAll();
  for (auto& dp : E.devices) {
    for (Window* w : dp->win[kBaseRes]) E.CleanWindow(*dp, w);
  }
}

// The payload's fields before the devices.
template <class W>
void WriteEngineFields(W& w, const WindowEngine::Impl& E) {
  w.I64(E.opt.window_ns);
  w.I64(E.opt.max_gap_ns);
  w.U64(E.events);
  w.U64(E.duplicates);
  w.U64(E.late_updates);
  w.U64(E.late_dropped);
  w.U64(E.emitted);
  w.I64(E.last_tick);
  w.U32(E.version_epoch);
  w.U32(static_cast<uint32_t>(E.devices.size()));
}

template <class W>
void WriteDevice(W& w, const WindowEngine::Impl& E, const Device& d,
                 std::vector<FlatKeySet::Entry>* dedup_scratch) {
  w.Str(d.id);
  w.U8(d.has_events ? 1 : 0);
  w.I64(d.max_t);
  w.I64(d.wm);
  w.I64(d.fin_wm);
  w.I64(d.last_seen);
  w.I64(d.next_early);
  w.U32(d.skew_n);
  for (int64_t s : d.skew) w.I64(s);
  w.I64(d.last_received);
  w.U64(d.events);
  w.U64(d.late_updates);
  w.U64(d.late_dropped);
  w.U64(d.duplicates);
  w.Str(d.timezone);
  w.I64(d.latest_day_end);
  w.I64(d.complete_from);
  w.I64(d.evicted_to);
  w.U32(static_cast<uint32_t>(d.metrics.size()));
  for (const MetricState& ms : d.metrics) {
    w.Str(E.NameOf(ms));
    w.U8(static_cast<uint8_t>(ms.kind));
    w.U32(static_cast<uint32_t>(ms.hist.size()));
    // Every counter sample's baseline, stored or not (MetricState::BaselineAt).
    const bool counter = ms.kind == model::MetricKind::kCounter;
    if constexpr (W::kCountOnly) {
      w.Skip(ms.hist.size() * 16 + 4 + (counter ? ms.hist.size() * 8 : 0));
    } else {
      for (size_t k = 0; k < ms.hist.size(); ++k) {
        w.I64(ms.hist[k].t);
        w.F64(ms.hist[k].v);
      }
      w.U32(static_cast<uint32_t>(counter ? ms.hist.size() : 0));
      if (counter) {
        for (size_t k = 0; k < ms.hist.size(); ++k) w.F64(ms.BaselineAt(k));
      }
    }
  }
  for (int res = 0; res < kNumRes; ++res) {
    w.U32(static_cast<uint32_t>(d.win[res].size()));
    for (const Window* win : d.win[res]) {
      w.I64(win->start);
      w.I64(win->end);
      w.U8(win->final ? 1 : 0);
      w.U64(win->version);
      w.U64(win->count);
      w.Str(win->local_date());
      w.Str(win->timezone());
      WriteAccs(w, win->acc, d.metrics);
      w.U8(win->has_early ? 1 : 0);
      w.U64(win->early_fp);
    }
  }
  if constexpr (W::kCountOnly) {
    w.Skip(4 + d.dedup.size() * 16);
  } else {
    // In key order: the table's slot order depends on insertion history (an entry that
    // wrapped around the end comes first), and one state must always save to the same bytes.
    dedup_scratch->clear();
    d.dedup.ForEach([&](const FlatKeySet::Entry& e) { dedup_scratch->push_back(e); });
    std::sort(dedup_scratch->begin(), dedup_scratch->end(),
              [](const FlatKeySet::Entry& a, const FlatKeySet::Entry& b) { return a.key < b.key; });
    w.U32(static_cast<uint32_t>(dedup_scratch->size()));
    for (const FlatKeySet::Entry& e : *dedup_scratch) {
      w.U64(e.key);
      w.I64(e.t);
    }
  }
  w.U32(static_cast<uint32_t>(d.seen_ts.size()));
  for (size_t i = 0; i < d.seen_ts.size(); ++i) w.I64(d.seen_ts[i]);
}

}  // namespace

Status WindowEngine::SaveState(std::string* out) const {
  // The streamed bytes, gathered: one serializer, whose counting walk every save checks.
  struct ToString : StateSink {
    explicit ToString(std::string* s) : out(s) {}
    Status Begin(uint64_t total) override {
      out->clear();
      out->reserve(total);
      return Status::Ok();
    }
    Status Write(std::string_view piece) override {
      out->append(piece);
      return Status::Ok();
    }
    std::string* out;
  } sink(out);
  std::string buffer;
  return SaveStateTo(sink, &buffer);
}

Status WindowEngine::SaveStateTo(StateSink& sink, std::string* buffer, size_t chunk) const {
  PrepareSave(*impl_);
  const Impl& E = *impl_;
  CountingWriter count;
  WriteEngineFields(count, E);
  for (const auto& dp : E.devices) WriteDevice(count, E, *dp, nullptr);
  const uint64_t payload_len = count.bytes();
  const uint64_t total = kHeaderSize + payload_len + 4;
  JOULE_RETURN_IF_ERROR(sink.Begin(total));
  buffer->clear();
  buffer->append(kMagic, 4);
  Writer w(buffer);
  w.U32(kFormatVersion);
  w.U64(payload_len);
  WriteEngineFields(w, E);
  uint32_t crc = 0;
  uint64_t written = 0;
  auto hand_over = [&]() -> Status {
    crc = crc32c::Extend(crc, buffer->data(), buffer->size());
    written += buffer->size();
    Status st = sink.Write(*buffer);
    buffer->clear();
    return st;
  };
  std::vector<FlatKeySet::Entry> dedup_scratch;
  for (const auto& dp : E.devices) {
    WriteDevice(w, E, *dp, &dedup_scratch);
    if (buffer->size() >= chunk) JOULE_RETURN_IF_ERROR(hand_over());
  }
  if (written + buffer->size() != kHeaderSize + payload_len) {
    // The two walks disagree: a bug in this file, never a file that does not read back.
    return Status::Internal("engine state: the counted size differs from the bytes written");
  }
  JOULE_RETURN_IF_ERROR(hand_over());
  w.U32(crc32c::Mask(crc));
  return sink.Write(*buffer);
}

Status WindowEngine::RestoreState(std::string_view data, int64_t now_ns) {
  Impl& E = *impl_;
  E.ResetState();
  if (data.size() < kHeaderSize + 4 || std::memcmp(data.data(), kMagic, 4) != 0) {
    return Status::Corruption("checkpoint: bad magic or too short");
  }
  uint32_t version;
  uint64_t payload_len;
  std::memcpy(&version, data.data() + 4, 4);
  std::memcpy(&payload_len, data.data() + 8, 8);
  if (version < 1 || version > kFormatVersion) {
    return Status::Corruption("checkpoint: unsupported format version " + std::to_string(version));
  }
  if (payload_len != data.size() - kHeaderSize - 4) {
    return Status::Corruption("checkpoint: length mismatch");
  }
  uint32_t stored;
  std::memcpy(&stored, data.data() + data.size() - 4, 4);
  if (crc32c::Unmask(stored) != crc32c::Value(data.data(), data.size() - 4)) {
    return Status::Corruption("checkpoint: CRC mismatch");
  }
  Reader r(data.substr(kHeaderSize, payload_len));
  const int64_t window_ns = r.I64(), max_gap_ns = r.I64();
  if (r.ok() && (window_ns != E.opt.window_ns || max_gap_ns != E.opt.max_gap_ns)) {
    // Which key changed, and its old value (it said "another stream.window or
    // stream.max_gap": found by a black-box test).
    auto duration = [](int64_t ns) {
      for (auto [unit, name] : {std::pair{kNanosPerHour, "h"},
                                {kNanosPerMinute, "m"},
                                {kNanosPerSecond, "s"},
                                {int64_t{1'000'000}, "ms"}}) {
        if (ns != 0 && ns % unit == 0) return fmt::format("{}{}", ns / unit, name);
      }
      return fmt::format("{}ns", ns);
    };
    std::string changed;
    for (auto [key, was, now] : {std::tuple{"stream.window", window_ns, E.opt.window_ns},
                                 {"stream.max_gap", max_gap_ns, E.opt.max_gap_ns}}) {
      if (was == now) continue;
      changed += fmt::format("{}{} = \"{}\" (now \"{}\")", changed.empty() ? "" : " and ", key,
                             duration(was), duration(now));
    }
    return Status::InvalidArgument("checkpoint: written with " + changed);
  }
  E.events = r.U64();
  E.duplicates = r.U64();
  E.late_updates = r.U64();
  E.late_dropped = r.U64();
  E.emitted = r.U64();
  E.last_tick = r.I64();
  E.version_epoch = version >= 2 ? r.U32() : 0;
  const uint32_t n_devices = r.Count(16);
  std::vector<Acc> snapshot_scratch;
  struct PendingRead {
    int64_t t;
    size_t offset, n;
  };
  std::vector<PendingRead> pending;
  std::vector<std::pair<uint32_t, double>> pending_samples;
  std::vector<uint32_t> ids;
  std::vector<double> values;
  for (uint32_t di = 0; di < n_devices && r.ok(); ++di) {
    auto dp = std::make_unique<Device>();
    Device& d = *dp;
    d.id = r.Str();
    d.has_events = r.U8() != 0;
    d.max_t = r.I64();
    if (d.max_t < kMinTime || d.max_t >= kMaxTime) return Fail(E, "checkpoint: bad event time");
    d.wm = r.I64();
    d.fin_wm = r.I64();
    d.last_seen = r.I64();
    d.next_early = r.I64();
    d.skew_n = r.U32();
    for (int64_t& s : d.skew) s = r.I64();
    d.last_received = version >= 6 ? r.I64() : 0;
    d.events = r.U64();
    d.late_updates = r.U64();
    d.late_dropped = r.U64();
    d.duplicates = r.U64();
    d.timezone = r.Str();
    d.zone = E.zones.Find(d.timezone);
    d.latest_day_end = r.I64();
    d.complete_from = version >= 4 ? r.I64() : kMinTime;
    // Before format 5, eviction went up to max(watermark, idle watermark) − allowed_lateness
    // − max_gap (never past it: both only grew).
    // (Saturating: a damaged file's times may be anything; found by checkpoint_fuzz.)
    if (version >= 5) {
      d.evicted_to = r.I64();
    } else {
      int64_t to = std::max(d.wm, d.fin_wm);
      if (__builtin_sub_overflow(to, E.opt.allowed_lateness_ns + E.opt.max_gap_ns, &to)) {
        to = std::numeric_limits<int64_t>::min();
      }
      d.evicted_to = to;
    }
    const uint32_t n_metrics = r.Count(5);
    for (uint32_t mi = 0; mi < n_metrics && r.ok(); ++mi) {
      MetricState ms;
      ms.name = E.InternMetricName(r.Str());
      uint8_t kind = r.U8();
      if (kind > 2) return Fail(E, "checkpoint: bad metric kind");
      ms.kind = static_cast<model::MetricKind>(kind);
      if (const model::MetricKind now = E.metric_kinds[ms.name]; ms.kind != now) {
        // The kind is fixed per device and metric when first seen, and its state (histories,
        // baselines) is that kind's: a [metrics.kinds] change applied only to new devices
        // (found by a black-box test: power fields for one device, gauge ones for the next).
        const std::string metric(E.NameOf(ms));
        const std::string key = "metrics.kinds." + metric;
        const bool set = E.opt.kinds.find(metric) != E.opt.kinds.end();
        std::string msg = "checkpoint: written with metric " + metric + " of kind " +
                          std::string(model::MetricKindName(ms.kind)) + " (device " + d.id +
                          "), but it is now of kind " + std::string(model::MetricKindName(now)) +
                          (set ? " (" + key + ")" : " (by its name, " + key + " not set)") +
                          "; a metric kind cannot change for the devices a checkpoint holds";
        E.ResetState();
        return Status::InvalidArgument(std::move(msg));
      }
      uint32_t nh = r.Count(16);
      for (uint32_t k = 0; k < nh && r.ok(); ++k) {
        Sample s;
        s.t = r.I64();
        s.v = r.F64();
        // Intervals are computed from these times (differences must not overflow).
        if (s.t <= kMinTime || s.t >= kMaxTime) return Fail(E, "checkpoint: bad sample time");
        ms.hist.push_back(s);
      }
      uint32_t nb = r.Count(8);
      if (ms.kind == model::MetricKind::kCounter) {
        for (uint32_t k = 0; k < nb && r.ok(); ++k) ms.baseline.push_back(r.F64());
      } else if (nb != 0) {
        return Fail(E, "checkpoint: baseline of a non-counter metric");
      }
      if (ms.kind == model::MetricKind::kCounter && nb != nh) {
        return Fail(E, "checkpoint: counter baseline mismatch");
      }
      ms.CompactBaselines();
      d.metrics.push_back(std::move(ms));
    }
    for (uint32_t i = 0; i < d.metrics.size(); ++i) d.by_name.push_back(i);
    std::sort(d.by_name.begin(), d.by_name.end(), [&](uint32_t a, uint32_t b) {
      return E.NameOf(d.metrics[a]) < E.NameOf(d.metrics[b]);
    });
    // Formats 1–3: the events above the watermark not yet folded, in (time, tie) order.
    pending.clear();
    pending_samples.clear();
    const uint32_t n_pending = version >= 4 ? 0 : r.Count(20);
    for (uint32_t i = 0; i < n_pending && r.ok(); ++i) {
      PendingRead pe;
      pe.t = r.I64();
      // Folded into windows when read: a time outside the engine's range is damage.
      if (pe.t <= kMinTime || pe.t >= kMaxTime)
        return Fail(E, "checkpoint: bad pending event time");
      (void)r.U64();  // tie: the order is the file's
      pe.n = r.Count(12);
      pe.offset = pending_samples.size();
      for (uint32_t k = 0; k < pe.n; ++k) {
        uint32_t m = r.U32();
        double v = r.F64();
        if (m >= d.metrics.size()) return Fail(E, "checkpoint: bad metric id");
        pending_samples.push_back({m, v});
      }
      pending.push_back(pe);
    }
    for (int res = 0; res < kNumRes && r.ok(); ++res) {
      const uint32_t n_windows = r.Count(16);
      for (uint32_t i = 0; i < n_windows && r.ok(); ++i) {
        Window* win = E.NewWindow();
        d.win[res].push_back(win);  // owned from here on, freed by ResetState
        win->res = static_cast<uint8_t>(res);
        win->start = r.I64();
        win->end = r.I64();
        win->final = r.U8() != 0;
        win->version = r.U64();
        win->count = r.U64();
        std::string local_date = r.Str();
        std::string timezone = r.Str();
        if (!local_date.empty() || !timezone.empty()) {
          win->day_label =
              std::make_unique<DayLabel>(DayLabel{std::move(local_date), std::move(timezone)});
        }
        bool fits = ReadAccs(r, &win->acc, d.metrics);
        win->has_early = r.U8() != 0;
        if (version >= 3) {
          win->early_fp = r.U64();
        } else {  // the last early emission's content: keep its fingerprint
          const uint64_t count = r.U64();
          fits = ReadAccs(r, &snapshot_scratch, d.metrics) && fits;
          win->early_fp = win->has_early && fits ? EarlyFingerprint(count, snapshot_scratch.data(),
                                                                    snapshot_scratch.size())
                                                 : 0;
        }
        if (!fits) {  // more accumulators than metrics
          r = Reader("");
          r.U8();  // mark failed
        }
      }
      size_t j = 0;
      while (j < d.win[res].size() && d.win[res][j]->final) ++j;
      d.first_open[res] = j;
    }
    for (Window* win : d.win[kBaseRes]) {
      win->hour = FindContainingWindow(d.win[kHourRes], win->start);
      win->day = FindContainingWindow(d.win[kDayRes], win->start);
      if (win->hour == nullptr || win->day == nullptr) {
        E.devices.push_back(std::move(dp));  // so ResetState frees its windows
        E.ResetState();
        return Status::Corruption("checkpoint: base window without rollup");
      }
    }
    const uint32_t n_keys = r.Count(16);
    for (uint32_t i = 0; i < n_keys && r.ok(); ++i) {
      uint64_t key = r.U64();
      int64_t t = r.I64();
      (void)d.dedup.Insert(key, t, std::numeric_limits<int64_t>::min());
    }
    const uint32_t n_ts = r.Count(8);
    bool sorted = true;
    for (uint32_t i = 0; i < n_ts && r.ok(); ++i) {
      const int64_t ts = r.I64();
      if (!d.seen_ts.empty() && ts < d.seen_ts.back()) sorted = false;
      d.seen_ts.push_back(ts);
    }
    if (!sorted) {
      r = Reader("");
      r.U8();  // mark failed
    }
    if (version < 4 && r.ok()) {
      // The older engine buffered events above the watermark: fold them now, in order. Its
      // gauge histories were not kept, so they are complete only after every known event.
      for (const PendingRead& pe : pending) {
        ids.clear();
        values.clear();
        for (size_t k = 0; k < pe.n; ++k) {
          ids.push_back(pending_samples[pe.offset + k].first);
          values.push_back(pending_samples[pe.offset + k].second);
        }
        E.FoldInOrder(d, pe.t, pe.n, ids.data(), values.data());
      }
      const int64_t w = E.opt.window_ns;
      d.complete_from = (d.max_t >= 0 ? d.max_t - d.max_t % w : d.max_t) + w;
    }
    const uint64_t hash = HashDeviceId(d.id);
    E.devices.push_back(std::move(dp));
    E.IndexDevice(hash, static_cast<uint32_t>(E.devices.size() - 1));
  }
  if (!r.ok() || !r.done()) {
    E.ResetState();
    return Status::Corruption("checkpoint: truncated or malformed payload");
  }
  // Processing-time stamps from the future (found by a black-box test: after a restart with
  // the clock 2 h earlier, no early firing and no idle finalization for 2 h). kMaxTime
  // (no open window) stays.
  if (E.last_tick > now_ns) E.last_tick = now_ns;
  for (const auto& dp : E.devices) {
    Device& d = *dp;
    if (d.last_seen > now_ns) d.last_seen = now_ns;
    if (d.next_early > now_ns && d.next_early != kMaxTime) d.next_early = now_ns;
  }
  return Status::Ok();
}

}  // namespace joule::stream
