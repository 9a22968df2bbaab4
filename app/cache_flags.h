#pragma once
// The KV-cache flags shared by generate, analyze (and later eval / bench): every setting of
// CacheConfig by its set_option() name, plus --cache-json FILE.
#include <vector>

#include "app/cli_args.h"
#include "core/compression/cache_config.h"

namespace gear::cli {

std::vector<FlagSpec> cache_flags();

// --cache (a method or preset; default gear-kivi-2) or --cache-json first, then every other cache
// flag given, in a fixed order. Invalid values throw gear::Error naming the setting.
CacheConfig cache_config(const Args& args);

}  // namespace gear::cli
