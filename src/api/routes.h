// The HTTP API of CONTRACT §3: parse, call a subsystem, encode. This is the one place
// where errors become HTTP statuses.
#pragma once

namespace joule::net {
class Router;
}

namespace joule::api {

struct ApiContext;

void AddTelemetryRoutes(net::Router& router, ApiContext& ctx);
void AddRealtimeRoutes(net::Router& router, ApiContext& ctx);
void AddOperationsRoutes(net::Router& router, ApiContext& ctx);
void AddHistoryRoutes(net::Router& router, ApiContext& ctx);
void AddHealthRoutes(net::Router& router, ApiContext& ctx);
void AddDeviceRoutes(net::Router& router, ApiContext& ctx);
void AddOwnerEnergyRoutes(net::Router& router, ApiContext& ctx);
void AddStreamRoutes(net::Router& router, ApiContext& ctx);
void AddRuleRoutes(net::Router& router, ApiContext& ctx);
void AddAlertRoutes(net::Router& router, ApiContext& ctx);
void AddAuditRoutes(net::Router& router, ApiContext& ctx);
void AddReplayRoutes(net::Router& router, ApiContext& ctx);

inline void AddAllRoutes(net::Router& router, ApiContext& ctx) {
  AddTelemetryRoutes(router, ctx);
  AddRealtimeRoutes(router, ctx);
  AddOperationsRoutes(router, ctx);
  AddHistoryRoutes(router, ctx);
  AddHealthRoutes(router, ctx);
  AddDeviceRoutes(router, ctx);
  AddOwnerEnergyRoutes(router, ctx);
  AddStreamRoutes(router, ctx);
  AddRuleRoutes(router, ctx);
  AddAlertRoutes(router, ctx);
  AddAuditRoutes(router, ctx);
  AddReplayRoutes(router, ctx);
}

}  // namespace joule::api
