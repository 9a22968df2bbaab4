#pragma once
// Human-readable quantities for tables and logs (the raw numbers always go to JSON).
#include <cstdint>
#include <string>

namespace gear {

std::string format_bytes(int64_t bytes);  // "512 B", "1.50 KiB", "13.48 GiB"

}  // namespace gear
