// gearlab report: eval / bench / analysis JSON files in, one self-contained HTML report, a CSV per
// table and optionally a PDF out.
#include <algorithm>
#include <filesystem>
#include <iostream>

#include "app/cli_args.h"
#include "app/commands.h"
#include "app/pdf_export.h"
#include "core/report/report.h"

namespace gear::cli {
namespace {

std::vector<FlagSpec> report_flags() {
  return {
      {"output", "FILE", "the HTML report (also -o FILE)", ""},
      {"csv-dir", "DIR", "where the tables' CSV files go (default: beside the HTML)", ""},
      {"pdf", "FILE", "also render the report as PDF (needs a build with Qt 6)", ""},
      {"no-csv", "", "write no CSV files", ""},
  };
}

// Separates the input files (positional) from the flags, which Args parses; -o is --output.
std::vector<std::string> split_arguments(int argc, char** argv, std::vector<std::string>& flags) {
  const std::vector<FlagSpec> specs = report_flags();
  std::vector<std::string> files;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o") a = "--output";
    if (a.rfind("-", 0) != 0 || a == "-") {
      files.push_back(a);
      continue;
    }
    flags.push_back(a);
    const std::string name = a.substr(2);
    const bool takes_value = std::any_of(specs.begin(), specs.end(), [&](const FlagSpec& s) { return s.name == name && !s.value.empty(); });
    if (takes_value && i + 1 < argc) flags.push_back(argv[++i]);
  }
  return files;
}

}  // namespace

int cmd_report(int argc, char** argv) {
  std::vector<std::string> flag_args;
  const std::vector<std::string> files = split_arguments(argc, argv, flag_args);
  std::vector<char*> av = {argv[0], argv[1]};
  for (std::string& s : flag_args) av.push_back(s.data());
  Args args("report", report_flags(), int(av.size()), av.data(), 2);
  if (args.help_requested()) {
    std::cout << "usage: gearlab report RESULTS.json... -o report.html [--csv-dir DIR] [--pdf FILE]\n"
              << args.help_text(
                     "Reads any mix of `gearlab eval`, `bench` and `analyze --json` results and writes one HTML file "
                     "(inline SVG plots and CSS, no scripts, no network): per-layer errors by component, residual "
                     "spectra, the quality-vs-compression Pareto plot, throughput and peak memory vs FP16, summary "
                     "tables; a CSV per table; and with --pdf the same report as PDF.");
    return 0;
  }
  if (files.empty()) throw UsageError("report: no input files (give eval, bench or analysis JSON files; see --help)");
  if (!args.has("output") && !args.has("pdf")) throw UsageError("report: give -o FILE.html and/or --pdf FILE.pdf");
  if (args.has("pdf") && !report::pdf_supported())
    throw UsageError("report: this build has no PDF support (Qt 6 not found)");

  const report::ReportInputs in = report::load_report_inputs(files);
  const report::Document doc = report::build_document(in);
  if (args.has("output")) {
    const std::string html = args.str("output");
    report::write_file(html, report::render_html(doc));
    std::cerr << "wrote " << html << "\n";
    if (!args.flag("no-csv")) {
      const std::filesystem::path beside = std::filesystem::path(html).parent_path();
      const std::string dir = args.has("csv-dir") ? args.str("csv-dir") : beside.string();
      const std::vector<std::string> csvs = report::write_csvs(doc, dir);
      std::cerr << "wrote " << csvs.size() << " CSV files to " << (dir.empty() ? "." : dir) << "\n";
    }
  } else if (args.has("csv-dir") && !args.flag("no-csv")) {
    const std::vector<std::string> csvs = report::write_csvs(doc, args.str("csv-dir"));
    std::cerr << "wrote " << csvs.size() << " CSV files to " << args.str("csv-dir") << "\n";
  }
  if (args.has("pdf")) {
    report::write_pdf(doc, args.str("pdf"));
    std::cerr << "wrote " << args.str("pdf") << "\n";
  }
  return 0;
}

}  // namespace gear::cli
