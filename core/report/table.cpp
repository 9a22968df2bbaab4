#include "core/report/table.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "core/report/svg.h"

namespace gear::report {
namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

}  // namespace

Cell text_cell(const std::string& s) { return {s, s, false}; }

Cell number_cell(double v, const std::string& shown) {
  if (!std::isfinite(v)) return {shown.empty() ? "n/a" : shown, "", true};
  return {shown, svg::format_printf("%.9g", v), true};
}

Cell integer_cell(long long v, const std::string& shown) { return {shown, std::to_string(v), true}; }

std::string to_csv(const Table& t) {
  std::ostringstream s;
  for (size_t i = 0; i < t.columns.size(); ++i) s << (i ? "," : "") << csv_field(t.columns[i]);
  s << "\n";
  for (const auto& row : t.rows) {
    for (size_t i = 0; i < row.size(); ++i) s << (i ? "," : "") << csv_field(row[i].raw);
    s << "\n";
  }
  return s.str();
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (ch == '"') quoted = false;
      else field += ch;
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      row.push_back(field), field.clear();
    } else if (ch == '\n') {
      row.push_back(field), field.clear();
      rows.push_back(row), row.clear();
      any = false;
      continue;
    } else if (ch != '\r') {
      field += ch;
    }
    any = true;
  }
  if (any) row.push_back(field), rows.push_back(row);
  return rows;
}

std::string table_html(const Table& t) {
  std::ostringstream s;
  s << "<table id=\"table-" << svg::escape(t.id) << "\">\n<thead><tr>";
  for (const auto& c : t.columns) s << "<th>" << svg::escape(c) << "</th>";
  s << "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    s << "<tr>";
    for (const Cell& c : row) {
      s << (c.numeric ? "<td class=\"num\" align=\"right\"" : "<td");
      if (c.numeric && !c.raw.empty() && c.raw != c.text) s << " title=\"" << svg::escape(c.raw) << "\"";
      s << ">" << svg::escape(c.text) << "</td>";
    }
    s << "</tr>\n";
  }
  s << "</tbody>\n</table>\n";
  return s.str();
}

}  // namespace gear::report
