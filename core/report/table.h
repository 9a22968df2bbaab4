#pragma once
// A report table: what the HTML shows (formatted text) and what its CSV holds (raw values), cell by
// cell, so the two never disagree about rows and columns.
#include <string>
#include <vector>

namespace gear::report {

struct Cell {
  std::string text;        // shown in the HTML ("1.43x", "2.50 MiB")
  std::string raw;         // written to the CSV (exact number or the same text)
  bool numeric = false;    // right-aligned, tabular figures
};

Cell text_cell(const std::string& s);
Cell number_cell(double v, const std::string& shown);  // raw: up to 9 significant digits; NaN -> empty
Cell integer_cell(long long v, const std::string& shown);

struct Table {
  std::string id;      // file name of its CSV (<id>.csv): letters, digits, '-' and '_'
  std::string title;
  std::string note;    // one line under the title (units, what the ratios mean)
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
  bool collapsed = false;  // long detail tables start folded (<details>) in the HTML
};

// RFC 4180: comma-separated, fields with commas, quotes or newlines quoted, quotes doubled, CRLF-free.
std::string to_csv(const Table& t);
// The inverse (for tests and tools): rows of fields.
std::vector<std::vector<std::string>> parse_csv(const std::string& text);
// <table> with a header row; also the subset Qt's rich text understands (the PDF export uses it).
std::string table_html(const Table& t);

}  // namespace gear::report
