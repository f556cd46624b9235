// MemberHandler: a net::Handler that calls a member function of a shared route object
// (DeviceRoutes, RuleRoutes, AlertRoutes), so each route registration is one line instead
// of a lambda that repeats the handler signature.
#pragma once

#include <memory>
#include <utility>

#include "net/router.h"

namespace joule::api {

template <typename Routes>
net::Handler MemberHandler(std::shared_ptr<Routes> routes,
                           void (Routes::*method)(net::HttpRequest&, net::Responder)) {
  return [routes = std::move(routes), method](net::HttpRequest& req, net::Responder r) {
    ((*routes).*method)(req, std::move(r));
  };
}

}  // namespace joule::api
