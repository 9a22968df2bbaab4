#pragma once
// The table `gearlab eval` and `gearlab sweep` print: one line per method.
#include <string>

#include "core/eval/evaluate.h"

namespace gear {

std::string format_table(const EvalRun& run);

}  // namespace gear
