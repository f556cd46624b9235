#include "stream/window_engine.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

#include "common/bytes_equal.h"
#include "stream/engine_state.h"

namespace joule::stream {

using model::MetricKind;

namespace {

using Impl = WindowEngine::Impl;

// Eviction of a device's expired state runs at most this often (processing time).
constexpr int64_t kEvictInterval = 60 * kNanosPerSecond;

inline int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kMaxTime : kMinTime;
  return r;
}

inline int64_t FloorTo(int64_t t, int64_t w) {
  if (t >= 0) return t - t % w;  // the common case: one division, no branches
  return FloorDiv(t, w) * w;
}

// Per-event scratch for one value per metric: on the stack for up to 64 metrics.
template <typename T>
struct SmallBuffer {
  T local[64];
  std::vector<T> heap;
  T* Get(size_t n) {
    if (n <= 64) return local;
    heap.resize(n);
    return heap.data();
  }
};

// String equality without a library call for short names (overlapping word loads; never
// reads outside either string).
inline bool SameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && BytesEqual(a.data(), b.data(), a.size());
}

// De-duplication identity: (device, event_id) else (device, timestamp). Returns false
// for a duplicate; otherwise remembers the identity.
bool RememberEvent(Device& d, const model::Event& e, int64_t expire_before) {
  if (!e.event_id.empty())
    return d.dedup.Insert(HashEventId(e.event_id), e.timestamp_ns, expire_before);
  const int64_t t = e.timestamp_ns;
  auto& v = d.seen_ts;
  if (v.empty() || t > v.back()) {
    v.push_back(t);
    return true;
  }
  // The first stored timestamp at or after t (they are sorted).
  const size_t lo = v.partition_point([t](int64_t x) { return x < t; });
  if (lo < v.size() && v[lo] == t) return false;
  v.insert(lo, t);
  return true;
}

inline Acc& AccOf(Window* w, uint32_t m) {
  // m < size() without the division by sizeof(Acc) that size() is.
  Acc* a = w->acc.data();
  const auto bytes =
      static_cast<size_t>(reinterpret_cast<const char*>(std::to_address(w->acc.end())) -
                          reinterpret_cast<const char*>(a));
  if (size_t{m} * sizeof(Acc) >= bytes) [[unlikely]] {
    w->acc.resize(m + 1);
    a = w->acc.data();
  }
  return a[m];
}

// Call before changing a window. A final window joins the device's dirty list, to be
// re-emitted with version+1; a final base window also keeps a copy of its content before
// the change, from which EmitDirty moves the difference into its rollups.
inline void Touch(Device& d, Window* w) {
  if (w->final && !w->dirty_final) {
    w->dirty_final = true;
    d.dirty.push_back(w);
    if (w->res == kBaseRes) {
      w->snapshot = w->acc;
      w->snapshot_count = w->count;
    }
  }
}

// Merges min/max/first/last of src (count > 0) into dst.
inline void MergeExtremes(Acc& dst, const Acc& src) {
  if (dst.count == 0) {
    dst.min = src.min;
    dst.max = src.max;
    dst.first = src.first;
    dst.first_t = src.first_t;
    dst.last = src.last;
    dst.last_t = src.last_t;
    return;
  }
  if (src.min < dst.min) dst.min = src.min;
  if (src.max > dst.max) dst.max = src.max;
  if (src.first_t < dst.first_t) {
    dst.first_t = src.first_t;
    dst.first = src.first;
  }
  if (src.last_t >= dst.last_t) {
    dst.last_t = src.last_t;
    dst.last = src.last;
  }
}

// Merges base-window content into a rollup accumulator.
inline void MergeAcc(Acc& dst, const Acc& src) {
  if (src.count > 0) {
    MergeExtremes(dst, src);
    dst.count += src.count;
    dst.sum += src.sum;
  }
  dst.x += src.x;
  dst.y += src.y;
  dst.present = dst.present || src.present;
}

// Moves a final base window's change (content now vs its pre-change snapshot) into a
// rollup. Samples are only ever added, so min/max/first/last merge; sums take the
// difference.
void ApplyBaseChange(Device& d, const Window* base, Window* r) {
  Touch(d, r);
  r->count += base->count - base->snapshot_count;
  if (r->acc.size() < base->acc.size()) r->acc.resize(base->acc.size());
  const Acc zero;
  for (size_t m = 0; m < base->acc.size(); ++m) {
    const Acc& now = base->acc[m];
    const Acc& old = m < base->snapshot.size() ? base->snapshot[m] : zero;
    if (now == old) continue;
    Acc& ra = r->acc[m];
    if (now.count > 0) MergeExtremes(ra, now);
    ra.count += now.count - old.count;
    ra.sum += now.sum - old.sum;
    ra.x += now.x - old.x;
    ra.y += now.y - old.y;
    ra.present = ra.present || now.present;
  }
}

struct CounterStep {
  double inc;
  bool reset;
  double baseline;
};

// CONTRACT §2 counters: baseline b (the last accepted reading), new reading v.
inline CounterStep StepCounter(double b, double v) {
  if (v >= b) return {v - b, false, v};
  if (v >= 0.9 * b) return {0.0, false, b};  // noise: baseline stays
  return {v > 0 ? v : 0.0, true, v};         // reset
}

// Calls f(window_start, energy_wh, covered_ns) for each base window overlapping the
// power interval (t1,p1)–(t2,p2). REQUIRES: t2 > t1.
template <typename F>
// s2 = the start of the base window containing t2 (saves a division when t1 is in it too).
inline void SpreadPower(int64_t width, int64_t t1, double p1, int64_t t2, double p2, int64_t s2,
                        F&& f) {
  const double dt = static_cast<double>(t2 - t1);
  for (int64_t s = t1 >= s2 ? s2 : FloorTo(t1, width); s < t2; s += width) {
    int64_t a = std::max(t1, s), b = std::min(t2, s + width);
    if (b <= a) continue;
    double pa = a == t1 ? p1 : p1 + (p2 - p1) * (static_cast<double>(a - t1) / dt);
    double pb = b == t2 ? p2 : p1 + (p2 - p1) * (static_cast<double>(b - t1) / dt);
    f(s, (pa + pb) * 0.5 * (static_cast<double>(b - a) / 3.6e12), b - a);
  }
}

// Calls f(window_start, share) for the windows a counter increment is spread over.
template <typename F>
// s2 as for SpreadPower.
inline void SpreadCounter(int64_t width, int64_t max_gap, int64_t t1, int64_t t2, int64_t s2,
                          double inc, F&& f) {
  if (t2 <= t1 || t2 - t1 > max_gap) {
    f(s2, inc);
    return;
  }
  const double dt = static_cast<double>(t2 - t1);
  for (int64_t s = t1 >= s2 ? s2 : FloorTo(t1, width); s < t2; s += width) {
    int64_t a = std::max(t1, s), b = std::min(t2, s + width);
    if (b <= a) continue;
    f(s, inc * (static_cast<double>(b - a) / dt));
  }
}

// ---- windows ------------------------------------------------------------------------

size_t LowerBound(const std::vector<Window*>& v, int64_t start) {
  size_t lo = 0, hi = v.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v[mid]->start < start) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// The window of `v` containing t, or nullptr.
Window* FindContaining(const std::vector<Window*>& v, int64_t t) {
  if (!v.empty() && v.back()->start <= t && t < v.back()->end) return v.back();
  size_t pos = LowerBound(v, t + 1);  // first with start > t
  if (pos == 0) return nullptr;
  Window* w = v[pos - 1];
  return t < w->end ? w : nullptr;
}

void InsertWindow(Device& d, int res, size_t pos, Window* w) {
  auto& v = d.win[res];
  v.insert(v.begin() + static_cast<ptrdiff_t>(pos), w);
  if (pos <= d.first_open[res]) d.first_open[res] = pos;
  d.min_open_end = std::min(d.min_open_end, w->end);
}

Window* HourOf(Impl& E, Device& d, int64_t base_start) {
  int64_t s = FloorTo(base_start, kNanosPerHour);
  auto& v = d.win[kHourRes];
  if (!v.empty() && v.back()->start == s) return v.back();
  size_t pos = LowerBound(v, s);
  if (pos < v.size() && v[pos]->start == s) return v[pos];
  Window* w = E.NewWindow();
  w->res = kHourRes;
  w->start = s;
  w->end = s + kNanosPerHour;
  w->acc.resize(d.metrics.size());
  InsertWindow(d, kHourRes, pos, w);
  return w;
}

void RefreshTimezone(Impl& E, Device& d) {
  if (E.tzp == nullptr) return;
  std::optional<std::string> answer = E.tzp->TimezoneOf(d.id);
  if (!answer) return;  // the source cannot say now: the device keeps its zone
  std::string tz = std::move(*answer);
  if (tz.empty()) tz = "UTC";
  if (tz != d.timezone) {
    d.timezone = std::move(tz);
    d.zone = E.zones.Find(d.timezone);
  }
}

Window* DayOf(Impl& E, Device& d, int64_t base_start) {
  auto& v = d.win[kDayRes];
  if (Window* w = FindContaining(v, base_start)) return w;
  if (base_start >= d.latest_day_end) RefreshTimezone(E, d);  // a local-day roll
  LocalDay day = LocalDayOf(d.zone, base_start);
  size_t pos = LowerBound(v, base_start + 1);
  // Keep day windows disjoint even if the device's zone changed.
  if (pos > 0) day.start_ns = std::max(day.start_ns, v[pos - 1]->end);
  if (pos < v.size()) day.end_ns = std::min(day.end_ns, v[pos]->start);
  Window* w = E.NewWindow();
  w->res = kDayRes;
  w->start = day.start_ns;
  w->end = day.end_ns;
  w->day_label = std::make_unique<DayLabel>(DayLabel{std::move(day.date), d.timezone});
  w->acc.resize(d.metrics.size());
  InsertWindow(d, kDayRes, pos, w);
  d.latest_day_end = std::max(d.latest_day_end, w->end);
  return w;
}

Window* BaseOfSlow(Impl& E, Device& d, int64_t start, bool create) {
  auto& v = d.win[kBaseRes];
  size_t pos;
  if (!v.empty() && v.back()->start == start) {
    return d.last_base = v.back();
  }
  if (v.empty() || v.back()->start < start) {
    pos = v.size();
  } else {
    pos = LowerBound(v, start);
    if (pos < v.size() && v[pos]->start == start) return d.last_base = v[pos];
  }
  if (!create) return nullptr;
  Window* w = E.NewWindow();
  w->res = kBaseRes;
  w->start = start;
  w->end = start + E.opt.window_ns;
  w->acc.resize(d.metrics.size());
  w->hour = HourOf(E, d, start);
  w->day = DayOf(E, d, start);
  InsertWindow(d, kBaseRes, pos, w);
  return d.last_base = w;
}

// The base window starting at `start` (created when asked); the device's last one is
// cached, which is the answer for nearly every call.
inline Window* BaseOf(Impl& E, Device& d, int64_t start, bool create) {
  Window* w = d.last_base;
  if (w != nullptr && w->start == start) [[likely]]
    return w;
  return BaseOfSlow(E, d, start, create);
}

// floor(t / window) * window, answered from the cached last base window when t is in it.
inline int64_t BaseStartOf(const Impl& E, const Device& d, int64_t t) {
  const Window* w = d.last_base;
  if (w != nullptr && t >= w->start && t < w->end) [[likely]]
    return w->start;
  return FloorTo(t, E.opt.window_ns);
}

// ---- folding into the real (sealed) aggregates ---------------------------------------

// Sealed contributions go to base windows only; rollups receive base windows as they
// become final (and their later changes as differences).
inline void AddSampleAll(Device& d, Window* w, uint32_t m, int64_t t, double v) {
  Touch(d, w);
  AccOf(w, m).AddSample(t, v);
}

// (x, y) = (energy, covered) for power metrics, (delta, resets) for counters.
inline void AddPieceAll(Device& d, Window* w, uint32_t m, double x, int64_t y) {
  Touch(d, w);
  Acc& a = AccOf(w, m);
  a.x += x;
  a.y += y;
  a.present = true;
}

// REQUIRES: Touch(d, w) was called and w->acc has an accumulator for m (FoldInOrder).
void FoldSample(Impl& E, Device& d, Window* w, uint32_t m, int64_t t, double v) {
  w->acc.data()[m].AddSample(t, v);
  MetricState& ms = d.metrics[m];
  if (ms.kind == MetricKind::kGauge || ms.hist.empty()) {
    ms.hist.push_back({t, v});
    if (ms.kind == MetricKind::kCounter) ms.PushBaseline(v);
    return;
  }
  const int64_t width = E.opt.window_ns;
  const Sample p = ms.hist.back();
  if (ms.kind == MetricKind::kPower) {
    if (t > p.t && t - p.t <= E.opt.max_gap_ns) {
      SpreadPower(width, p.t, p.v, t, v, w->start, [&](int64_t s, double e, int64_t cov) {
        AddPieceAll(d, BaseOf(E, d, s, true), m, e, cov);
      });
    }
    ms.hist.push_back({t, v});
  } else {
    CounterStep st = StepCounter(ms.BaselineBack(), v);
    SpreadCounter(width, E.opt.max_gap_ns, p.t, t, w->start, st.inc, [&](int64_t s, double share) {
      AddPieceAll(d, BaseOf(E, d, s, true), m, share, 0);
    });
    if (st.reset) AddPieceAll(d, w, m, 0, 1);
    ms.hist.push_back({t, v});
    ms.PushBaseline(st.baseline);
  }
}

// ---- sample histories -------------------------------------------------------------

// The first index whose sample is at or after t (histories are sorted by time).
size_t FirstAtOrAfter(const ChunkedLog<Sample>& h, int64_t t) {
  return h.partition_point([t](const Sample& s) { return s.t < t; });
}

// Where sample (t, v) goes: after every sample that is not SampleBefore-later than it.
size_t InsertPosition(const ChunkedLog<Sample>& h, int64_t t, double v) {
  return h.partition_point([t, v](const Sample& s) { return !SampleBefore(t, v, s); });
}

// ---- late events ---------------------------------------------------------------------

// Recomputes the interval-derived fields (energy, coverage, delta, resets) of metric m
// in the base windows [floor(lo), floor(hi)] from the sample history.
void RecomputeRange(Impl& E, Device& d, uint32_t m, int64_t lo, int64_t hi) {
  const int64_t width = E.opt.window_ns;
  const int64_t s0 = FloorTo(lo, width), s1 = FloorTo(hi, width);
  const size_t n = static_cast<size_t>((s1 - s0) / width) + 1;
  struct Fields {  // Acc::x and Acc::y
    double x = 0;
    int64_t y = 0;
    bool touched = false;
  };
  Fields local[4];
  std::vector<Fields> heap;
  Fields* nf = local;
  if (n > 4) {
    heap.resize(n);
    nf = heap.data();
  }
  auto at = [&](int64_t s) -> Fields* {
    if (s < s0 || s > s1) return nullptr;
    return &nf[static_cast<size_t>((s - s0) / width)];
  };
  MetricState& ms = d.metrics[m];
  const auto& h = ms.hist;
  // From the last sample before s0: an interval ending exactly at s0 (a zero-length one
  // between two samples at s0, or a gap bridged into s0's window) belongs to s0's window,
  // so the pair that ends there must be walked too (found by a black-box test: a counter's
  // increment between two readings at a minute's start, or bridged to a reading there, was
  // lost when a late sample made the window recompute).
  size_t k0 = 0;
  {
    const size_t at_or_after = FirstAtOrAfter(h, s0);
    if (at_or_after > 0) k0 = at_or_after - 1;
  }
  const int64_t max_gap = E.opt.max_gap_ns;
  const bool power = ms.kind == MetricKind::kPower;
  // Walks the history a chunk span at a time: p = sample k - 1, c = sample k (the
  // increment makes the sample just read the next one's predecessor).
  Sample p = k0 < h.size() ? h[k0] : Sample{};
  size_t span_n = 0;
  const Sample* span = nullptr;
  for (size_t k = k0 + 1; k < h.size(); ++k, p = span[-1]) {
    if (span_n == 0) span = h.span(k, &span_n);
    const Sample c = *span++;
    --span_n;
    if (p.t >= s1 + width) break;
    if (p.t >= s0 && c.t < s0 + width) {
      // Inside the first window (most intervals): its one piece, computed exactly as
      // SpreadPower / SpreadCounter compute it (a counter's share is then inc * 1.0).
      Fields& f = nf[0];
      if (power) {
        if (c.t > p.t && c.t - p.t <= max_gap) {
          f.x += (p.v + c.v) * 0.5 * (static_cast<double>(c.t - p.t) / 3.6e12);
          f.y += c.t - p.t;
          f.touched = true;
        }
      } else {
        const CounterStep st = StepCounter(ms.BaselineAt(k - 1), c.v);
        f.x += st.inc;
        if (st.reset) f.y += 1;
        f.touched = true;
      }
      continue;
    }
    if (power) {
      if (c.t > p.t && c.t - p.t <= E.opt.max_gap_ns) {
        SpreadPower(width, p.t, p.v, c.t, c.v, FloorTo(c.t, width),
                    [&](int64_t s, double e, int64_t cov) {
                      if (Fields* f = at(s)) {
                        f->x += e;
                        f->y += cov;
                        f->touched = true;
                      }
                    });
      }
    } else {
      CounterStep st = StepCounter(ms.BaselineAt(k - 1), c.v);
      SpreadCounter(width, E.opt.max_gap_ns, p.t, c.t, FloorTo(c.t, width), st.inc,
                    [&](int64_t s, double share) {
                      if (Fields* f = at(s)) {
                        f->x += share;
                        f->touched = true;
                      }
                    });
      if (st.reset) {
        if (Fields* f = at(FloorTo(c.t, width))) {
          f->y += 1;
          f->touched = true;
        }
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const Fields& f = nf[i];
    Window* w = BaseOf(E, d, s0 + static_cast<int64_t>(i) * width, f.touched);
    if (w == nullptr) continue;
    const Acc& a = AccOf(w, m);
    bool newly = f.touched && !a.present;
    if (f.x == a.x && f.y == a.y && !newly) continue;
    Touch(d, w);
    Acc& b = w->acc[m];
    b.x = f.x;
    b.y = f.y;
    b.present = b.present || f.touched;
  }
}

// Recomputes the sample statistics (count, min, max, sum, first, last) of metric m in base
// window w from the history, in its order. REQUIRES: w->start >= d.complete_from.
void RebuildSampleStats(Device& d, Window* w, uint32_t m) {
  const auto& h = d.metrics[m].hist;
  Acc& a = AccOf(w, m);
  Acc fresh;
  for (size_t k = FirstAtOrAfter(h, w->start); k < h.size() && h[k].t < w->end; ++k) {
    fresh.AddSample(h[k].t, h[k].v);
  }
  // Keep what is not a sample statistic: the interval pair and its staleness.
  fresh.x = a.x;
  fresh.y = a.y;
  fresh.iv_stale = a.iv_stale;
  fresh.present = fresh.present || a.present;
  a = fresh;
}

// The sum of metric m's samples in base window w, folded in history (time) order.
// REQUIRES: w->start >= d.complete_from.
double WindowSum(const Device& d, const Window* w, uint32_t m) {
  const auto& h = d.metrics[m].hist;
  double sum = 0;
  for (size_t k = FirstAtOrAfter(h, w->start); k < h.size();) {
    size_t n;
    const Sample* s = h.span(k, &n);
    for (size_t j = 0; j < n; ++j) {
      if (s[j].t >= w->end) return sum;
      sum += s[j].v;
    }
    k += n;
  }
  return sum;
}

// After sample `pos` of metric m's history was inserted into base window w (w->start >=
// d.complete_from): its sample statistics as if the window's samples had been folded in
// time order. With distinct times only the sum depends on the order: it is added when the
// sample is the window's last, else recomputed — at once in a final window, before the
// next read in an open one (sum_stale, so a burst of disorder costs one pass).
void InsertSampleStats(Device& d, Window* w, uint32_t m, size_t pos) {
  const auto& h = d.metrics[m].hist;
  const Sample s = h[pos];
  if ((pos > 0 && h[pos - 1].t == s.t) || (pos + 1 < h.size() && h[pos + 1].t == s.t)) {
    RebuildSampleStats(d, w, m);  // equal times: first/last depend on the order too
    return;
  }
  Acc& a = AccOf(w, m);
  a.AddSample(s.t, s.v);
  if (pos + 1 == h.size() || h[pos + 1].t >= w->end) return;
  if (!w->final) {
    a.sum_stale = true;
    w->stale = true;
    return;
  }
  a.sum = WindowSum(d, w, m);
}

// Applies an event earlier than the device's latest one: late (at or below the watermark,
// within allowed lateness) or out of order within the bound. Its samples go into the
// histories in time order and the windows they change are recomputed: the sample statistics
// of its window (in time order, when the histories hold all of the window's samples; else
// the sample is added), and the interval-derived fields of the windows around it.
void ApplyUnordered(Impl& E, Device& d, const model::Event& ev, const uint32_t* ids) {
  const int64_t t = ev.timestamp_ns;
  Window* w = BaseOf(E, d, FloorTo(t, E.opt.window_ns), true);
  Touch(d, w);
  ++w->count;
  const bool complete = w->start >= d.complete_from;
  for (size_t i = 0; i < ev.metrics.size(); ++i) {
    const uint32_t m = ids[i];
    const double v = ev.metrics[i].value;
    MetricState& ms = d.metrics[m];
    auto& h = ms.hist;
    const bool keep = ms.kind != MetricKind::kGauge || t >= d.complete_from;
    size_t pos = 0;
    if (keep) {
      pos = InsertPosition(h, t, v);
      if (ms.kind == MetricKind::kCounter) ms.StoreBaselines();
      h.insert(pos, Sample{t, v});
    }
    if (complete) {  // (then keep is true: t >= w->start >= d.complete_from)
      InsertSampleStats(d, w, m, pos);
    } else {
      AddSampleAll(d, w, m, t, v);
    }
    if (ms.kind == MetricKind::kGauge) continue;
    int64_t lo = pos > 0 ? std::max(h[pos - 1].t, t - E.opt.max_gap_ns) : t;
    int64_t hi = pos + 1 < h.size() ? h[pos + 1].t : t;
    if (ms.kind == MetricKind::kCounter) {
      auto& b = ms.baseline;
      b.insert(pos, v);
      for (size_t j = pos; j < h.size(); ++j) {
        double nb = j == 0 ? h[0].v : StepCounter(b[j - 1], h[j].v).baseline;
        if (j > pos && nb == b[j]) break;
        b[j] = nb;
        hi = std::max(hi, h[std::min(j + 1, h.size() - 1)].t);
      }
    }
    // Within one open window (the usual disorder): its interval fields are recomputed
    // before the next read, once for any number of such events.
    const int64_t width = E.opt.window_ns;
    if (complete && !w->final && FloorTo(lo, width) == w->start && FloorTo(hi, width) == w->start) {
      AccOf(w, m).iv_stale = true;
      w->stale = true;
      continue;
    }
    RecomputeRange(E, d, m, lo, hi);
  }
}

// ---- emission ------------------------------------------------------------------------

void EmitRecord(Impl& E, const Device& d, const Window& w, uint64_t count, const Acc* acc,
                size_t n_acc, bool final, RecordSink* sink) {
  model::AggregateRecord& r = E.rec;
  // The scratch record usually holds this device's id and metric names from the previous
  // emission: compare (no library call) before copying.
  if (!SameName(r.device_id, d.id)) r.device_id.assign(d.id);
  r.resolution = static_cast<model::Resolution>(w.res);
  r.window_start_ns = w.start;
  r.window_end_ns = w.end;
  r.final = final;
  r.version = w.version;
  r.count = count;
  size_t k = 0;
  // The scratch record's metric count, kept here (size() divides by the element size).
  size_t held = E.rec_names.size();  // == r.metrics.size()
  const MetricState* metrics = d.metrics.data();
  for (uint32_t id : d.by_name) {
    if (id >= n_acc || !acc[id].present) continue;
    if (k >= held) {
      r.metrics.emplace_back();
      E.rec_names.push_back(Impl::kNoName);
      ++held;
    }
    const Acc& a = acc[id];
    const MetricState& ms = metrics[id];
    model::MetricAggregate& ma = r.metrics.data()[k];
    if (E.rec_names[k] != ms.name) {
      ma.name.assign(E.NameOf(ms));
      E.rec_names[k] = ms.name;
    }
    ++k;
    ma.kind = ms.kind;
    ma.count = a.count;
    ma.min = a.min;
    ma.max = a.max;
    ma.sum = a.sum;
    ma.first = a.first;
    ma.last = a.last;
    const bool power = ms.kind == MetricKind::kPower;
    const bool counter = ms.kind == MetricKind::kCounter;
    ma.energy_wh = power ? a.x : 0;
    ma.covered_ns = power ? a.y : 0;
    ma.delta = counter ? a.x : 0;
    ma.resets = counter ? static_cast<uint64_t>(a.y) : 0;
  }
  if (k < held) {
    r.metrics.resize(k);
    E.rec_names.resize(k);
  }
  if (w.res == kDayRes) {
    if (!SameName(r.timezone, w.timezone())) r.timezone.assign(w.timezone());
    if (!SameName(r.local_date, w.local_date())) r.local_date.assign(w.local_date());
  } else {
    r.timezone.clear();
    r.local_date.clear();
  }
  ++E.emitted;
  if (sink != nullptr) sink->Emit(r);
}

void EmitDirty(Impl& E, Device& d, RecordSink* sink) {
  if (d.dirty.empty()) return;
  // Changed final base windows pass their difference up (appending rollups to the list).
  for (size_t i = 0; i < d.dirty.size(); ++i) {
    Window* w = d.dirty[i];
    if (w->res != kBaseRes) continue;
    ApplyBaseChange(d, w, w->hour);
    ApplyBaseChange(d, w, w->day);
    std::vector<Acc>().swap(w->snapshot);
    w->snapshot_count = 0;
  }
  std::sort(d.dirty.begin(), d.dirty.end(), [](const Window* a, const Window* b) {
    return a->res != b->res ? a->res < b->res : a->start < b->start;
  });
  for (Window* w : d.dirty) {
    w->dirty_final = false;
    ++w->version;
    EmitRecord(E, d, *w, w->count, w->acc.data(), w->acc.size(), true, sink);
  }
  d.dirty.clear();
}

// Earliest time up to which interpolated intervals are settled: a window ending later
// could still receive a share of an interval to a future sample.
int64_t Frontier(const Impl& E, const Device& d) {
  int64_t f = kMaxTime;
  for (const MetricState& ms : d.metrics) {
    if (ms.kind == MetricKind::kGauge) continue;
    // The last sample at or below the watermark: a later event can only split the
    // interval after it (the samples after it are above the watermark too).
    size_t k = ms.hist.size();
    while (k > 0 && ms.hist[k - 1].t > d.wm) --k;
    if (k == 0) continue;
    int64_t lt = ms.hist[k - 1].t;
    if (d.wm >= lt + E.opt.max_gap_ns) continue;
    f = std::min(f, lt);
  }
  return f;
}

void Finalize(Impl& E, Device& d, RecordSink* sink) {
  if (d.dirty.empty() && d.min_open_end > std::max(d.wm, d.fin_wm)) return;  // fast path
  bool have_frontier = false;
  int64_t frontier = 0;
  auto can = [&](int64_t end) {
    if (end <= d.fin_wm) return true;
    if (end > d.wm) return false;
    if (!have_frontier) {
      frontier = Frontier(E, d);
      have_frontier = true;
    }
    return end <= frontier;
  };
  for (int res = 0; res < kNumRes; ++res) {
    auto& v = d.win[res];
    size_t i = d.first_open[res];
    for (; i < v.size(); ++i) {
      Window* w = v[i];
      if (w->final) continue;
      if (!can(w->end)) break;
      E.CleanWindow(d, w);
      w->final = true;
      w->has_early = false;
      w->early_fp = 0;
      ++w->version;
      EmitRecord(E, d, *w, w->count, w->acc.data(), w->acc.size(), true, sink);
      if (res == kBaseRes) {  // roll up
        Window* rs[2] = {w->hour, w->day};
        for (Window* r : rs) {
          Touch(d, r);
          r->count += w->count;
          if (r->acc.size() < w->acc.size()) r->acc.resize(w->acc.size());
          for (size_t m = 0; m < w->acc.size(); ++m) MergeAcc(r->acc[m], w->acc[m]);
        }
      }
    }
    size_t j = d.first_open[res];
    while (j < v.size() && v[j]->final) ++j;
    d.first_open[res] = j;
  }
  // Windows are sorted by end within a resolution, so the first open one bounds the rest.
  d.min_open_end = kMaxTime;
  for (int res = 0; res < kNumRes; ++res) {
    if (d.first_open[res] < d.win[res].size()) {
      d.min_open_end = std::min(d.min_open_end, d.win[res][d.first_open[res]]->end);
    }
  }
  EmitDirty(E, d, sink);
}

// Before an event later than the device's latest: if an idle finalization ran ahead of the
// device's own time (fin_wm past the end of its latest event's base window), the device
// resumes. What was finalized stays final (and is re-emitted with version+1 if the new
// events change it, as a late update would); windows after it finalize by the device's
// own watermark again, so a backlog uploaded in order after an outage gets one final
// record per window, as live, instead of a final record re-emitted on every event.
// What the idle finalization evicted stays evicted (Device::evicted_to).
void Resume(Impl& E, Device& d) {
  // REQUIRES: d.fin_wm > d.max_t (an idle finalization ran).
  const int64_t last_base_end = FloorTo(d.max_t, E.opt.window_ns) + E.opt.window_ns;
  d.fin_wm = std::min(d.fin_wm, last_base_end);
}

bool HasOpen(const Device& d) {
  for (int res = 0; res < kNumRes; ++res) {
    if (d.first_open[res] < d.win[res].size()) return true;
  }
  return false;
}

// Idle finalization of a device silent for idle_timeout of processing time: by Tick, and by
// ProcessOn before the eviction pass that a silence of allowed_lateness asks for.
void IdleFinalize(Impl& E, Device& d, int64_t now, RecordSink* sink) {
  // REQUIRES: d.has_events, no pending rows, now − d.last_seen ≥ idle_timeout.
  const int64_t silent = now - d.last_seen;
  d.shape_n = 0;
  // CONTRACT §2: a silent device's open windows are final within idle_timeout. Every
  // base window up to the one holding the last event is closed now (even when
  // idle_timeout is shorter than the window); rollups close as device time would
  // have reached their end (last event time + silence).
  const int64_t last_base_end = FloorTo(d.max_t, E.opt.window_ns) + E.opt.window_ns;
  // Windows that have ended in processing time close too (a backlog's 1h and 1d
  // windows, days old, stayed open for up to an hour or a day of silence before).
  d.fin_wm = std::max({d.fin_wm, d.max_t + silent, last_base_end, now});
  // (The device's own watermark stays: allowed_lateness is measured from it, CONTRACT
  // §2. Raising it to max_t here made every event in the out_of_orderness band just
  // before the lateness bound too late after idle_timeout of silence; found by a
  // black-box test. fin_wm alone closes the windows.)
  if (HasOpen(d)) Finalize(E, d, sink);
  // Nothing open: no early firing until the device sends again (its deadline would
  // stay in the past, and Tick would treat the device as due for one on every visit,
  // reading its metric table and windows: +30 % processor CPU in the whole server
  // once idle finalization closed the 1h/1d windows too).
  if (!HasOpen(d)) d.next_early = kMaxTime;
}

// For a silent device just idle-finalized by Tick (fin_wm ≥ max_t + silence, ≥ the
// processing time): the earliest processing time at which a later idle finalization,
// fin_wm = max(fin_wm, max_t + (now − last_seen), now), reaches the end of an open
// window (min_open_end, a lower bound of those ends): now = end, or the silence reaching
// end − max_t. kMaxTime when nothing is open; at once when the bound is already reached.
int64_t IdleCloseTime(const Device& d) {
  if (!HasOpen(d)) return kMaxTime;
  const int64_t end = d.min_open_end;
  if (end <= d.fin_wm) return kMinTime;
  const __int128 by_silence = static_cast<__int128>(end) - d.max_t + d.last_seen;
  if (by_silence < end) return static_cast<int64_t>(std::max<__int128>(by_silence, kMinTime));
  return end;
}

// Emits an open window's partial result when it differs from its last early emission.
void EmitEarly(Impl& E, const Device& d, Window* w, uint64_t count, const Acc* acc, size_t n,
               RecordSink* sink) {
  const uint64_t fp = EarlyFingerprint(count, acc, n);
  if (w->has_early && w->early_fp == fp) return;
  bool any = count > 0;
  for (size_t m = 0; m < n && !any; ++m) any = acc[m].present;
  if (!any) return;
  ++w->version;
  EmitRecord(E, d, *w, count, acc, n, false, sink);
  w->has_early = true;
  w->early_fp = fp;
}

// Early firing: the partial result of every open window, emitted when it differs from the
// last emission. Open base windows hold every event folded so far; an open rollup's partial
// result is its merged final base windows plus the open base windows under it.
void EarlyFire(Impl& E, Device& d, int64_t now, int64_t tick_period, RecordSink* sink) {
  d.next_early = now + std::max<int64_t>(E.opt.early_fire_interval_ns - tick_period, 0);
  E.view_n = 0;
  const size_t n_metrics = d.metrics.size();
  for (int res = kHourRes; res < kNumRes; ++res) {
    auto& v = d.win[res];
    for (size_t i = d.first_open[res]; i < v.size(); ++i) {
      Window* w = v[i];
      if (w->final) continue;
      // Open rollups span out_of_orderness (10 s by default): more than 32,767 of one
      // device would take an out_of_orderness of years; past that their early records
      // are skipped (their final records are not).
      if (E.view_n >= static_cast<size_t>(std::numeric_limits<int16_t>::max())) break;
      if (E.view_n >= E.view.size()) E.view.emplace_back();
      Impl::ViewSlot& slot = E.view[E.view_n];
      slot.w = w;
      slot.count = w->count;
      const size_t wn = w->acc.size();  // <= n_metrics
      slot.n = wn;
      // The view is the window's accumulators, padded to the device's metric count.
      if (slot.acc.size() != n_metrics) slot.acc.resize(n_metrics);
      Acc* dst = slot.acc.data();
      std::copy_n(w->acc.data(), wn, dst);
      std::fill(dst + wn, dst + n_metrics, Acc{});
      w->view_slot = static_cast<int16_t>(E.view_n++);
    }
  }
  auto& bases = d.win[kBaseRes];
  for (size_t i = d.first_open[kBaseRes]; i < bases.size(); ++i) {
    Window* b = bases[i];
    if (b->final) continue;
    E.CleanWindow(d, b);
    const size_t n = b->acc.size();
    Window* rs[2] = {b->hour, b->day};
    for (Window* r : rs) {
      if (r->view_slot < 0) continue;
      Impl::ViewSlot& slot = E.view[static_cast<size_t>(r->view_slot)];
      slot.count += b->count;
      if (slot.n < n) slot.n = n;
      for (size_t m = 0; m < n; ++m) MergeAcc(slot.acc[m], b->acc[m]);
    }
  }
  for (size_t i = d.first_open[kBaseRes]; i < bases.size(); ++i) {
    Window* b = bases[i];
    if (!b->final) EmitEarly(E, d, b, b->count, b->acc.data(), b->acc.size(), sink);
  }
  for (size_t i = 0; i < E.view_n; ++i) {
    Impl::ViewSlot& slot = E.view[i];
    slot.w->view_slot = -1;
    EmitEarly(E, d, slot.w, slot.count, slot.acc.data(), slot.n, sink);
  }
}

void Evict(Impl& E, Device& d, int64_t now) {
  if (!d.has_events) return;
  // The device's own watermark (CONTRACT §2: allowed_lateness is behind it), not the idle
  // watermark, which runs on with processing time while the device is silent: eviction by
  // it made late events within allowed_lateness too late after a minute of silence (found
  // by a black-box test). Once the silence itself is longer than allowed_lateness, the
  // idle watermark again: a device that stopped for good does not keep an hour of state
  // for ever (a straggler arriving that late is late in processing time too).
  const bool long_silent = now - d.last_seen >= E.opt.allowed_lateness_ns;
  const int64_t ref = long_silent ? std::max(d.wm, d.fin_wm) : d.wm;
  // Never past the base window max_gap before the latest event: a silent device keeps the
  // windows, 1h/1d rollups and samples that its next in-order event (never too late) can
  // extend or bridge into — an interval reaches at most max_gap back.
  const int64_t horizon = std::min(ref - E.opt.allowed_lateness_ns - E.opt.max_gap_ns,
                                   FloorTo(d.max_t - E.opt.max_gap_ns, E.opt.window_ns));
  d.evicted_to = std::max(d.evicted_to, horizon);
  for (int res = 0; res < kNumRes; ++res) {
    auto& v = d.win[res];
    size_t k = 0;
    while (k < v.size() && v[k]->final && !v[k]->dirty_final && v[k]->end <= horizon) ++k;
    if (k == 0) continue;
    for (size_t i = 0; i < k; ++i) {
      if (v[i] == d.last_base) d.last_base = nullptr;
      E.FreeWindow(v[i]);
    }
    v.erase(v.begin(), v.begin() + static_cast<ptrdiff_t>(k));
    d.first_open[res] = d.first_open[res] >= k ? d.first_open[res] - k : 0;
  }
  const int64_t dedup_before = E.DedupBefore(d);
  {
    size_t expired = 0;
    while (expired < d.seen_ts.size() && d.seen_ts[expired] < dedup_before) ++expired;
    if (expired > 0) d.seen_ts.erase_front(expired);
  }
  const int64_t hs = FloorTo(horizon, E.opt.window_ns);
  // Gauges keep the samples of the windows an event above the watermark can land in.
  const int64_t gs = FloorTo(d.wm, E.opt.window_ns);
  const int64_t complete_from = std::max(d.complete_from, std::max(hs, gs));
  // Recompute what is stale before the samples it needs may go.
  for (size_t i = d.first_open[kBaseRes]; i < d.win[kBaseRes].size(); ++i) {
    Window* w = d.win[kBaseRes][i];
    if (w->start < complete_from) E.CleanWindow(d, w);
  }
  d.complete_from = complete_from;
  for (MetricState& ms : d.metrics) {
    auto& h = ms.hist;
    const bool gauge = ms.kind == MetricKind::kGauge;
    const int64_t keep_from = gauge ? gs : hs;
    // Whole chunks only, those before a sample that is itself before the horizon: that
    // sample stays (power and counters need the last sample before the horizon, for the
    // interval to it; a gauge keeps it needlessly), and the pass reads one sample per
    // chunk instead of every expired one (the scan from the front was ~40 % of Tick's
    // time in stream_bench, each pass a cold line per 4 samples). A history holds up to
    // one chunk (64 samples) more than the horizon.
    const size_t drop = h.WholeChunksBefore([&](const Sample& x) { return x.t < keep_from; });
    if (drop == 0) continue;
    // Dropping from the front moves nothing: whole expired chunks are freed.
    h.erase_front(drop);
    if (!ms.baseline.empty()) ms.baseline.erase_front(drop);
  }
}

}  // namespace

namespace {
// Polynomial hashing modulo 2^64 with an odd multiplier: a change in any single word always
// changes the fingerprint (the difference times an odd power is never 0 mod 2^64).
constexpr uint64_t kFpMul = 0x9E3779B97F4A7C15ULL;
inline uint64_t FpBits(double v) {
  v += 0.0;  // -0.0 → +0.0, as operator== compares them
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}
}  // namespace

uint64_t EarlyFingerprint(uint64_t count, const Acc* acc, size_t n) {
  // Samples are only ever added to a window, never replaced or removed, so min, max, sum,
  // first and last change only together with the accumulator's sample count; what
  // changes without it is the interval pair (a neighbouring sample's share of energy or
  // increments). The count, the pair and `present` therefore decide equality of the
  // content (an early firing reads windows after CleanWindow, so a stale sum never
  // differs from a clean one between firings).
  uint64_t h = (count * kFpMul + n) * kFpMul;
  for (size_t i = 0; i < n; ++i) {
    const Acc& a = acc[i];
    const uint64_t x = a.count * kFpMul + FpBits(a.x);
    const uint64_t y = static_cast<uint64_t>(a.y) << 1 | (a.present ? 1 : 0);
    h = (h * kFpMul + x) * kFpMul + y;
  }
  return h ^ (h >> 29);
}

// ---- Impl ----------------------------------------------------------------------------

WindowEngine::Impl::Impl(EngineOptions o, TimezoneProvider* tz) : opt(std::move(o)), tzp(tz) {}

WindowEngine::Impl::~Impl() { ResetState(); }

void WindowEngine::Impl::ResetState() {
  for (auto& d : devices) {
    for (auto& v : d->win) {
      for (Window* w : v) delete w;
    }
  }
  devices.clear();
  tick_due.clear();
  index.clear();
  last_device = nullptr;
  metric_names.clear();
  name_keys.clear();
  metric_name_ids.clear();
  metric_kinds.clear();
  rec.metrics.clear();
  rec_names.clear();
  for (Window* w : free_windows) delete w;
  free_windows.clear();
  events = duplicates = late_updates = late_dropped = emitted = out_of_order = 0;
  last_tick = kMinTime;
  version_epoch = 0;
}

Window* WindowEngine::Impl::NewWindow() {
  Window* w;
  if (free_windows.empty()) {
    w = new Window();
  } else {
    w = free_windows.back();
    free_windows.pop_back();
  }
  w->version = VersionFloor();
  return w;
}

void WindowEngine::Impl::FreeWindow(Window* w) {
  // Keep enough for every device's next windows (at steady state each device frees about
  // as many as it creates), so that the pool, not malloc, serves them; a free window keeps
  // its accumulator storage for the next one.
  if (free_windows.size() >= std::max<size_t>(4096, 4 * devices.size())) {
    delete w;
    return;
  }
  w->acc.clear();
  w->snapshot.clear();
  w->has_early = false;
  w->early_fp = 0;
  w->final = w->dirty_final = w->stale = false;
  w->version = w->count = 0;
  w->hour = w->day = nullptr;
  w->day_label.reset();
  w->view_slot = -1;
  free_windows.push_back(w);
}

Device* WindowEngine::Impl::FindDevice(std::string_view id, uint64_t hash) const {
  if (index.empty()) return nullptr;
  const size_t mask = index.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = index[i];
    if (s.index == 0) return nullptr;
    if (s.hash == hash && devices[s.index - 1]->id == id) [[likely]]
      return devices[s.index - 1].get();
  }
}

void WindowEngine::Impl::IndexDevice(uint64_t hash, uint32_t i) {
  if ((devices.size() + 1) * 2 > index.size()) {
    std::vector<Slot> old(std::max<size_t>(64, index.size() * 2));
    old.swap(index);
    for (const Slot& s : old) {
      if (s.index != 0) IndexDevice(s.hash, s.index - 1);
    }
  }
  const size_t mask = index.size() - 1;
  for (size_t k = hash & mask;; k = (k + 1) & mask) {
    if (index[k].index == 0) {
      index[k] = Slot{hash, i + 1};
      return;
    }
  }
}

Device* WindowEngine::Impl::GetDevice(std::string_view id) {
  if (last_device != nullptr && SameName(last_device->id, id)) return last_device;
  const uint64_t hash = HashDeviceId(id);
  if (Device* found = FindDevice(id, hash)) return last_device = found;
  std::optional<std::string> timezone;
  if (tzp != nullptr) {
    timezone = tzp->TimezoneOf(id);
    if (!timezone) return nullptr;  // not guessed: the caller processes this event later
  }
  auto d = std::make_unique<Device>();  // (in UTC by default)
  d->id.assign(id);
  if (timezone && !timezone->empty()) d->timezone = std::move(*timezone);
  d->zone = zones.Find(d->timezone);
  devices.push_back(std::move(d));
  IndexDevice(hash, static_cast<uint32_t>(devices.size() - 1));
  return last_device = devices.back().get();
}

void WindowEngine::Impl::FoldInOrder(Device& d, int64_t t, size_t n, const uint32_t* ids,
                                     const double* values) {
  Impl& E = *this;
  Window* w = BaseOf(E, d, BaseStartOf(E, d, t), true);
  Touch(d, w);
  ++w->count;
  // Every accumulator the event needs, at once (FoldSample then skips AccOf and Touch).
  uint32_t top = 0;
  for (size_t i = 0; i < n; ++i) top = std::max(top, ids[i]);
  if (n > 0) AccOf(w, top);
  for (size_t i = 0; i < n; ++i) FoldSample(E, d, w, ids[i], t, values[i]);
  d.has_events = true;
  if (t > d.max_t) {  // always, except for a format-3 checkpoint's pending events
    d.max_t = t;
    d.wm = std::max(d.wm, t - E.opt.out_of_orderness_ns);
  }
}

void WindowEngine::Impl::CleanWindow(Device& d, Window* w) {
  if (!w->stale) return;
  w->stale = false;
  for (uint32_t m = 0; m < w->acc.size(); ++m) {
    Acc& a = w->acc[m];
    if (a.sum_stale) {
      a.sum_stale = false;
      a.sum = WindowSum(d, w, m);
    }
    if (a.iv_stale) {
      a.iv_stale = false;
      RecomputeRange(*this, d, m, w->start, w->start);
    }
  }
}

uint32_t WindowEngine::Impl::InternMetricName(std::string_view name) {
  // An engine usually knows a handful of metric names: scanning them is cheaper than the
  // map, which serves larger name sets.
  if (metric_names.size() <= 16) {
    for (size_t k = 0; k < metric_names.size(); ++k) {
      if (SameName(metric_names[k], name)) return static_cast<uint32_t>(k);
    }
  } else {
    auto it = metric_name_ids.find(name);
    if (it != metric_name_ids.end()) return it->second;
  }
  const auto id = static_cast<uint32_t>(metric_names.size());
  metric_names.emplace_back(name);
  name_keys.push_back(NameKey::Of(name));
  metric_name_ids.emplace(std::string(name), id);
  auto it = opt.kinds.find(name);
  metric_kinds.push_back(it != opt.kinds.end() ? it->second : model::DefaultMetricKind(name));
  return id;
}

uint32_t WindowEngine::Impl::MetricId(Device& d, size_t guess, std::string_view name) {
  if (guess < d.metrics.size() && SameName(NameOf(d.metrics[guess]), name)) [[likely]]
    return static_cast<uint32_t>(guess);
  for (uint32_t k = 0; k < d.metrics.size(); ++k) {
    if (SameName(NameOf(d.metrics[k]), name)) return k;
  }
  const auto id = static_cast<uint32_t>(d.metrics.size());
  MetricState ms;
  ms.name = InternMetricName(name);
  ms.kind = metric_kinds[ms.name];
  d.metrics.push_back(std::move(ms));
  auto pos =
      std::lower_bound(d.by_name.begin(), d.by_name.end(), name,
                       [&](uint32_t a, std::string_view n) { return NameOf(d.metrics[a]) < n; });
  d.by_name.insert(pos, id);
  return id;
}

// ---- WindowEngine --------------------------------------------------------------------

WindowEngine::WindowEngine(EngineOptions options, TimezoneProvider* timezones)
    : impl_(std::make_unique<Impl>(std::move(options), timezones)) {}

WindowEngine::~WindowEngine() = default;

const EngineOptions& WindowEngine::options() const { return impl_->opt; }

void WindowEngine::BeginRecoveryEpoch(uint32_t at_least) {
  Impl& E = *impl_;
  E.version_epoch = std::max(E.version_epoch + 1, at_least);
  const uint64_t floor = E.VersionFloor();
  for (auto& d : E.devices) {
    for (auto& v : d->win) {
      for (Window* w : v) w->version = std::max(w->version, floor);
    }
  }
}

uint32_t WindowEngine::version_epoch() const { return impl_->version_epoch; }

bool WindowEngine::Process(const model::Event& ev, int64_t now_ns, RecordSink* sink) {
  Impl& E = *impl_;
  Device* d = E.GetDevice(ev.device_id);
  if (d == nullptr) return false;
  E.ProcessOn(*d, ev, now_ns, sink);
  return true;
}

WindowEngine::Impl::PendResult WindowEngine::Impl::TryPend(Device& d, const model::Event& ev,
                                                           int64_t now_ns) {
  // REQUIRES: d.shape_n > 0 (so d.has_events, d.last_base holds max_t and is open, every
  // power and counter history ends at max_t, d.fin_wm <= d.max_t, d.dirty is empty).
  const int64_t t = ev.timestamp_ns;
  if (t <= d.max_t || t - d.cur_start >= opt.window_ns || now_ns >= d.next_early ||
      d.pend_n == Device::kPendRows || d.fin_wm > d.max_t) {
    return kNotPended;
  }
  // Folding it would finalize nothing: Finalize's fast path with the new watermark.
  const int64_t wm = std::max(d.wm, t - opt.out_of_orderness_ns);
  if (d.min_open_end <= std::max(wm, d.fin_wm)) return kNotPended;
  const size_t n = ev.metrics.size();
  if (n != d.shape_n) return kNotPended;
  const model::MetricSample* m = ev.metrics.data();
  const std::string* names = metric_names.data();
  const NameKey* keys = name_keys.data();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t id = d.shape[i];
    if (!keys[id].Matches(m[i].name, names[id])) return kNotPended;
  }
  // As ProcessOn: the time of the last event, de-duplication (an event later than every
  // earlier one can only repeat an earlier event's id), the counters.
  if (now_ns > d.last_seen) d.last_seen = now_ns;
  const bool no_id = ev.event_id.empty();
  if (!no_id && !d.dedup.Insert(HashEventId(ev.event_id), t, DedupBefore(d))) {
    FlushPending(d);  // the clock-skew samples in arrival order
    if (ev.received_at_ns != 0) {
      d.skew[d.skew_n % Device::kSkewRing] = ev.received_at_ns - t;
      ++d.skew_n;
      d.last_received = ev.received_at_ns;
    }
    ++d.duplicates;
    ++duplicates;
    return kDuplicate;
  }
  ++d.events;
  ++events;
  PendingRow& row = d.pend[d.pend_n];
  row.t = t;
  row.received_at = ev.received_at_ns;
  for (size_t i = 0; i < n; ++i) row.v[i] = m[i].value;
  d.pend_no_id |= static_cast<uint8_t>((no_id ? 1u : 0u) << d.pend_n);
  ++d.pend_n;
  d.max_t = t;
  d.wm = wm;
  return kPended;
}

void WindowEngine::Impl::FlushPending(Device& d) {
  if (d.pend_n == 0) return;
  static constexpr uint32_t kIds[PendingRow::kMaxValues] = {0, 1, 2, 3, 4, 5};
  // Each row as ProcessOn's in-order path folds an event: its clock-skew sample, its time
  // for de-duplication (later than every stored one), the fold. max_t and wm already hold
  // the last row's (FoldInOrder leaves them).
  for (size_t k = 0; k < d.pend_n; ++k) {
    const PendingRow& row = d.pend[k];
    if (row.received_at != 0) {
      d.skew[d.skew_n % Device::kSkewRing] = row.received_at - row.t;
      ++d.skew_n;
      d.last_received = row.received_at;
    }
    if ((d.pend_no_id >> k) & 1u) d.seen_ts.push_back(row.t);
    FoldInOrder(d, row.t, d.shape_n, kIds, row.v);
  }
  d.pend_n = 0;
  d.pend_no_id = 0;
}

void WindowEngine::Impl::FlushAll() {
  for (auto& d : devices) FlushPending(*d);
}

void WindowEngine::Impl::UpdatePendable(Device& d, const model::Event& ev, const uint32_t* ids) {
  d.shape_n = 0;
  const size_t n = ev.metrics.size();
  const Window* w = d.last_base;
  if (n == 0 || n > PendingRow::kMaxValues || n != d.metrics.size() || w == nullptr || w->final ||
      d.max_t != ev.timestamp_ns || d.max_t < w->start || d.max_t >= w->end || d.fin_wm > d.max_t ||
      !d.dirty.empty()) {
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t name = d.metrics[i].name;
    if (ids[i] != i || name > UINT16_MAX) return;
    d.shape[i] = static_cast<uint16_t>(name);
  }
  d.cur_start = w->start;
  d.shape_n = static_cast<uint8_t>(n);
}

bool WindowEngine::Impl::ProcessOn(Device& d, const model::Event& ev, int64_t now_ns,
                                   RecordSink* sink) {
  Impl& E = *this;
  if (d.shape_n != 0) {
    const PendResult r = TryPend(d, ev, now_ns);
    if (r != kNotPended) return r == kPended;
  }
  FlushPending(d);  // (rows exist only while shape_n > 0; checked anyway: one byte)
  // A parked device's due time may lie past its new silence deadline: due at once again.
  // (Parking clears shape_n, so its first event after parking is never pended above.)
  if (d.parked) [[unlikely]] {
    d.parked = false;
    E.tick_due[d.tick_index] = kMinTime;
  }
  // CONTRACT §2: a silence of allowed_lateness frees the device's state (Evict, long_silent),
  // and an event before its latest is too late from then on. Tick's eviction pass comes once
  // a minute per device, so an event at or before the latest after such a silence runs the
  // pass first (with the idle finalization Tick runs before it): the decision is made at
  // allowed_lateness of silence, not up to a minute later (found by a black-box test).
  if (d.has_events && ev.timestamp_ns <= d.max_t &&
      now_ns - d.last_seen >= E.opt.allowed_lateness_ns) [[unlikely]] {
    if (now_ns - d.last_seen >= E.opt.idle_timeout_ns) IdleFinalize(E, d, now_ns, sink);
    Evict(E, d, now_ns);
    d.next_evict = now_ns + kEvictInterval;
  }
  if (now_ns > d.last_seen) d.last_seen = now_ns;
  if (!d.has_events && d.next_early == 0) d.next_early = now_ns + E.opt.early_fire_interval_ns;
  // Resuming after an idle finalization closed every window: early firings are due again
  // at once (as when the deadline had simply passed).
  if (d.next_early == kMaxTime) d.next_early = now_ns;
  if (ev.received_at_ns != 0) {
    d.skew[d.skew_n % Device::kSkewRing] = ev.received_at_ns - ev.timestamp_ns;
    ++d.skew_n;
    d.last_received = ev.received_at_ns;
  }
  const int64_t t = ev.timestamp_ns;
  // Only an event at or before the device's latest can be too late: a later one is its
  // newest data (a backlog uploaded in order after an outage, however long).
  if (d.has_events && t <= d.max_t && t < E.LateBefore(d)) {
    ++d.late_dropped;
    ++E.late_dropped;
    return true;
  }
  if (!RememberEvent(d, ev, d.has_events ? E.DedupBefore(d) : kMinTime)) {
    ++d.duplicates;
    ++E.duplicates;
    return false;
  }
  ++d.events;
  ++E.events;
  // (The event's metric count once: a vector's size() is a division by the element size.)
  const size_t n_ev = ev.metrics.size();
  const model::MetricSample* ev_metrics = ev.metrics.data();
  SmallBuffer<uint32_t> id_buffer;
  uint32_t* ids = id_buffer.Get(n_ev);
  {
    // (Re-read after MetricId: registering a metric can grow both tables.)
    size_t n_metrics = d.metrics.size();
    const std::string* names = E.metric_names.data();
    const NameKey* keys = E.name_keys.data();
    for (size_t i = 0; i < n_ev; ++i) {
      const std::string_view name = ev_metrics[i].name;
      // The fast path of MetricId, inline: the metric's id is its position in the event.
      if (i < n_metrics && keys[d.metrics[i].name].Matches(name, names[d.metrics[i].name]))
          [[likely]] {
        ids[i] = static_cast<uint32_t>(i);
        continue;
      }
      if (d.metrics.capacity() < n_ev) {  // a new device: its tables at once
        d.metrics.reserve(n_ev);
        d.by_name.reserve(n_ev);
      }
      ids[i] = E.MetricId(d, i, name);
      n_metrics = d.metrics.size();
      names = E.metric_names.data();
      keys = E.name_keys.data();
    }
  }

  const bool in_order = !(d.has_events && t <= d.max_t);
  if (!in_order) {
    ++E.out_of_order;
    // Late: at or below the watermark, or into a base window an idle finalization closed.
    if (t <= d.wm || FloorTo(t, E.opt.window_ns) + E.opt.window_ns <= d.fin_wm) {
      ++d.late_updates;
      ++E.late_updates;
    }
    ApplyUnordered(E, d, ev, ids);
  } else {
    if (d.fin_wm > d.max_t) Resume(E, d);  // (only after an idle finalization)
    SmallBuffer<double> value_buffer;
    double* values = value_buffer.Get(n_ev);
    for (size_t i = 0; i < n_ev; ++i) values[i] = ev_metrics[i].value;
    E.FoldInOrder(d, t, n_ev, ids, values);
  }
  Finalize(E, d, sink);
  if (now_ns >= d.next_early) EarlyFire(E, d, now_ns, 0, sink);
  if (in_order) {
    E.UpdatePendable(d, ev, ids);
  } else {
    d.shape_n = 0;
  }
  return true;
}

namespace {

inline void PrefetchLines(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 1, 3);
}

template <typename T>
inline void PrefetchTail(const std::vector<T>& v) {
  if (!v.empty()) __builtin_prefetch(v.data() + v.size() - 1, 1, 3);
}

template <typename T>
inline void PrefetchAll(const std::vector<T>& v) {
  if (!v.empty()) PrefetchLines(v.data(), v.size() * sizeof(T));
}

// Early firing reads every open window of the device: the
// Window records first (stage 1), then what they point to (stage 2).
inline void PrefetchOpenWindows(const Device& d, bool contents) {
  for (int res = 0; res < kNumRes; ++res) {
    const auto& v = d.win[res];
    for (size_t i = d.first_open[res]; i < v.size(); ++i) {
      const Window* w = v[i];
      if (!contents) {
        PrefetchLines(w, sizeof(Window));
      } else {
        PrefetchAll(w->acc);
      }
    }
  }
}

// The fields Tick reads of every device it visits: lines 0 and 1 of Device.
inline void PrefetchTickFields(const Device* d) { PrefetchLines(d, 128); }

}  // namespace

size_t WindowEngine::ProcessBatch(const model::Event* events, size_t n, int64_t now_ns,
                                  RecordSink* sink, uint8_t* duplicate) {
  Impl& E = *impl_;
  // A software pipeline over the batch: the device-index slot of event i+kSlot, lines 0–1
  // of the device of event i+kDevice (what TryPend reads), then for event i+kDecide either
  // its pending row's line (an event that will likely be pended) or the device's other
  // hot lines, then for i+kState the device's current window, metric table and buffer
  // tails, are requested from memory before event i is processed. A prefetch never
  // changes state, so the results are those of Process.
  // An event that will trigger an early firing (now >= next_early) has the chain to its
  // open windows' accumulators prefetched one level per stage from kFire on: the windows'
  // lists, the Window records, their accumulators.
  constexpr size_t kSlot = 10, kDevice = 6, kDecide = 4, kFire = 3, kState = 2, kRing = 16;
  uint64_t hashes[kRing];
  const Device* devs[kRing];
  bool pend[kRing];  // by kDecide: whether the event will likely be pended
  auto slot_stage = [&](size_t j) {
    const uint64_t h = HashDeviceId(events[j].device_id);
    hashes[j % kRing] = h;
    if (!E.index.empty()) __builtin_prefetch(&E.index[h & (E.index.size() - 1)], 0, 3);
  };
  auto device_stage = [&](size_t j) {
    const Device* d = nullptr;
    if (!E.index.empty()) {
      const uint64_t h = hashes[j % kRing];
      const size_t mask = E.index.size() - 1;
      for (size_t k = h & mask;; k = (k + 1) & mask) {
        const Impl::Slot& s = E.index[k];
        if (s.index == 0) break;
        if (s.hash == h) {
          d = E.devices[s.index - 1].get();
          break;
        }
      }
    }
    devs[j % kRing] = d;
    if (d != nullptr) PrefetchLines(d, 128);  // lines 0–1: clocks, id, TryPend's fields
  };
  // TryPend's cheap tests (a wrong guess only prefetches the wrong lines).
  auto decide_stage = [&](size_t j) {
    const Device* d = devs[j % kRing];
    if (d == nullptr) return;
    const int64_t t = events[j].timestamp_ns;
    const bool p = d->shape_n != 0 && d->pend_n < Device::kPendRows && t > d->max_t &&
                   t - d->cur_start < E.opt.window_ns && now_ns < d->next_early;
    pend[j % kRing] = p;
    if (p) {
      __builtin_prefetch(&d->pend[d->pend_n], 1, 3);
      if (!events[j].event_id.empty()) __builtin_prefetch(&d->dedup, 1, 3);
      return;
    }
    // Lines 2–3 (metric table, current window, de-duplication by timestamp), line 4 for
    // an event with an event_id (its hash set), and the pending rows to fold first.
    const char* base = reinterpret_cast<const char*>(&d->metrics);
    const char* last = events[j].event_id.empty()
                           ? reinterpret_cast<const char*>(&d->dirty)
                           : reinterpret_cast<const char*>(&d->first_open) - 1;
    PrefetchLines(base, static_cast<size_t>(last - base) + 1);
    if (d->pend_n > 0) PrefetchLines(d->pend, d->pend_n * sizeof(PendingRow));
  };
  auto state_stage = [&](size_t j) {
    const Device* d = devs[j % kRing];
    if (d == nullptr || pend[j % kRing]) return;
    // Line 0 of the current window is what an in-order event reads (bounds, count, flags,
    // the accumulators' address); the rest of it only emission and early firings.
    if (d->last_base != nullptr) __builtin_prefetch(d->last_base, 1, 3);
    if (!d->metrics.empty())
      PrefetchLines(d->metrics.data(), d->metrics.size() * sizeof(MetricState));
    if (const int64_t* tail = d->seen_ts.tail()) __builtin_prefetch(tail, 1, 3);
    __builtin_prefetch(&d->skew[d->skew_n % Device::kSkewRing], 1, 3);
    if (now_ns >= d->next_early) PrefetchOpenWindows(*d, false);
  };
  auto fire_stage = [&](size_t j) {
    const Device* d = devs[j % kRing];
    if (d == nullptr || pend[j % kRing] || now_ns < d->next_early) return;
    __builtin_prefetch(d->win[kBaseRes].data() + d->first_open[kBaseRes], 0, 3);
    __builtin_prefetch(d->win[kHourRes].data() + d->first_open[kHourRes], 0, 3);
    __builtin_prefetch(d->win[kDayRes].data() + d->first_open[kDayRes], 0, 3);
    PrefetchAll(d->by_name);
  };
  auto history_stage = [&](size_t j) {  // one event ahead: what the lines above point to
    const Device* d = devs[j % kRing];
    if (d == nullptr || pend[j % kRing]) return;
    if (const Window* w = d->last_base; w != nullptr && !w->acc.empty()) {
      PrefetchLines(w->acc.data(), w->acc.size() * sizeof(Acc));
    }
    for (const MetricState& ms : d->metrics) {
      if (const Sample* tail = ms.hist.tail()) __builtin_prefetch(tail, 1, 3);
      if (const double* tail = ms.baseline.tail()) __builtin_prefetch(tail, 1, 3);
    }
    if (now_ns >= d->next_early) PrefetchOpenWindows(*d, true);
  };
  for (size_t j = 0; j < std::min(n, kSlot); ++j) slot_stage(j);
  for (size_t j = 0; j < std::min(n, kDevice); ++j) device_stage(j);
  for (size_t j = 0; j < std::min(n, kDecide); ++j) decide_stage(j);
  for (size_t j = 0; j < std::min(n, kFire); ++j) fire_stage(j);
  for (size_t j = 0; j < std::min(n, kState); ++j) state_stage(j);
  if (n > 0) history_stage(0);
  for (size_t i = 0; i < n; ++i) {
    if (i + kSlot < n) slot_stage(i + kSlot);
    if (i + kDevice < n) device_stage(i + kDevice);
    if (i + kDecide < n) decide_stage(i + kDecide);
    if (i + kFire < n) fire_stage(i + kFire);
    if (i + kState < n) state_stage(i + kState);
    if (i + 1 < n) history_stage(i + 1);
    // The device found by the pipeline (by hash) is the event's when the ids agree.
    Device* d = const_cast<Device*>(devs[i % kRing]);
    if (d != nullptr && SameName(d->id, events[i].device_id)) [[likely]] {
      E.last_device = d;
    } else {
      d = E.GetDevice(events[i].device_id);
      if (d == nullptr) [[unlikely]]
        return i;  // a new device of unknown zone: later
    }
    const bool applied = E.ProcessOn(*d, events[i], now_ns, sink);
    if (duplicate != nullptr) duplicate[i] = applied ? 0 : 1;
  }
  return n;
}

namespace {

// A base window's record as accumulators by the device's metric ids. first/last get the
// window's bounds as their times: a rollup merges them against other windows' samples,
// which lie outside this window.
void AccsOf(WindowEngine::Impl& E, Device& d, const model::AggregateRecord& r,
            std::vector<Acc>* out) {
  out->assign(d.metrics.size(), Acc{});
  for (size_t i = 0; i < r.metrics.size(); ++i) {
    const model::MetricAggregate& m = r.metrics[i];
    const uint32_t id = E.MetricId(d, i, m.name);
    if (out->size() < d.metrics.size()) out->resize(d.metrics.size());
    Acc& a = (*out)[id];
    a.present = true;
    a.count = m.count;
    if (m.count > 0) {
      a.min = m.min;
      a.max = m.max;
      a.sum = m.sum;
      a.first = m.first;
      a.first_t = r.window_start_ns;
      a.last = m.last;
      a.last_t = r.window_end_ns - 1;
    }
    switch (d.metrics[id].kind) {
      case MetricKind::kPower:
        a.x = m.energy_wh;
        a.y = m.covered_ns;
        break;
      case MetricKind::kCounter:
        a.x = m.delta;
        a.y = static_cast<int64_t>(m.resets);
        break;
      case MetricKind::kGauge:
        break;
    }
  }
}

}  // namespace

bool WindowEngine::CorrectBaseWindow(const model::AggregateRecord& before,
                                     const model::AggregateRecord& after, RecordSink* sink) {
  Impl& E = *impl_;
  Device* d = E.FindDevice(after.device_id, HashDeviceId(after.device_id));
  if (d == nullptr || after.resolution != model::Resolution::kBase) return false;
  E.FlushPending(*d);
  d->shape_n = 0;
  // The change as a final base window with its pre-change snapshot (ApplyBaseChange).
  Window change;
  change.res = kBaseRes;
  change.start = after.window_start_ns;
  change.end = after.window_end_ns;
  change.count = after.count;
  change.snapshot_count = before.count;
  AccsOf(E, *d, after, &change.acc);
  AccsOf(E, *d, before, &change.snapshot);
  change.acc.resize(d->metrics.size());
  change.snapshot.resize(d->metrics.size());
  bool held = false;
  for (int res : {kHourRes, kDayRes}) {
    Window* r = FindContaining(d->win[res], after.window_start_ns);
    // A rollup the engine never held (every event of it was too late: found by a black-box
    // test, the replayed minute was written and its hour never) is created, empty, to take
    // the difference — unless eviction may have freed it (it ends at or before evicted_to:
    // such a rollup is settled, and the replay wrote it itself).
    if (r == nullptr) {
      const int64_t end = res == kHourRes
                              ? FloorTo(after.window_start_ns, kNanosPerHour) + kNanosPerHour
                              : LocalDayOf(d->zone, after.window_start_ns).end_ns;
      if (end > d->evicted_to) {
        r = res == kHourRes ? HourOf(E, *d, after.window_start_ns)
                            : DayOf(E, *d, after.window_start_ns);
      }
    }
    if (r != nullptr) {
      ApplyBaseChange(*d, &change, r);
      held = true;
    }
  }
  // Re-emits the changed final rollups; a created one behind the watermark becomes final
  // here, as after a late event.
  Finalize(E, *d, sink);
  return held;
}

void WindowEngine::Tick(int64_t now_ns, RecordSink* sink) {
  Impl& E = *impl_;
  const int64_t period = E.last_tick == kMinTime ? 0 : std::max<int64_t>(now_ns - E.last_tick, 0);
  E.last_tick = now_ns;
  // Tick visits the devices whose earliest deadline has come (Impl::tick_due), in index
  // order: prefetch the fields it reads a few due devices ahead, and the open windows of
  // those due for an early firing (their state is rarely in cache).
  // A visited device with pending rows folds them first (FlushPending): its metric
  // table, current window and history tails are prefetched as for an early firing.
  constexpr size_t kFieldsAhead = 8, kLinesAhead = 6, kWindowsAhead = 4, kContentsAhead = 2;
  const size_t n_devices = E.devices.size();
  if (E.tick_due.size() < n_devices) E.tick_due.resize(n_devices, kMinTime);
  const int64_t* tick_due = E.tick_due.data();
  std::vector<uint32_t>& visits = E.tick_visits;
  visits.clear();
  for (size_t k = 0; k < n_devices; ++k) {
    if (now_ns >= tick_due[k]) visits.push_back(static_cast<uint32_t>(k));
  }
  const size_t n_visits = visits.size();
  auto device = [&](size_t q) -> Device& { return *E.devices[visits[q]]; };
  auto due = [&](const Device& d) { return d.has_events && now_ns >= d.next_early; };
  auto busy = [&](const Device& d) { return due(d) || d.pend_n > 0; };
  for (size_t q = 0; q < n_visits; ++q) {
    if (q + kFieldsAhead < n_visits) PrefetchTickFields(&device(q + kFieldsAhead));
    if (q + kLinesAhead < n_visits) {
      const Device& a = device(q + kLinesAhead);
      if (busy(a)) {
        // Lines 2–4: metric table, current window, the windows' lists.
        const char* from = reinterpret_cast<const char*>(&a.metrics);
        const char* to = reinterpret_cast<const char*>(&a.win[kNumRes - 1]);
        PrefetchLines(from, static_cast<size_t>(to - from) + 1);
        if (a.pend_n > 0) PrefetchLines(a.pend, a.pend_n * sizeof(PendingRow));
      }
    }
    if (q + kWindowsAhead < n_visits) {
      const Device& a = device(q + kWindowsAhead);
      if (due(a)) {
        for (int res = 0; res < kNumRes; ++res) {
          __builtin_prefetch(a.win[res].data() + a.first_open[res], 0, 3);
        }
      }
      if (busy(a)) PrefetchAll(a.metrics);
    }
    if (q + kContentsAhead < n_visits) {
      const Device& a = device(q + kContentsAhead);
      if (due(a)) {
        PrefetchOpenWindows(a, false);
        PrefetchAll(a.by_name);
      }
      if (a.pend_n > 0 && a.last_base != nullptr) __builtin_prefetch(a.last_base, 1, 3);
    }
    if (q + 1 < n_visits) {
      const Device& a = device(q + 1);
      if (due(a)) PrefetchOpenWindows(a, true);
      if (busy(a)) {
        for (const MetricState& ms : a.metrics) {
          if (const Sample* tail = ms.hist.tail()) __builtin_prefetch(tail, 1, 3);
          if (const double* tail = ms.baseline.tail()) __builtin_prefetch(tail, 1, 3);
        }
      }
      if (a.pend_n > 0 && a.last_base != nullptr) PrefetchAll(a.last_base->acc);
    }
    const size_t k = visits[q];
    Device& d = *E.devices[k];
    if (!d.has_events) continue;
    ++E.tick_visit_count;
    // Early firings and eviction read what pending rows hold. (Neither changes what
    // TryPend relies on: the latest base window stays open and every history's last
    // sample stays; an idle finalization does change it.)
    E.FlushPending(d);
    const int64_t silent = now_ns - d.last_seen;
    if (silent >= E.opt.idle_timeout_ns) IdleFinalize(E, d, now_ns, sink);
    if (now_ns >= d.next_early && HasOpen(d)) EarlyFire(E, d, now_ns, period, sink);
    if (now_ns >= d.next_evict) {
      Evict(E, d, now_ns);
      d.next_evict = now_ns + kEvictInterval;
    }
    // Tick acts on a device when it has been silent for idle_timeout, at next_early and at
    // next_evict; until the earliest of them it need not visit it. Between visits events
    // only move these later (last_seen; next_early when Process fires early; a first
    // event sets next_early only where it was 0, which made the device due already), so
    // a visit may come early (and do nothing), never late. New and restored devices are
    // due at once; a device without events keeps its past due time (visited every tick).
    //
    // A device silent for idle_timeout has just been idle-finalized: until it sends again
    // the idle check has nothing to do before fin_wm reaches the end of its earliest open
    // window (IdleCloseTime), so it is parked there instead of being due on every tick (10k
    // silent devices with open 1h/1d windows cost 8 ms of CPU per second at a 200 ms
    // tick). An event un-parks it (ProcessOn: due at once), so its next silence deadline
    // is never missed.
    int64_t idle_due = SaturatingAdd(d.last_seen, E.opt.idle_timeout_ns);
    if (silent >= E.opt.idle_timeout_ns) {
      idle_due = IdleCloseTime(d);
      d.parked = true;
      d.tick_index = static_cast<uint32_t>(k);
    }
    E.tick_due[k] = std::min({d.next_early, d.next_evict, idle_due});
  }
}

bool WindowEngine::Health(std::string_view device_id, DeviceHealth* out) const {
  Device* found = impl_->FindDevice(device_id, HashDeviceId(device_id));
  if (found == nullptr) return false;
  impl_->FlushPending(*found);  // the clock-skew samples of pending rows
  const Device& d = *found;
  out->last_event_time_ns = d.has_events ? d.max_t : 0;
  // When ingest last accepted one of its events; processing time for events without a
  // received_at (and for devices restored from a checkpoint before format 6).
  out->last_seen_ns = d.last_received != 0 ? d.last_received : d.last_seen;
  out->watermark_ns = d.has_events ? d.wm : 0;
  size_t n = std::min<size_t>(d.skew_n, Device::kSkewRing);
  int64_t tmp[Device::kSkewRing];
  std::copy(d.skew, d.skew + n, tmp);
  std::sort(tmp, tmp + n);
  out->clock_skew_ns = n == 0 ? 0 : tmp[n / 2];
  out->events = d.events;
  out->late_updates = d.late_updates;
  out->late_dropped = d.late_dropped;
  out->duplicates = d.duplicates;
  return true;
}

WindowEngine::Stats WindowEngine::counters() const {
  const Impl& E = *impl_;
  Stats s;
  s.devices = E.devices.size();
  s.events = E.events;
  s.duplicates = E.duplicates;
  s.late_updates = E.late_updates;
  s.out_of_order = E.out_of_order;
  s.tick_visits = E.tick_visit_count;
  s.late_dropped = E.late_dropped;
  s.records_emitted = E.emitted;
  return s;
}

WindowEngine::Stats WindowEngine::stats() const {
  const Impl& E = *impl_;
  Stats s = counters();
  uint64_t bytes = 0;
  for (const auto& dp : E.devices) {
    const Device& d = *dp;
    bytes += sizeof(Device) + d.id.capacity() + d.dedup.capacity() * sizeof(FlatKeySet::Entry) +
             d.seen_ts.capacity_bytes();
    for (const MetricState& ms : d.metrics) {
      bytes += sizeof(MetricState) + ms.hist.capacity_bytes() + ms.baseline.capacity_bytes();
    }
    for (int res = 0; res < kNumRes; ++res) {
      for (const Window* w : d.win[res]) {
        if (!w->final) ++s.open_windows;
        bytes += sizeof(Window) + (w->acc.capacity() + w->snapshot.capacity()) * sizeof(Acc);
        if (w->day_label) {
          bytes += sizeof(DayLabel) + w->day_label->local_date.capacity() +
                   w->day_label->timezone.capacity();
        }
      }
    }
  }
  s.state_bytes_estimate = bytes;
  return s;
}

}  // namespace joule::stream
