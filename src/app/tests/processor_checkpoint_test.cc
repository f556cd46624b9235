#include "app/processor_checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/crc32c.h"

namespace joule::app {
namespace {

ProcessorCheckpoint Sample() {
  ProcessorCheckpoint c;
  c.offsets = {{1, 100}, {3, 0}, {5, 12345678901}};
  c.engine_state = std::string("engine\0state", 12);
  model::Event e;
  e.device_id = "plug-1";
  e.timestamp_ns = 42;
  e.metrics = {{"power_w", 1.5}};
  c.readings.push_back(e);
  return c;
}

// A fresh temporary directory, removed at the end of the test; `file` is a checkpoint path in it.
struct CheckpointDir {
  CheckpointDir() {
    char tmpl[] = "/tmp/joule-ckpt-XXXXXX";
    path = mkdtemp(tmpl);
    file = path + "/p.ckpt";
  }
  ~CheckpointDir() { std::filesystem::remove_all(path); }
  std::string path, file;
};

TEST(ProcessorCheckpointTest, RoundTrip) {
  ProcessorCheckpoint in = Sample();
  ProcessorCheckpoint out;
  ASSERT_TRUE(DecodeCheckpoint(EncodeCheckpoint(in), &out).ok());
  EXPECT_EQ(out.offsets, in.offsets);
  EXPECT_EQ(out.engine_state, in.engine_state);
  ASSERT_EQ(out.readings.size(), 1u);
  EXPECT_EQ(out.readings[0], in.readings[0]);
}

TEST(ProcessorCheckpointTest, ReplayJournalSequenceRoundTrips) {
  // 0: written as version 1 (older builds read it); else version 2 with the sequence.
  ProcessorCheckpoint in = Sample();
  std::string v1 = EncodeCheckpoint(in);
  uint32_t version = 0;
  std::memcpy(&version, v1.data() + 8, 4);
  EXPECT_EQ(version, 1u);
  in.replay_applied = 77;
  std::string v2 = EncodeCheckpoint(in);
  std::memcpy(&version, v2.data() + 8, 4);
  EXPECT_EQ(version, 2u);
  EXPECT_EQ(v2.size(), v1.size() + 8);
  ProcessorCheckpoint out;
  ASSERT_TRUE(DecodeCheckpoint(v2, &out).ok());
  EXPECT_EQ(out.replay_applied, 77u);
  EXPECT_EQ(out.engine_state, in.engine_state);
  ASSERT_TRUE(DecodeCheckpoint(v1, &out).ok());
  EXPECT_EQ(out.replay_applied, 0u);
  for (size_t n = 0; n < v2.size(); ++n) {
    EXPECT_FALSE(DecodeCheckpoint(std::string_view(v2).substr(0, n), &out).ok()) << n;
  }
}

TEST(ProcessorCheckpointTest, EveryTruncationAndBitFlipIsDetected) {
  std::string data = EncodeCheckpoint(Sample());
  for (size_t n = 0; n < data.size(); ++n) {
    ProcessorCheckpoint out;
    EXPECT_FALSE(DecodeCheckpoint(std::string_view(data).substr(0, n), &out).ok()) << n;
  }
  for (size_t i = 0; i < data.size(); ++i) {
    std::string bad = data;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    ProcessorCheckpoint out;
    EXPECT_FALSE(DecodeCheckpoint(bad, &out).ok()) << i;
  }
}

TEST(ProcessorCheckpointTest, FileIsReplacedAtomically) {
  CheckpointDir dir;
  const std::string path = dir.file;
  auto none = ReadCheckpointFile(path);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(WriteCheckpointFile(path, Sample()).ok());
  ProcessorCheckpoint second = Sample();
  second.offsets[0].second = 200;
  ASSERT_TRUE(WriteCheckpointFile(path, second).ok());
  auto read = ReadCheckpointFile(path);
  ASSERT_TRUE(read.ok());
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ((*read)->offsets[0].second, 200u);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  std::ofstream(path, std::ios::trunc) << "garbage";
  EXPECT_EQ(ReadCheckpointFile(path).status().code(), StatusCode::kCorruption);
}

// A restore maps the file: the same checkpoint as ReadCheckpointFile, with the engine
// state viewed in the mapping; a missing file is nothing, a damaged or empty one corrupt.
TEST(ProcessorCheckpointTest, MappedFileDecodesAsTheReadOne) {
  CheckpointDir dir;
  const std::string path = dir.file;
  auto none = MapCheckpointFile(path);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  ProcessorCheckpoint in = Sample();
  in.engine_state.assign(3 << 20, 'x');  // several pages
  in.engine_state[12345] = '\0';
  in.replay_applied = 9;
  ASSERT_TRUE(WriteCheckpointFile(path, in).ok());
  auto mapped = MapCheckpointFile(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  ASSERT_NE(*mapped, nullptr);
  const MappedCheckpoint& m = **mapped;
  EXPECT_EQ(m.engine_state, in.engine_state);
  EXPECT_TRUE(m.checkpoint.engine_state.empty());
  EXPECT_EQ(m.checkpoint.offsets, in.offsets);
  ASSERT_EQ(m.checkpoint.readings.size(), 1u);
  EXPECT_EQ(m.checkpoint.readings[0], in.readings[0]);
  EXPECT_EQ(m.checkpoint.replay_applied, 9u);
  auto read = ReadCheckpointFile(path);
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ((*read)->engine_state, in.engine_state);

  std::string bytes = *ReadWholeFile(path);
  bytes[bytes.size() / 2] ^= 0x10;
  std::ofstream(path, std::ios::trunc | std::ios::binary) << bytes;
  auto flipped = MapCheckpointFile(path);
  EXPECT_EQ(flipped.status().code(), StatusCode::kCorruption);
  EXPECT_NE(flipped.status().message().find(path), std::string::npos);
  std::ofstream(path, std::ios::trunc);  // empty
  EXPECT_EQ(MapCheckpointFile(path).status().code(), StatusCode::kCorruption);
}

// The offsets at a checkpoint's head, read without the rest (the lag during a restore).
TEST(ProcessorCheckpointTest, OffsetsArePeekedFromTheHead) {
  CheckpointDir dir;
  const std::string path = dir.file;
  EXPECT_TRUE(PeekCheckpointOffsets(path).empty());
  ProcessorCheckpoint in = Sample();
  in.engine_state.assign(1 << 20, 's');
  ASSERT_TRUE(WriteCheckpointFile(path, in).ok());
  EXPECT_EQ(PeekCheckpointOffsets(path), in.offsets);
  std::ofstream(path, std::ios::trunc) << "garbage";
  EXPECT_TRUE(PeekCheckpointOffsets(path).empty());
}

// The file format of docs/formats/checkpoint.md, written out field by field (the encoder
// before the checkpoint was written in parts): the parts must give the same bytes.
std::string ReferenceEncoding(const std::vector<std::pair<uint32_t, uint64_t>>& offsets,
                              std::string_view state,
                              const std::vector<std::string_view>& readings) {
  auto u32 = [](std::string* o, uint32_t v) { o->append(reinterpret_cast<const char*>(&v), 4); };
  auto u64 = [](std::string* o, uint64_t v) { o->append(reinterpret_cast<const char*>(&v), 8); };
  std::string body;
  u32(&body, static_cast<uint32_t>(offsets.size()));
  for (const auto& [p, off] : offsets) {
    u32(&body, p);
    u64(&body, off);
  }
  u64(&body, state.size());
  body.append(state);
  u32(&body, static_cast<uint32_t>(readings.size()));
  for (std::string_view r : readings) {
    u64(&body, r.size());
    body.append(r);
  }
  std::string out = "JOULECKP";
  u32(&out, 1);
  u64(&out, body.size());
  u32(&out, crc32c::Mask(crc32c::Value(body)));
  return out + body;
}

TEST(ProcessorCheckpointTest, PartsGiveTheSameBytesAsOneBuffer) {
  CheckpointDir dir;
  const std::string path = dir.file;
  std::string state(1 << 20, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 131 + (i >> 9));
  const std::vector<std::pair<uint32_t, uint64_t>> offsets = {{0, 7}, {2, 1ull << 40}};
  std::string r1, r2;
  model::EncodeEvent(Sample().readings[0], &r1);
  model::Event e2 = Sample().readings[0];
  e2.device_id = std::string(200, 'd');
  model::EncodeEvent(e2, &r2);
  std::string scratch = "left over from an earlier checkpoint";
  for (const std::vector<std::string_view>& readings :
       {std::vector<std::string_view>{}, std::vector<std::string_view>{r1, r2}}) {
    for (std::string_view st : {std::string_view(), std::string_view(state)}) {
      const std::string want = ReferenceEncoding(offsets, st, readings);
      std::string one;
      EncodeCheckpointTo(offsets, st, readings, &one);
      EXPECT_EQ(one, want);
      auto size = WriteCheckpointParts(path, offsets, st, readings, &scratch);
      ASSERT_TRUE(size.ok());
      EXPECT_EQ(*size, want.size());
      std::ifstream in(path, std::ios::binary);
      std::stringstream file;
      file << in.rdbuf();
      EXPECT_TRUE(file.str() == want);
      auto read = ReadCheckpointFile(path);
      ASSERT_TRUE(read.ok());
      ASSERT_TRUE(read->has_value());
      EXPECT_EQ((*read)->offsets, offsets);
      EXPECT_TRUE((*read)->engine_state == st);
      EXPECT_EQ((*read)->readings.size(), readings.size());
    }
  }
}

// The engine state streamed into the file (WriteCheckpointStreamed) gives the same file as
// from one buffer; a state source that fails, or that writes more or less than it
// announced, leaves the file that was there.
struct Source {
  std::string_view state;
  size_t piece = 1000;
  int64_t lie = 0;  // added to the announced size
  bool fail = false;
  Status operator()(stream::StateSink& sink) const {
    JOULE_RETURN_IF_ERROR(sink.Begin(state.size() + lie));
    for (size_t at = 0; at < state.size(); at += piece) {
      if (fail && at > 0) return Status::IoError("disk full");
      JOULE_RETURN_IF_ERROR(sink.Write(state.substr(at, piece)));
    }
    return Status::Ok();
  }
};

TEST(ProcessorCheckpointTest, StreamedStateGivesTheSameFile) {
  CheckpointDir dir;
  const std::string path = dir.file;
  std::string state(300'000, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 7 + (i >> 11));
  const std::vector<std::pair<uint32_t, uint64_t>> offsets = {{1, 99}, {3, 12345}};
  std::string r1;
  model::EncodeEvent(Sample().readings[0], &r1);
  const std::vector<std::string_view> readings = {r1};
  std::string scratch;
  for (uint64_t replay : {uint64_t{0}, uint64_t{42}}) {
    for (size_t piece : {size_t{1} << 20, size_t{4096}, size_t{333}}) {
      std::string want;
      EncodeCheckpointTo(offsets, state, readings, &want, replay);
      auto size =
          WriteCheckpointStreamed(path, offsets, readings, &scratch, replay, Source{state, piece});
      ASSERT_TRUE(size.ok()) << size.status().ToString();
      EXPECT_EQ(*size, want.size());
      std::ifstream in(path, std::ios::binary);
      std::stringstream file;
      file << in.rdbuf();
      EXPECT_TRUE(file.str() == want) << piece;
      auto read = ReadCheckpointFile(path);
      ASSERT_TRUE(read.ok()) << read.status().ToString();
      ASSERT_TRUE(read->has_value());
      EXPECT_TRUE((*read)->engine_state == state);
      EXPECT_EQ((*read)->replay_applied, replay);
    }
  }
  std::string before;
  EncodeCheckpointTo(offsets, state, readings, &before);
  ASSERT_TRUE(WriteCheckpointParts(path, offsets, state, readings, &scratch).ok());
  for (Source bad :
       {Source{state, 1000, 0, true}, Source{state, 1000, 5}, Source{state, 1000, -5}}) {
    auto size = WriteCheckpointStreamed(path, offsets, readings, &scratch, 0, bad);
    EXPECT_FALSE(size.ok());
    std::ifstream in(path, std::ios::binary);
    std::stringstream file;
    file << in.rdbuf();
    EXPECT_TRUE(file.str() == before);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
}

}  // namespace
}  // namespace joule::app
