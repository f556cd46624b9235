#include "web/embedded_assets.h"

namespace joule::web {

const EmbeddedAsset* FindEmbeddedAsset(std::string_view path) {
  // A handful of files: a linear scan is as fast as a map.
  for (const EmbeddedAsset& a : EmbeddedAssets()) {
    if (path == a.path) return &a;
  }
  return nullptr;
}

}  // namespace joule::web
