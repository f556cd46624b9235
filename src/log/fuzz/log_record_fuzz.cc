// libFuzzer target: the log record decoder (docs/formats/log.md) as recovery and readers
// use it — DecodeRecord, the buffered SegmentScanner over a real file, and the event
// payload decoder (model::DecodeEvent) the processors apply to each record.
// Build and run: scripts/fuzz.sh (the fuzz/ CMake project, clang + ASan/UBSan).
//
// The first input byte picks a mode:
//   even: the rest is a raw segment file;
//   odd:  the rest is split into payloads at '\n', framed as valid records (offsets from
//         byte 1), and then damaged as bytes 1..4 say (truncation point, bit flip), so the
//         CRC-protected paths past the header are reached too.
// Invariants: no crash or sanitizer report; DecodeRecord and the scanner agree on how many
// records and bytes are valid; every accepted record re-encodes to exactly its bytes; an
// accepted event payload re-encodes to bytes that decode and encode to the same bytes; in framed
// mode every record before the damage is accepted.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "log/segment_format.h"
#include "log/segment_scanner.h"
#include "model/event.h"

namespace {

using joule::log::DecodedRecord;
using joule::log::DecodeRecord;
using joule::log::DecodeResult;
using joule::log::SegmentScanner;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "guarantee violated: %s\n", what);
    std::abort();
  }
}

void CheckPayload(std::string_view payload) {
  joule::model::Event e;
  if (!joule::model::DecodeEvent(payload, &e).ok()) return;
  std::string again;
  joule::model::EncodeEvent(e, &again);
  joule::model::Event e2;
  Check(joule::model::DecodeEvent(again, &e2).ok(), "re-encoded event decodes");
  std::string twice;  // bytes, not Event ==: a NaN sample is not equal to itself
  joule::model::EncodeEvent(e2, &twice);
  Check(twice == again, "event round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const uint64_t base = mode >> 1;

  std::string file;
  size_t intact_records = 0;  // framed mode: records wholly before the damage
  if ((mode & 1) == 0) {
    file.assign(rest);
  } else {
    if (rest.size() < 4) return 0;
    const uint16_t cut =
        static_cast<uint16_t>(static_cast<uint8_t>(rest[0]) | (static_cast<uint8_t>(rest[1]) << 8));
    const uint16_t flip =
        static_cast<uint16_t>(static_cast<uint8_t>(rest[2]) | (static_cast<uint8_t>(rest[3]) << 8));
    std::string_view payloads = rest.substr(4);
    std::vector<size_t> ends;
    uint64_t offset = base;
    while (!payloads.empty()) {
      size_t nl = payloads.find('\n');
      std::string_view p = payloads.substr(0, nl);
      joule::log::EncodeRecord(offset++, static_cast<int64_t>(offset * 1000), p, &file);
      ends.push_back(file.size());
      payloads = nl == std::string_view::npos ? std::string_view() : payloads.substr(nl + 1);
    }
    size_t damage = file.size();
    if (cut != 0xffff && cut < file.size()) {
      file.resize(cut);
      damage = cut;
    }
    if (flip != 0xffff && flip / 8 < file.size()) {
      file[flip / 8] = static_cast<char>(file[flip / 8] ^ (1 << (flip % 8)));
      damage = std::min<size_t>(damage, flip / 8);
    }
    for (size_t end : ends) {
      if (end <= damage) ++intact_records;
    }
  }

  // 1. DecodeRecord, record by record.
  size_t pos = 0;
  size_t records = 0;
  uint64_t expected = base;
  DecodedRecord rec;
  for (;;) {
    DecodeResult r = DecodeRecord(std::string_view(file).substr(pos), expected, &rec);
    if (r != DecodeResult::kOk) break;
    Check(rec.size == joule::log::kRecordHeaderBytes + rec.payload.size(), "record size");
    Check(rec.size <= file.size() - pos, "record within input");
    Check(rec.offset == expected, "record offset");
    std::string again;
    joule::log::EncodeRecord(rec.offset, rec.append_time_ns, rec.payload, &again);
    Check(again == std::string_view(file).substr(pos, rec.size), "record re-encodes exactly");
    CheckPayload(rec.payload);
    pos += rec.size;
    ++records;
    ++expected;
  }
  Check(records >= intact_records, "every record before the damage is accepted");

  // 2. The scanner over a real (memory) file agrees.
  int fd = ::memfd_create("segment", MFD_CLOEXEC);
  Check(fd >= 0, "memfd_create");
  size_t written = 0;
  while (written < file.size()) {
    ssize_t w = ::write(fd, file.data() + written, file.size() - written);
    Check(w > 0, "write memfd");
    written += static_cast<size_t>(w);
  }
  SegmentScanner scanner(fd, base, "memfd");  // owns fd
  size_t scanned = 0;
  SegmentScanner::Step step;
  while ((step = scanner.Next(&rec)) == SegmentScanner::Step::kRecord) ++scanned;
  Check(step != SegmentScanner::Step::kIoError, "no I/O error");
  Check(scanned == records, "scanner and decoder agree on records");
  Check(scanner.valid_bytes() == pos, "scanner and decoder agree on valid bytes");
  // The end: every byte valid, or a zero header after the last record (the pre-written
  // tail, docs/formats/log.md); anything else is invalid.
  Check((step == SegmentScanner::Step::kEnd) ==
            (pos == file.size() || joule::log::IsZeroHeader(std::string_view(file).substr(pos))),
        "end exactly when every byte is valid or a zero header follows");
  return 0;
}
