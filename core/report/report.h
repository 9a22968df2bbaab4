#pragma once
// The comparison report: eval / bench / analysis JSON in, one self-contained HTML file (inline SVG
// and CSS, no scripts, no network), a CSV per table, and (app/pdf_export.h) the same as PDF.
// `gearlab report` and the desktop app's export button both go through these calls:
//
//   ReportInputs in = load_report_inputs(paths);   // inputs.h: validates every file
//   write_file(out, render_html(in));
//   write_csvs(in, dir);
//   write_pdf(in, path);                           // app/pdf_export.h, where Qt is available
#include <string>
#include <vector>

#include "core/report/inputs.h"
#include "core/report/table.h"

namespace gear::report {

struct Figure {
  std::string svg;      // one <svg> element
  std::string caption;  // plain text
};

struct Section {
  std::string id, title, intro;  // intro: plain text
  std::vector<Figure> figures;
  std::vector<Table> tables;
};

// The report's content, independent of the output format.
struct Document {
  std::string title, generated_utc;
  std::vector<Section> sections;
  std::vector<const Table*> tables() const;  // every table, in order
};

Document build_document(const ReportInputs& in);

std::string render_html(const Document& doc);
std::string render_html(const ReportInputs& in);
// Writes <dir>/<table id>.csv for every table (creating dir); returns the paths written.
std::vector<std::string> write_csvs(const ReportInputs& in, const std::string& dir);
std::vector<std::string> write_csvs(const Document& doc, const std::string& dir);
// Writes `text` to `path`, creating its folder; a gear::Error naming the path when it cannot.
void write_file(const std::string& path, const std::string& text);

}  // namespace gear::report
