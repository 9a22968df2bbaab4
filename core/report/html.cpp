// render_html and the CSV/file writers.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/report/report.h"
#include "core/report/svg.h"
#include "core/util/error.h"

namespace gear::report {
namespace {

using svg::escape;

// Inline, so the file needs nothing else; the plots carry their own colours (svg.h).
const char* kCss = R"(
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa; --card: #ffffff; --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.55 Inter, "Segoe UI", "Helvetica Neue", Helvetica, Arial, sans-serif; }
header { background: #1f2933; color: #f5f7fa; padding: 28px 0 16px; }
.wrap, main, footer { max-width: 1120px; margin: 0 auto; padding: 0 24px; }
h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
.meta { color: #cbd2d9; margin: 0 0 14px; font-size: 13px; }
nav a { color: #f5f7fa; text-decoration: none; margin-right: 18px; font-size: 13px; border-bottom: 1px solid transparent; }
nav a:hover { border-color: #f5f7fa; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 22px 26px;
  margin: 24px 0; box-shadow: 0 1px 2px rgba(31, 41, 51, 0.05); }
h2 { font-size: 20px; margin: 0 0 6px; letter-spacing: -0.005em; }
h3 { font-size: 15px; margin: 22px 0 2px; }
.intro { color: var(--muted); max-width: 80ch; margin: 0 0 8px; }
.note { color: var(--muted); font-size: 13px; margin: 0 0 8px; max-width: 100ch; }
figure { margin: 20px 0 6px; }
figure svg { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; max-width: 100ch; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; width: 100%; font-variant-numeric: tabular-nums; }
th { text-align: left; font-weight: 600; color: var(--muted); border-bottom: 2px solid var(--line); padding: 6px 10px;
  white-space: nowrap; }
td { padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef2f7; }
details > summary { cursor: pointer; font-weight: 600; margin: 18px 0 6px; }
footer { color: var(--muted); font-size: 12px; padding-bottom: 40px; }
@media print { body { background: #fff; } header { background: #fff; color: #000; } nav { display: none; }
  section { box-shadow: none; border: none; break-inside: avoid-page; } }
)";

void render_table(std::ostringstream& s, const Table& t) {
  if (t.collapsed) s << "<details>\n<summary>" << escape(t.title) << "</summary>\n";
  else s << "<h3>" << escape(t.title) << "</h3>\n";
  if (!t.note.empty()) s << "<p class=\"note\">" << escape(t.note) << " (CSV: " << escape(t.id) << ".csv)</p>\n";
  s << "<div class=\"scroll\">\n" << table_html(t) << "</div>\n";
  if (t.collapsed) s << "</details>\n";
}

void render_section(std::ostringstream& s, const Section& sec) {
  s << "<section id=\"" << escape(sec.id) << "\">\n<h2>" << escape(sec.title) << "</h2>\n";
  if (!sec.intro.empty()) s << "<p class=\"intro\">" << escape(sec.intro) << "</p>\n";
  for (const Figure& f : sec.figures)
    s << "<figure>\n" << f.svg << "<figcaption>" << escape(f.caption) << "</figcaption>\n</figure>\n";
  for (const Table& t : sec.tables) render_table(s, t);
  s << "</section>\n";
}

}  // namespace

std::string render_html(const Document& doc) {
  std::ostringstream s;
  s << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
    << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n<title>" << escape(doc.title)
    << "</title>\n<style>" << kCss << "</style>\n</head>\n<body>\n<header>\n<div class=\"wrap\">\n<h1>"
    << escape(doc.title) << "</h1>\n<p class=\"meta\">Generated " << escape(doc.generated_utc)
    << " by gearlab report · self-contained: no scripts, no network</p>\n<nav>";
  for (const Section& sec : doc.sections) s << "<a href=\"#" << escape(sec.id) << "\">" << escape(sec.title) << "</a>";
  s << "</nav>\n</div>\n</header>\n<main>\n";
  for (const Section& sec : doc.sections) render_section(s, sec);
  s << "</main>\n<footer>GEAR Lab · KV-cache compression benchmarks. Hover any bar or point for its exact value.</footer>\n"
    << "</body>\n</html>\n";
  return s.str();
}

std::string render_html(const ReportInputs& in) { return render_html(build_document(in)); }

void write_file(const std::string& path, const std::string& text) {
  const std::filesystem::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
  std::ofstream out(path, std::ios::binary);
  require(bool(out), path + ": cannot write" + (ec ? " (" + ec.message() + ")" : ""));
  out << text;
  out.close();
  require(bool(out), path + ": write failed");
}

std::vector<std::string> write_csvs(const Document& doc, const std::string& dir) {
  std::vector<std::string> paths;
  std::set<std::string> seen;
  for (const Table* t : doc.tables()) {
    require(seen.insert(t->id).second, "report: two tables share the id " + t->id);
    const std::string path = (std::filesystem::path(dir.empty() ? "." : dir) / (t->id + ".csv")).string();
    write_file(path, to_csv(*t));
    paths.push_back(path);
  }
  return paths;
}

std::vector<std::string> write_csvs(const ReportInputs& in, const std::string& dir) {
  return write_csvs(build_document(in), dir);
}

}  // namespace gear::report
