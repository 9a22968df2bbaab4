#pragma once
// Minimal, strict flag parsing for the gearlab subcommands: `--name value` or `--name=value`,
// boolean `--name`. Unknown flags, missing values and malformed numbers are usage errors.
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace gear::cli {

// Misuse of the command line: printed as one line, exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct FlagSpec {
  std::string name;   // without dashes
  std::string value;  // placeholder shown in help ("" = boolean flag)
  std::string help;
  std::string fallback;  // default shown in help and returned when absent ("" = none)
};

class Args {
 public:
  Args(const std::string& command, std::vector<FlagSpec> specs, int argc, char** argv, int first);
  bool help_requested() const { return help_; }
  std::string help_text(const std::string& summary) const;

  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string str(const std::string& name) const;  // fallback if absent
  std::string required(const std::string& name) const;
  long long integer(const std::string& name, long long lo, long long hi) const;
  double number(const std::string& name, double lo, double hi) const;
  bool flag(const std::string& name) const { return has(name); }

 private:
  const FlagSpec& spec(const std::string& name) const;
  std::string command_;
  std::vector<FlagSpec> specs_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

}  // namespace gear::cli
