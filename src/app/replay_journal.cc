#include "app/replay_journal.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "app/processor_checkpoint.h"
#include "common/byte_cursor.h"
#include "common/crash_point.h"
#include "common/crc32c.h"
#include "store/rocksdb/history_record_codec.h"

namespace joule::app {
namespace {

constexpr char kMagic[8] = {'J', 'O', 'U', 'L', 'E', 'R', 'P', 'J'};
constexpr uint32_t kVersion = 1;
constexpr std::string_view kSuffix = ".journal";

void PutBytes(std::string* out, std::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}
// A record as the history store's key and value (docs/formats/history.md).
void PutRecord(std::string* out, const model::AggregateRecord& r) {
  PutBytes(out, store::history_codec::EncodeKey(r.resolution, r.device_id, r.window_start_ns));
  PutBytes(out, store::history_codec::EncodeValue(r));
}

// A u32 length and the bytes.
bool GetBytes(ByteCursor& c, std::string_view* s) {
  uint32_t n;
  return c.U32(&n) && c.Take(n, s);
}
Status GetRecord(ByteCursor& c, model::AggregateRecord* r) {
  std::string_view key, value;
  if (!GetBytes(c, &key) || !GetBytes(c, &value)) {
    return Status::Corruption("truncated replay journal");
  }
  JOULE_ASSIGN_OR_RETURN(*r, store::history_codec::DecodeRecord(key, value));
  return Status::Ok();
}

std::string JournalPath(const std::string& dir, uint64_t seq) {
  return (std::filesystem::path(dir) / fmt::format("{:020}{}", seq, kSuffix)).string();
}

// The sequence number of a journal's file name; 0 when it is not one.
uint64_t SeqOf(std::string_view name) {
  if (name.size() != 20 + kSuffix.size() || !name.ends_with(kSuffix)) return 0;
  uint64_t seq = 0;
  for (char c : name.substr(0, 20)) {
    if (c < '0' || c > '9') return 0;
    seq = seq * 10 + static_cast<uint64_t>(c - '0');
  }
  return seq;
}

}  // namespace

std::string ReplayJournalDir(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "replay_journal").string();
}

std::string EncodeReplayJournal(const ReplayJournal& j) {
  std::string body;
  PutU64(&body, j.seq);
  PutU32(&body, static_cast<uint32_t>(j.writes.size()));
  for (const auto& r : j.writes) PutRecord(&body, r);
  PutU32(&body, static_cast<uint32_t>(j.corrections.size()));
  for (const auto& c : j.corrections) {
    const bool has_before = !c.before.device_id.empty();
    PutU8(&body, has_before ? 1 : 0);
    if (has_before) PutRecord(&body, c.before);
    PutRecord(&body, c.after);
  }
  std::string out(kMagic, sizeof kMagic);
  PutU32(&out, kVersion);
  PutU64(&out, body.size());
  PutU32(&out, crc32c::Mask(crc32c::Value(body)));
  out += body;
  return out;
}

Status DecodeReplayJournal(std::string_view data, ReplayJournal* out) {
  uint32_t version;
  std::string_view body;
  JOULE_RETURN_IF_ERROR(
      OpenFramed(data, std::string_view(kMagic, sizeof kMagic), "replay journal", &version, &body));
  if (version != kVersion) {
    return Status::Corruption(fmt::format("replay journal version {}", version));
  }
  ByteCursor c(body);
  uint32_t n;
  if (!c.U64(&out->seq) || !c.U32(&n) || !c.CanHold(n, 8)) {
    return Status::Corruption("truncated replay journal");
  }
  out->writes.resize(n);
  for (auto& r : out->writes) JOULE_RETURN_IF_ERROR(GetRecord(c, &r));
  if (!c.U32(&n) || !c.CanHold(n, 9)) return Status::Corruption("truncated replay journal");
  out->corrections.resize(n);
  for (auto& corr : out->corrections) {
    uint8_t has_before;
    if (!c.U8(&has_before) || has_before > 1) return Status::Corruption("bad replay journal");
    corr.before = model::AggregateRecord{};
    if (has_before) JOULE_RETURN_IF_ERROR(GetRecord(c, &corr.before));
    JOULE_RETURN_IF_ERROR(GetRecord(c, &corr.after));
  }
  if (!c.AtEnd()) return Status::Corruption("trailing bytes in replay journal");
  return Status::Ok();
}

Result<std::vector<std::string>> ListReplayJournals(const std::string& dir) {
  std::vector<std::pair<uint64_t, std::string>> found;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::vector<std::string>();
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const uint64_t seq = SeqOf(entry.path().filename().string());
    if (seq > 0) found.emplace_back(seq, entry.path().string());
  }
  if (ec) return Status::IoError(fmt::format("cannot list {}: {}", dir, ec.message()));
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& [seq, path] : found) paths.push_back(std::move(path));
  return paths;
}

Result<uint64_t> AllocateReplayJournalSeq(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError(fmt::format("cannot create {}: {}", dir, ec.message()));
  const std::string last_path = (std::filesystem::path(dir) / "last_seq").string();
  uint64_t last = 0;
  if (std::filesystem::exists(last_path, ec)) {
    JOULE_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(last_path));
    char* end = nullptr;
    last = std::strtoull(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\n') {
      return Status::Corruption(fmt::format("{}: not a sequence number", last_path));
    }
  }
  JOULE_ASSIGN_OR_RETURN(std::vector<std::string> journals, ListReplayJournals(dir));
  for (const auto& path : journals) {
    last = std::max(last, SeqOf(std::filesystem::path(path).filename().string()));
  }
  const uint64_t seq = last + 1;
  JOULE_RETURN_IF_ERROR(WriteFileAtomically(last_path, fmt::format("{}\n", seq)));
  return seq;
}

Status WriteReplayJournal(const std::string& dir, const ReplayJournal& journal) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::IoError(fmt::format("cannot create {}: {}", dir, ec.message()));
  return WriteFileAtomically(JournalPath(dir, journal.seq), EncodeReplayJournal(journal));
}

Result<ReplayJournal> ReadReplayJournal(const std::string& path) {
  JOULE_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(path));
  ReplayJournal j;
  Status st = DecodeReplayJournal(data, &j);
  if (!st.ok()) return Status::Corruption(fmt::format("{}: {}", path, st.message()));
  if (j.seq != SeqOf(std::filesystem::path(path).filename().string())) {
    return Status::Corruption(fmt::format("{}: holds sequence number {}", path, j.seq));
  }
  return j;
}

Status RemoveReplayJournal(const std::string& dir, uint64_t seq) {
  const std::string path = JournalPath(dir, seq);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::IoError(fmt::format("unlink {}: {}", path, std::strerror(errno)));
  }
  return SyncDirectory(dir);
}

Result<ReplayRecoveryStats> RecoverReplayJournals(
    const std::string& data_dir, uint32_t log_partitions, const stream::EngineOptions& engine,
    stream::TimezoneProvider* timezones, store::HistoryStore* history, store::LatestStore* latest) {
  ReplayRecoveryStats stats;
  const std::string dir = ReplayJournalDir(data_dir);
  JOULE_ASSIGN_OR_RETURN(std::vector<ReplayJournal> journals,
                         RedoReplayJournals(data_dir, history, latest));
  const std::string checkpoints = (std::filesystem::path(data_dir) / "checkpoints").string();
  for (const ReplayJournal& j : journals) {
    // Step 3 for the checkpoints that do not have it yet.
    JOULE_ASSIGN_OR_RETURN(CheckpointCorrectionStats corrected,
                           CorrectCheckpointedRollups(checkpoints, log_partitions, engine,
                                                      timezones, history, j.corrections, j.seq));
    JOULE_RETURN_IF_ERROR(RemoveReplayJournal(dir, j.seq));
    ++stats.journals;
    stats.records += j.writes.size();
    stats.checkpoints.checkpoints += corrected.checkpoints;
    stats.checkpoints.corrections += corrected.corrections;
    stats.checkpoints.records_written += corrected.records_written;
  }
  return stats;
}

Result<std::vector<ReplayJournal>> RedoReplayJournals(const std::string& data_dir,
                                                      store::HistoryStore* history,
                                                      store::LatestStore* latest) {
  std::vector<ReplayJournal> out;
  const std::string dir = ReplayJournalDir(data_dir);
  // A journal's temp file left by a kill before its rename was never durable, and its
  // replay had not touched history yet (step 1 precedes step 2): nothing to finish, only a
  // file to remove (found by a black-box test: it stayed for good).
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > kSuffix.size() + 4 && name.ends_with(std::string(kSuffix) + ".tmp")) {
      std::filesystem::remove(entry.path(), ec);
    }
  }
  JOULE_ASSIGN_OR_RETURN(std::vector<std::string> journals, ListReplayJournals(dir));
  for (const std::string& path : journals) {
    JOULE_ASSIGN_OR_RETURN(ReplayJournal j, ReadReplayJournal(path));
    // Step 2 again: history keeps the highest version, so what is there already is ignored.
    if (!j.writes.empty()) {
      JOULE_RETURN_IF_ERROR(history->Put(j.writes));
      JOULE_RETURN_IF_ERROR(history->Flush());
      // The latest store: best effort (a Redis that is down must not keep the server from
      // starting; history has the records, and the latest store is a cache of it).
      if (latest) {
        for (const auto& r : j.writes) {
          if (r.resolution == model::Resolution::kBase) (void)latest->PutRecord(r);
        }
      }
    }
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace joule::app
