#include "net/http_message.h"

#include "common/json_writer.h"

namespace joule::net {

namespace {

const std::string* FindPair(const HttpHeaders& pairs, std::string_view name) {
  for (const auto& [key, value] : pairs) {
    if (key == name) return &value;
  }
  return nullptr;
}

}  // namespace

const std::string* HttpRequest::Header(std::string_view lower_name) const {
  return FindPair(headers, lower_name);
}

const std::string* HttpRequest::Query(std::string_view name) const { return FindPair(query, name); }

const std::string* HttpRequest::PathParam(std::string_view name) const {
  auto it = path_params.find(std::string(name));
  return it == path_params.end() ? nullptr : &it->second;
}

HttpResponse HttpResponse::Json(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Text(int status, std::string body, std::string_view content_type) {
  HttpResponse r;
  r.status = status;
  r.content_type = content_type;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Error(int status, std::string_view code, std::string_view message) {
  JsonWriter w;
  w.BeginObject();
  w.Key("error");
  w.BeginObject();
  w.Key("code");
  w.String(code);
  w.Key("message");
  w.String(message);
  w.EndObject();
  w.EndObject();
  return Json(status, w.Take());
}

}  // namespace joule::net
