#include "api/device_known.h"

#include <vector>

#include "model/aggregate_record.h"
#include "store/history_store.h"
#include "store/latest_store.h"

namespace joule::api {

Result<bool> DeviceKnown(const ApiContext& ctx, const std::string& device_id) {
  stream::WindowEngine::DeviceHealth health;
  if (ctx.health && ctx.health(device_id, &health)) return true;
  bool latest_unsure = false;
  if (ctx.latest) {
    if (!ctx.latest_state || ctx.latest_state().usable()) {
      store::LatestSnapshot snap;
      Result<bool> found = ctx.latest->Get(device_id, 1, &snap);
      if (found.ok() && *found) return true;
      latest_unsure = !found.ok();
    } else {
      latest_unsure = true;
    }
  }
  if (ctx.history) {
    // The newest record of each resolution: a device whose minutes retention has dropped
    // keeps its hours and days.
    for (model::Resolution r :
         {model::Resolution::kBase, model::Resolution::kHour, model::Resolution::kDay}) {
      Result<std::vector<model::AggregateRecord>> records = ctx.history->Latest(device_id, r, 1);
      if (!records.ok()) return records.status();
      if (!records->empty()) return true;
    }
  }
  if (ctx.restoring && ctx.restoring()) {
    return Status::Unavailable(
        "starting: the devices' state is being restored (GET /readyz says when it is ready)");
  }
  if (latest_unsure) {
    return Status::Unavailable(
        "the latest store is down or catching up, and history holds nothing for this device "
        "yet");
  }
  return false;
}

}  // namespace joule::api
