#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "intercept/options.h"

namespace remora::intercept {

// Every interception option by its flag name (without "--"), with its REMORA_* environment form,
// so remora-init's flags, its environment and remora-cni's JSON keys share one table.
struct OptionSpec {
  std::string flag;   // "proxy-uid"
  std::string env;    // "REMORA_PROXY_UID"
  std::string help;
  std::string default_text;
};
const std::vector<OptionSpec>& optionSpecs();

// Sets one option from its textual value. Errors name the option and what is wrong with the
// value; `options` is unchanged on error.
Result<void> setOption(InterceptOptions& options, std::string_view flag, std::string_view value);

}  // namespace remora::intercept
