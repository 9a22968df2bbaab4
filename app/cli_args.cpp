#include "app/cli_args.h"

#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "core/util/parse.h"

namespace gear::cli {

Args::Args(const std::string& command, std::vector<FlagSpec> specs, int argc, char** argv, int first)
    : command_(command), specs_(std::move(specs)) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) throw UsageError(command_ + ": unexpected argument '" + a + "' (see --help)");
    std::string name = a.substr(2), value;
    const bool inline_value = name.find('=') != std::string::npos;
    if (inline_value) {
      value = name.substr(name.find('=') + 1);
      name = name.substr(0, name.find('='));
    }
    const FlagSpec& s = spec(name);
    if (s.value.empty()) {
      if (inline_value) throw UsageError(command_ + ": --" + name + " takes no value");
      value = "1";
    } else if (!inline_value) {
      if (i + 1 >= argc) throw UsageError(command_ + ": --" + name + " needs a value (" + s.value + ")");
      value = argv[++i];
    }
    if (values_.count(name)) throw UsageError(command_ + ": --" + name + " given twice");
    values_[name] = value;
  }
}

const FlagSpec& Args::spec(const std::string& name) const {
  for (const FlagSpec& s : specs_)
    if (s.name == name) return s;
  throw UsageError(command_ + ": unknown option --" + name + " (see gearlab " + command_ + " --help)");
}

std::string Args::str(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() ? it->second : spec(name).fallback;
}

std::string Args::required(const std::string& name) const {
  if (!has(name)) throw UsageError(command_ + ": --" + name + " is required (see --help)");
  return str(name);
}

long long Args::integer(const std::string& name, long long lo, long long hi) const {
  const std::string text = str(name);
  const std::optional<long long> parsed = parse_whole_integer(text);
  if (!parsed) throw UsageError(command_ + ": --" + name + " expects an integer, got '" + text + "'");
  const long long v = *parsed;
  if (v < lo || v > hi)
    throw UsageError(command_ + ": --" + name + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "], got " + text);
  return v;
}

double Args::number(const std::string& name, double lo, double hi) const {
  const std::string text = str(name);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v))
    throw UsageError(command_ + ": --" + name + " expects a number, got '" + text + "'");
  if (v < lo || v > hi) {
    std::ostringstream s;
    s << command_ << ": --" << name << " must be in [" << lo << ", " << hi << "], got " << text;
    throw UsageError(s.str());
  }
  return v;
}

std::string Args::help_text(const std::string& summary) const {
  std::ostringstream s;
  s << "usage: gearlab " << command_ << " [options]\n" << summary << "\n\noptions:\n";
  for (const FlagSpec& f : specs_) {
    std::string left = "  --" + f.name + (f.value.empty() ? "" : " " + f.value);
    if (left.size() < 28) left += std::string(28 - left.size(), ' ');
    s << left << " " << f.help;
    if (!f.fallback.empty()) s << " (default: " << f.fallback << ")";
    s << "\n";
  }
  s << "  --help                       show this help\n";
  return s.str();
}

}  // namespace gear::cli
