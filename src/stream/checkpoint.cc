// WindowEngine::SaveState / RestoreState — format in docs/formats/checkpoint.md.
#include "stream/engine_state.h"
#include "stream/window_engine.h"

namespace joule::stream {

Status WindowEngine::SaveState(std::string* out) const {
  out->clear();
  return Status::Internal("checkpoint not implemented yet");
}

Status WindowEngine::RestoreState(std::string_view) {
  return Status::Internal("checkpoint not implemented yet");
}

}  // namespace joule::stream
