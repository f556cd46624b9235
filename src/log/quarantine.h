// Quarantine: what the log does when a reader meets a damaged record at run time (a
// segment corrupted on disk after Open). Policy (docs/RELIABILITY.md, "Run-time
// corruption"): the record is never skipped — the reader returns Corruption and its
// consumer stops that partition — and the damage is reported loudly, once per record:
//  * a copy of the segment as found goes to the quarantine directory
//    (`p-NNNN-<segment>.<unix ms>.seg`, plus a `.json` with the report), fsynced; the
//    original stays where it is so that the log keeps its layout and a restart refuses to
//    start on it (verify_on_open) until an operator repairs it;
//  * an error log line `log corruption: acknowledged records cannot be read`;
//  * `joule_log_corrupt_records_total`, `joule_quarantined_segments_total`;
//  * the report in Log::corruptions() (shown by /readyz).
// Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "log/log.h"

namespace joule {
class Clock;
class Counter;
class MetricsRegistry;
}  // namespace joule

namespace joule::log {

// The report as one JSON object (the quarantine's .json file, /readyz "log".damaged[]):
// partition, offset, records_unreadable, segment, quarantined, byte, detected, error.
std::string CorruptionReportJson(const CorruptionReport& report);

class Quarantine {
 public:
  // `dir` "" = report only (no copies). `metrics` must outlive this.
  Quarantine(std::string dir, const Clock* clock, MetricsRegistry* metrics);

  // Reports a damaged record (fields of `report` except quarantined/detected_ns); the
  // first report of a (partition, offset) copies the segment, counts and logs it.
  void Report(CorruptionReport report);
  std::vector<CorruptionReport> reports() const;

  // Recovery: before Open cuts bytes [from_byte, to_byte) off `segment` (a torn tail, or
  // damage an operator chose to cut), copies them as found into the quarantine directory as
  // `p-NNN-<segment base>.cut-at-<from_byte>.<unix ms>.bin`, with `report` (a JSON object)
  // beside it in `.json`, both fsynced, and the directory too. Returns the copy's path, ""
  // when the directory is "" (report only). An error means nothing may be cut.
  Result<std::string> SaveCut(const std::string& segment, uint64_t from_byte, uint64_t to_byte,
                              const std::string& report_json);

 private:
  // Copies `segment` into dir_ with a report beside it; the copy's path or "" on failure.
  std::string CopyOut(const CorruptionReport& report);

  const std::string dir_;
  const Clock* clock_;
  Counter* corrupt_records_;
  Counter* quarantined_segments_;
  mutable std::mutex mu_;
  std::set<std::pair<uint32_t, uint64_t>> seen_;  // (partition, offset)
  std::vector<CorruptionReport> reports_;
};

}  // namespace joule::log
