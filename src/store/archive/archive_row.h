// AppendArchiveRow: one raw-archive row — the canonical JSON of an event
// (model::EventToJson, docs/formats/archive.md) followed by '\n' — appended to a buffer.
// The archiver writes every ingested event, so this is the hot path of archiving: the
// bytes are identical to EventToJson's (archive_row_test checks it), built without a
// JsonWriter, temporaries or per-event allocations (once `out` has grown).
#pragma once

#include <string>

#include "model/event.h"

namespace joule::store {

void AppendArchiveRow(const model::Event& event, std::string* out);

}  // namespace joule::store
