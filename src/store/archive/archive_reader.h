// Reading the raw archive (docs/formats/archive.md): decompress published files, parse
// their rows back into Events. Used by `joule replay` and `joule export`.
// Thread-safety: the functions share no state; call them from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/event.h"
#include "store/archive/archive_layout.h"

namespace joule::store {

// Calls `fn` for every line (without the '\n') of one .ndjson.zst file, in order.
// Corruption when the file is not a complete zstd stream.
Status ReadArchiveFile(const std::string& path,
                       const std::function<Status(std::string_view line)>& fn);

// Parses one archive row (the canonical JSON of model::EventToJson) back into an Event;
// meta keeps its exact JSON text. InvalidArgument for anything else.
Status ParseArchiveRow(std::string_view row, model::Event* event);

// Every archived event with from_ns <= timestamp < to_ns, hour by hour, and within an hour
// in commit order (file sequence, then row). `fn` gets the event and its row text.
// `on_file` (optional) is told of each file before it is read, for progress reports.
Status ScanArchive(
    const std::string& root, int64_t from_ns, int64_t to_ns,
    const std::function<Status(const model::Event& event, std::string_view row)>& fn,
    const std::function<void(const ArchiveFile& file, size_t index, size_t total)>& on_file = {});

}  // namespace joule::store
