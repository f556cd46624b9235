// ProcessorCheckpoint: what a PartitionProcessor persists so that a restart resumes
// exactly where it left off — each owned partition's next log offset, the window
// engine's state at that point, and each device's latest raw reading — written
// atomically (temp file, fsync, rename, directory fsync). Format:
// docs/formats/checkpoint.md ("Processor checkpoint file").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/event.h"
#include "stream/state_sink.h"

namespace joule::app {

struct ProcessorCheckpoint {
  std::vector<std::pair<uint32_t, uint64_t>> offsets;  // partition → next offset to process
  std::string engine_state;                            // WindowEngine::SaveState
  std::vector<model::Event> readings;                  // latest reading per device
  // The sequence number of the last replay journal whose corrections this engine state
  // holds (app/replay_journal.h); 0 = none. Written as format version 2 when non-zero.
  uint64_t replay_applied = 0;
};

std::string EncodeCheckpoint(const ProcessorCheckpoint& checkpoint);
// The same bytes from parts, into `out` (replaced; its capacity is reused between
// checkpoints): `readings` are already model::EncodeEvent payloads (e.g. log records).
void EncodeCheckpointTo(const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                        std::string_view engine_state,
                        const std::vector<std::string_view>& readings, std::string* out,
                        uint64_t replay_applied = 0);
// With `engine_state_view`, the engine state is not copied into out->engine_state (left
// empty) but viewed in `data` (valid while `data` is).
Status DecodeCheckpoint(std::string_view data, ProcessorCheckpoint* out,
                        std::string_view* engine_state_view = nullptr);

// Atomically replaces `path` with the checkpoint of these parts — the same bytes as
// EncodeCheckpointTo — without assembling it in memory: the engine state (tens of MiB at
// 10k devices) goes from its own buffer to the file, and only the header and the readings
// are encoded, into `scratch` (its capacity is reused between checkpoints). Returns the
// file's size.
Result<uint64_t> WriteCheckpointParts(const std::string& path,
                                      const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                                      std::string_view engine_state,
                                      const std::vector<std::string_view>& readings,
                                      std::string* scratch, uint64_t replay_applied = 0);

// The same file, with the engine state streamed into it as `save_state` produces it
// (WindowEngine::SaveStateTo: its exact size first, then pieces), so that the state is
// never held in memory a second time. Returns the file's size. An error of save_state, or a
// state of another size than it announced, leaves `path` as it was.
Result<uint64_t> WriteCheckpointStreamed(
    const std::string& path, const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
    const std::vector<std::string_view>& readings, std::string* scratch, uint64_t replay_applied,
    const std::function<Status(stream::StateSink&)>& save_state);

// Atomically replaces `path`. Returns the number of bytes written.
Result<uint64_t> WriteCheckpointFile(const std::string& path,
                                     const ProcessorCheckpoint& checkpoint);
// Atomically replaces `path` with `data` (an encoded checkpoint). Returns its size.
Result<uint64_t> WriteCheckpointBytes(const std::string& path, std::string_view data);
// Writes `data` to `path` atomically: temp file, fsync (a failed fsync aborts), rename,
// directory fsync. `crash_points`: pass the checkpoint.* crash points (common/crash_point.h;
// the checkpoint file only, so that their call counts mean checkpoints).
Status WriteFileAtomically(const std::string& path, std::string_view data,
                           bool crash_points = false);
// The same for a file made of `pieces`, written in order.
Status WriteFileAtomically(const std::string& path, std::span<const std::string_view> pieces,
                           bool crash_points = false);
// The same for a file whose bytes `fill` writes to `fd` (`name`: the temp file's path, for
// messages). An error of fill removes the temp file and is returned.
Status WriteFileAtomically(const std::string& path,
                           const std::function<Status(int fd, const std::string& name)>& fill,
                           bool crash_points = false);

// fsync of a directory (after a rename or unlink in it); a failed fsync aborts.
Status SyncDirectory(const std::string& dir);
// The whole file; IoError when it cannot be read.
Result<std::string> ReadWholeFile(const std::string& path);

// nullopt when the file does not exist; Corruption when it fails its checks.
Result<std::optional<ProcessorCheckpoint>> ReadCheckpointFile(const std::string& path);

// A checkpoint file mapped read-only for a restore: `engine_state` views the mapping (the
// file's page cache) instead of a copy in the heap, so that restoring a state of hundreds
// of MB holds the state being built and not, besides it, an image of it in anonymous
// memory. `checkpoint` has everything else (its engine_state is empty).
class MappedCheckpoint {
 public:
  ~MappedCheckpoint();
  MappedCheckpoint(const MappedCheckpoint&) = delete;
  MappedCheckpoint& operator=(const MappedCheckpoint&) = delete;
  ProcessorCheckpoint checkpoint;
  std::string_view engine_state;

 private:
  MappedCheckpoint() = default;
  friend Result<std::unique_ptr<MappedCheckpoint>> MapCheckpointFile(const std::string& path);
  void* mapping_ = nullptr;
  size_t mapped_bytes_ = 0;
};
// nullptr when the file does not exist; Corruption when it fails its checks (as
// ReadCheckpointFile).
Result<std::unique_ptr<MappedCheckpoint>> MapCheckpointFile(const std::string& path);

// The partition offsets at the head of a checkpoint file, read without the rest (and
// without its CRC check, which the restore does): what the processor will resume from,
// for its lag while the restore runs. Empty when the file is missing or its head is not
// a checkpoint's.
std::vector<std::pair<uint32_t, uint64_t>> PeekCheckpointOffsets(const std::string& path);

}  // namespace joule::app
