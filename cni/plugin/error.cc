#include "plugin/error.h"

#include <nlohmann/json.hpp>

namespace remora::cni {

std::string errorJson(const CniError& error, std::string_view cni_version) {
  nlohmann::ordered_json j;
  j["cniVersion"] = std::string(cni_version);
  j["code"] = static_cast<uint32_t>(error.code);
  j["msg"] = error.msg;
  if (!error.details.empty()) j["details"] = error.details;
  // Messages may quote bytes from stdin; replace invalid UTF-8 rather than throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace remora::cni
