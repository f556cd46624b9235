// libFuzzer target: the history store's record codec (docs/formats/history.md), both ways.
// Build and run: scripts/fuzz.sh (the fuzz/ CMake project, clang + ASan/UBSan).
//
// The first input byte picks a mode:
//   even: the rest is a stored value (any format byte, any bytes), decoded under a valid
//         key as the store's readers do: DecodeRecord, DecodeEnergy, DecodeVersion;
//   odd:  the rest describes a record (every double from 8 raw bytes: NaN payloads,
//         infinities, -0.0, subnormals, short decimals, repeated fields), which is encoded
//         and decoded again.
// Invariants: no crash or sanitizer report; DecodeEnergy and DecodeRecord accept exactly
// the same values and agree on what they read; DecodeVersion reads a decoded record's
// version; a decoded value re-encodes to bytes that decode to the same record; and
// Decode(Encode(r)) == r bit for bit for every record (the format's own promise).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "model/aggregate_record.h"
#include "store/rocksdb/history_record_codec.h"

namespace {

namespace codec = joule::store::history_codec;
using joule::model::AggregateRecord;
using joule::model::MetricAggregate;
using joule::model::MetricKind;
using joule::model::Resolution;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool SameMetric(const MetricAggregate& a, const MetricAggregate& b) {
  return a.name == b.name && a.kind == b.kind && a.count == b.count && SameBits(a.min, b.min) &&
         SameBits(a.max, b.max) && SameBits(a.sum, b.sum) && SameBits(a.first, b.first) &&
         SameBits(a.last, b.last) && SameBits(a.energy_wh, b.energy_wh) &&
         a.covered_ns == b.covered_ns && SameBits(a.delta, b.delta) && a.resets == b.resets;
}

bool SameRecord(const AggregateRecord& a, const AggregateRecord& b) {
  if (a.device_id != b.device_id || a.resolution != b.resolution ||
      a.window_start_ns != b.window_start_ns || a.window_end_ns != b.window_end_ns ||
      a.final != b.final || a.version != b.version || a.count != b.count ||
      a.timezone != b.timezone || a.local_date != b.local_date ||
      a.metrics.size() != b.metrics.size()) {
    return false;
  }
  for (size_t i = 0; i < a.metrics.size(); ++i) {
    if (!SameMetric(a.metrics[i], b.metrics[i])) return false;
  }
  return true;
}

// Reads the input front to back; past its end every read is zero.
class Input {
 public:
  explicit Input(std::string_view s) : s_(s) {}
  uint8_t Byte() {
    if (s_.empty()) return 0;
    const auto b = static_cast<uint8_t>(s_[0]);
    s_.remove_prefix(1);
    return b;
  }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | Byte();
    return v;
  }
  // Mostly values a window engine produces (short decimals, their sums, repeats of an
  // earlier field), sometimes any bit pattern.
  double Double(const std::vector<double>& earlier) {
    const uint8_t how = Byte();
    switch (how % 8) {
      case 0:
        return 0.0;
      case 1:
      case 2: {  // a short decimal, as the JSON parser produces it
        const auto m = static_cast<int64_t>(U64() >> (how % 4 == 1 ? 40 : 20)) - (1 << 20);
        static constexpr double kPow10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
        return static_cast<double>(m) / kPow10[Byte() % 8];
      }
      case 3:
        if (!earlier.empty()) return earlier[Byte() % earlier.size()];
        [[fallthrough]];
      case 4: {  // the trapezoid of two short decimals over part of a minute
        const double a = static_cast<double>(Byte()) / 10, b = static_cast<double>(Byte()) / 10;
        return (a + b) * 0.5 * (static_cast<double>(U64() % 60'000'000'001) / 3.6e12);
      }
      case 5:
        if (!earlier.empty()) return earlier.back() - static_cast<double>(Byte()) / 100;
        [[fallthrough]];
      default: {
        const uint64_t bits = U64();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        return d;
      }
    }
  }
  std::string_view Rest() const { return s_; }

 private:
  std::string_view s_;
};

AggregateRecord MakeRecord(Input& in) {
  static constexpr const char* kNames[] = {"power_w",       "voltage_v", "current_a", "energy_wh",
                                           "temperature_c", "a",         "z9_"};
  AggregateRecord r;
  r.device_id = "plug-42";
  r.resolution = static_cast<Resolution>(in.Byte() % 3);
  r.window_start_ns = static_cast<int64_t>(in.U64());
  const uint8_t len = in.Byte();
  r.window_end_ns = len % 4 == 0 ? static_cast<int64_t>(in.U64())
                                 : static_cast<int64_t>(static_cast<uint64_t>(r.window_start_ns) +
                                                        (len % 4 == 1   ? 60'000'000'000ull
                                                         : len % 4 == 2 ? 3'600'000'000'000ull
                                                                        : 86'400'000'000'000ull));
  const uint8_t flags = in.Byte();
  r.final = (flags & 1) != 0;
  r.version = flags & 2 ? in.U64() : in.Byte();
  r.count = flags & 4 ? in.U64() : in.Byte();
  if (r.resolution == Resolution::kDay || (flags & 8) != 0) {
    r.timezone = flags & 16 ? "Asia/Kathmandu" : "Europe/Berlin";
    r.local_date = "2026-11-29";
  }
  // Names sorted and distinct, as records hold them.
  const uint8_t mask = in.Byte();
  for (size_t i = 0; i < std::size(kNames); ++i) {
    if ((mask >> i & 1) == 0) continue;
    MetricAggregate m;
    m.name = kNames[i];
    const uint8_t kind = in.Byte();
    m.kind = static_cast<MetricKind>(kind % 3);
    m.count = kind & 4 ? in.U64() : in.Byte();
    std::vector<double> earlier;
    for (double* f : {&m.min, &m.max, &m.sum, &m.first, &m.last}) {
      *f = in.Double(earlier);
      earlier.push_back(*f);
    }
    if (m.kind == MetricKind::kPower || (kind & 8) != 0) {
      m.covered_ns = kind & 16 ? static_cast<int64_t>(in.U64())
                               : static_cast<int64_t>(in.Byte()) * 1'000'000'000;
      m.energy_wh = in.Double(earlier);
      earlier.push_back(m.energy_wh);
    }
    if (m.kind == MetricKind::kCounter || (kind & 32) != 0) {
      m.delta = in.Double(earlier);
      m.resets = kind & 64 ? in.U64() : in.Byte() % 3;
    }
    r.metrics.push_back(std::move(m));
  }
  std::sort(r.metrics.begin(), r.metrics.end(),
            [](const MetricAggregate& a, const MetricAggregate& b) { return a.name < b.name; });
  return r;
}

// What every reader of a stored value must agree on.
void CheckValue(std::string_view key, std::string_view value) {
  joule::Result<AggregateRecord> rec = codec::DecodeRecord(key, value);
  joule::store::HistoryEnergyFields energy;
  const joule::Status es = codec::DecodeEnergy(key, value, "power_w", &energy);
  Check(rec.ok() == es.ok(), "DecodeEnergy fails exactly when DecodeRecord does");
  joule::Result<uint64_t> version = codec::DecodeVersion(value);
  if (!rec.ok()) return;
  Check(version.ok() && *version == rec->version, "DecodeVersion reads the record's version");
  Check(energy.window_end_ns == rec->window_end_ns, "DecodeEnergy's window end");
  Check(energy.local_date == rec->local_date, "DecodeEnergy's local date");
  const MetricAggregate* m = rec->FindMetric("power_w");
  Check(energy.metric_found == (m != nullptr), "DecodeEnergy finds the metric");
  if (m != nullptr) {
    Check(energy.kind == m->kind && SameBits(energy.energy_wh, m->energy_wh) &&
              SameBits(energy.delta, m->delta),
          "DecodeEnergy's fields");
  }
  const std::string again = codec::EncodeValue(*rec);
  joule::Result<AggregateRecord> rec2 = codec::DecodeRecord(key, again);
  Check(rec2.ok(), "a re-encoded value decodes");
  Check(SameRecord(*rec, *rec2), "a decoded record survives a re-encoding");
  Check(codec::EncodeValue(*rec2) == again, "re-encoding is stable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  Input in(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  if ((mode & 1) == 0) {
    const auto res = static_cast<Resolution>((mode >> 1) % 3);
    const std::string key = codec::EncodeKey(res, "plug-42", 1'795'906'980'000'000'000);
    CheckValue(key, in.Rest());
    // The same bytes as a key.
    joule::Result<codec::DecodedKey> k = codec::DecodeKey(in.Rest());
    if (k.ok()) {
      Check(codec::EncodeKey(k->resolution, k->device_id, k->window_start_ns) == in.Rest(),
            "a decoded key re-encodes to its bytes");
    }
    return 0;
  }
  const AggregateRecord r = MakeRecord(in);
  const std::string key = codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns);
  const std::string value = codec::EncodeValue(r);
  joule::Result<AggregateRecord> back = codec::DecodeRecord(key, value);
  Check(back.ok(), "an encoded record decodes");
  Check(SameRecord(r, *back), "Decode(Encode(r)) == r bit for bit");
  CheckValue(key, value);
  return 0;
}
