// The report: inputs read back from small JSON fixtures, well-formed self-contained HTML with every
// plot, CSVs that parse back to the tables, and one clear line for every kind of bad input.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/report/charts.h"
#include "core/report/report.h"
#include "core/report/svg.h"
#include "core/util/error.h"
#include "test_paths.h"

namespace {

using namespace gear::report;

std::string fixture(const std::string& name) { return std::string(GEARLAB_SOURCE_DIR) + "/tests/report/fixtures/" + name; }

std::vector<std::string> all_fixtures() {
  return {fixture("eval_small.json"), fixture("bench_small.json"), fixture("analysis_small.json")};
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A tiny XML-ish checker: every tag closes in order (void elements must be written <x/>), attributes
// are quoted, and no raw '<' or '&' hides in text. Returns "" or the first problem.
std::string check_well_formed(const std::string& doc) {
  std::vector<std::string> open;
  size_t i = 0;
  while (i < doc.size()) {
    if (doc[i] == '&') {
      const size_t semi = doc.find(';', i);
      if (semi == std::string::npos || semi - i > 8) return "bare & at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (doc[i] != '<') {
      ++i;
      continue;
    }
    const size_t end = doc.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    const std::string tag = doc.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.rfind("!DOCTYPE", 0) == 0) continue;
    if (open.size() && open.back() == "style" && tag != "/style") return "tag inside <style>";
    if (tag.empty() || tag[0] == ' ') return "raw < in text";
    if (tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1)) return "</" + tag.substr(1) + "> closes <" + (open.empty() ? "" : open.back()) + ">";
      open.pop_back();
      continue;
    }
    if (count(tag, "\"") % 2) return "unbalanced quotes in <" + tag + ">";
    if (tag.back() == '/') continue;
    const std::string name = tag.substr(0, tag.find_first_of(" \n"));
    if (name == "meta" || name == "br" || name == "link" || name == "img") return "void element <" + name + "> not self-closed";
    open.push_back(name);
    if (name == "style") {  // CSS may hold '>' and '&': skip to its end tag
      const size_t close = doc.find("</style>", i);
      if (close == std::string::npos) return "unclosed <style>";
      i = close;
    }
  }
  return open.empty() ? "" : "<" + open.back() + "> never closed";
}

std::vector<std::string> svg_elements(const std::string& html) {
  std::vector<std::string> out;
  for (size_t at = html.find("<svg "); at != std::string::npos; at = html.find("<svg ", at + 1))
    out.push_back(html.substr(at, html.find("</svg>", at) + 6 - at));
  return out;
}

std::string error_of(const std::vector<std::string>& paths) {
  try {
    load_report_inputs(paths);
  } catch (const gear::Error& e) {
    return e.what();
  }
  return "";
}

std::string write_scratch(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("report: fixtures load into the report's structs", "[report]") {
  const ReportInputs in = load_report_inputs(all_fixtures());
  REQUIRE(in.evals.size() == 1);
  REQUIRE(in.benches.size() == 1);
  REQUIRE(in.analyses.size() == 2);  // the eval's embedded gear-kivi-2 + the standalone gear-kcvt-4
  CHECK(in.evals[0].methods.size() == 6);
  CHECK(in.evals[0].methods[2].has_analysis);
  CHECK(in.evals[0].methods[1].divergence.size() == 2);
  CHECK(in.analyses[0].name == "gear-kivi-2");
  CHECK(in.analyses[0].source == fixture("eval_small.json") + ": methods[2].analysis");
  CHECK(in.analyses[1].name == "gear-kcvt-4");
  CHECK(in.analyses[1].layers.size() == 3);
  CHECK(in.analyses[1].layers[2].k.head_spectra.size() == 2);
  CHECK(in.analyses[1].layers[2].k.rank == 4);
  CHECK(in.benches[0].results.size() == 7);
  CHECK_FALSE(in.benches[0].results.back().fits);
  CHECK(in.benches[0].budget.size() == 3);
  CHECK(in.benches[0].generated_weights);
  CHECK_THAT(in.benches[0].environment, Catch::Contains("Fixture CPU"));
}

TEST_CASE("report: HTML is well formed, self-contained and has every plot with titles", "[report]") {
  const std::string html = render_html(load_report_inputs(all_fixtures()));
  INFO(html.substr(0, 400));
  CHECK(check_well_formed(html).empty());
  INFO(check_well_formed(html));
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(count(html, "<script") == 0);
  CHECK(count(html, "http") == count(html, "xmlns=\"http://www.w3.org/2000/svg\""));  // no network
  const std::vector<std::string> svgs = svg_elements(html);
  // Pareto 1 + bench (throughput, memory, budget) 3 + 2 analyses x (K, V errors + K, V spectra) 8.
  CHECK(svgs.size() == 12);
  CHECK(count(html, "<svg ") == count(html, "</svg>"));
  for (const std::string& s : svgs) {
    CHECK(check_well_formed(s).empty());
    CHECK_THAT(s, Catch::Contains("viewBox=\"0 0 "));
    const std::regex title("^<svg [^>]*>\\n<title>[^<]+</title>");
    CHECK(std::regex_search(s, title));
  }
  for (const char* title : {"Quality vs compression", "Decode throughput, gen:fixture-shape (GENERATED weights)",
                            "Peak memory, gen:fixture-shape", "Throughput at a memory budget",
                            "gear-kivi-2: K error per layer by component", "gear-kcvt-4: V error per layer by component",
                            "gear-kcvt-4: K residual spectrum", "gear-kivi-2: V residual spectrum"})
    CHECK_THAT(html, Catch::Contains(std::string("<title>") + title));
  // Tooltips carry exact values; text from the files is escaped.
  CHECK_THAT(html, Catch::Contains("<title>kivi-2, batch 8, context 128: "));
  CHECK_THAT(html, Catch::Contains("layer 2 K, quant-only (Q): 0.042"));
  CHECK_THAT(html, Catch::Contains("rank 4"));
  CHECK_THAT(html, Catch::Contains("out of memory"));
  for (const char* section : {"id=\"summary\"", "id=\"quality\"", "id=\"performance\"", "id=\"errors\"", "id=\"spectra\""})
    CHECK_THAT(html, Catch::Contains(section));
}

TEST_CASE("report: every table's CSV parses back to the same rows and columns", "[report]") {
  const ReportInputs in = load_report_inputs(all_fixtures());
  const Document doc = build_document(in);
  const std::string dir = gear::test::scratch_dir("report-csv");
  const std::vector<std::string> paths = write_csvs(doc, dir);
  const std::vector<const Table*> tables = doc.tables();
  REQUIRE(paths.size() == tables.size());
  REQUIRE(tables.size() == 7);  // inputs, quality, throughput, budget, compression, 2 per-layer
  const std::string html = render_html(doc);
  for (size_t i = 0; i < tables.size(); ++i) {
    const Table& t = *tables[i];
    INFO(t.id);
    CHECK(paths[i] == dir + "/" + t.id + ".csv");
    const auto rows = parse_csv(slurp(paths[i]));
    REQUIRE(rows.size() == t.rows.size() + 1);
    CHECK(rows[0] == t.columns);
    for (size_t r = 0; r < t.rows.size(); ++r) {
      REQUIRE(rows[r + 1].size() == t.columns.size());
      for (size_t c = 0; c < t.columns.size(); ++c) CHECK(rows[r + 1][c] == t.rows[r][c].raw);
    }
    // The HTML table has the same shape.
    const size_t at = html.find("<table id=\"table-" + t.id + "\"");
    REQUIRE(at != std::string::npos);
    const std::string table = html.substr(at, html.find("</table>", at) - at);
    CHECK(count(table, "<tr>") == int(t.rows.size()) + 1);
    CHECK(count(table, "<th>") == int(t.columns.size()));
  }
  // Exact values, not the rounded text, go to the CSV.
  const auto quality = parse_csv(slurp(dir + "/quality.csv"));
  CHECK(quality[0][3] == "perplexity");
  CHECK(quality[2][1] == "kivi-2");
  CHECK(std::stod(quality[2][3]) == Approx(10.9));
}

TEST_CASE("report: CSV quoting survives commas, quotes and newlines", "[report]") {
  Table t{"t", "T", "", {"a", "b,c", "d\"e"}, {}, false};
  t.rows.push_back({text_cell("x, y"), text_cell("say \"hi\""), text_cell("two\nlines")});
  t.rows.push_back({text_cell(""), number_cell(1.5, "1.50"), integer_cell(-3, "-3")});
  const auto rows = parse_csv(to_csv(t));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == t.columns);
  CHECK(rows[1] == std::vector<std::string>{"x, y", "say \"hi\"", "two\nlines"});
  CHECK(rows[2] == std::vector<std::string>{"", "1.5", "-3"});
}

TEST_CASE("report: bad inputs give one clear line naming the file and the problem", "[report]") {
  const std::string dir = gear::test::scratch_dir("report-bad");
  nlohmann::json eval = nlohmann::json::parse(slurp(fixture("eval_small.json")));
  auto variant = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = eval;
    edit(j);
    return write_scratch(dir, name, j.dump());
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {dir + "/missing.json", "missing.json: cannot open"},
      {write_scratch(dir, "empty.json", ""), "empty.json: empty file"},
      {write_scratch(dir, "text.json", "perplexity = 3\n"), "text.json: not valid JSON (parse error at line 1"},
      {write_scratch(dir, "array.json", "[1, 2]"), "array.json: expected an object, got an array"},
      {write_scratch(dir, "nokind.json", "{\"benchmark\": \"decode\"}"), "nokind.json: no \"kind\" key"},
      {variant("kind.json", [](auto& j) { j["kind"] = "sweep"; }), "kind.json: unknown kind \"sweep\" (expected eval, bench or analysis)"},
      {variant("kindtype.json", [](auto& j) { j["kind"] = 3; }), "kindtype.json: \"kind\" must be a string, got a number"},
      {variant("noppl.json", [](auto& j) { j["methods"][1].erase("perplexity"); }),
       "noppl.json: methods[1]: missing key \"perplexity\""},
      {variant("tokens.json", [](auto& j) { j["tokens"] = "many"; }), "tokens.json: \"tokens\" must be an integer, got a string"},
      {variant("methods.json", [](auto& j) { j["methods"] = nlohmann::json::object(); }),
       "methods.json: \"methods\" must be an array, got an object"},
      {variant("nomethods.json", [](auto& j) { j["methods"] = nlohmann::json::array(); }), "nomethods.json: \"methods\" is empty"},
      {variant("layers.json", [](auto& j) { j["methods"][2]["analysis"]["layers"][1]["k"]["error"]["gear"] = "low"; }),
       "layers.json: methods[2].analysis.layers[1].k.error: \"gear\" must be a number, got a string"},
      {variant("spectrum.json", [](auto& j) { j["methods"][2]["analysis"]["layers"][0]["v"]["heads"][1]["spectrum"][2] = true; }),
       "spectrum.json: methods[2].analysis.layers[0].v.heads[1]: \"spectrum\"[2] must be a number, got a boolean"},
  };
  for (const auto& [path, message] : cases) {
    const std::string e = error_of({fixture("bench_small.json"), path});
    INFO(path << " -> " << e);
    CHECK_THAT(e, Catch::Contains(message));
    CHECK(e.find('\n') == std::string::npos);
  }
  // A bad bench row names its index too.
  nlohmann::json bench = nlohmann::json::parse(slurp(fixture("bench_small.json")));
  bench["results"][3]["peak_bytes"] = nullptr;
  CHECK_THAT(error_of({write_scratch(dir, "bench.json", bench.dump())}),
             Catch::Contains("bench.json: results[3]: \"peak_bytes\" must be an integer, got null"));
  CHECK_THAT(error_of({}), Catch::Contains("report: no input files"));
}

TEST_CASE("report: null metrics (NaN in the writer) read as missing, shown as n/a", "[report]") {
  nlohmann::json j = nlohmann::json::parse(slurp(fixture("eval_small.json")));
  j["methods"][3]["perplexity"] = nullptr;
  ReportInputs in;
  add_report_input(in, j, "nan.json");
  CHECK(std::isnan(in.evals[0].methods[3].perplexity));
  const std::string html = render_html(in);
  CHECK(check_well_formed(html).empty());
  CHECK_THAT(html, Catch::Contains("n/a"));
}

TEST_CASE("report: Pareto front keeps the points nobody beats on both axes", "[report]") {
  // (compression, perplexity increase): larger x and smaller y are better.
  const std::vector<std::pair<double, double>> pts = {{1, 0}, {4, 1}, {3, 2}, {6, 10}, {5, 20}, {6, 12}, {2, 0}, {NAN, 0}};
  CHECK(pareto_front(pts) == std::vector<size_t>{6, 1, 3});
  CHECK(pareto_front({}).empty());
}

TEST_CASE("svg: ticks, scales and escaping", "[report]") {
  using namespace gear::report::svg;
  CHECK(linear_ticks(0, 3.4, 5) == std::vector<double>{0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5});
  CHECK(linear_ticks(0, 0, 5).size() >= 2);
  CHECK(log_ticks(0.3, 40) == std::vector<double>{0.1, 1, 10, 100});
  CHECK(log_ticks(2, 9) == std::vector<double>{1, 2, 5, 10});
  CHECK(symlog_ticks(0, 4600) == std::vector<double>{0, 1, 10, 100, 1000, 10000});
  CHECK(symlog_ticks(-0.5, 3) == std::vector<double>{-1, 0, 1, 10});
  const Scale s{0, 10, 100, 200, false, false};
  CHECK(s(5) == Approx(150));
  const Scale l{1, 100, 0, 100, true, false};
  CHECK(l(10) == Approx(50));
  CHECK(escape("<a href=\"x\">Tom & Jerry's</a>") == "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
  CHECK(format_number(3500) == "3.5k");
  CHECK(format_number(0.0123) == "0.0123");
  CHECK(format_number(2e-5) == "2e-5");
  Canvas c(100, 50, "a <b> & c");
  c.text(1, 2, "x < y");
  c.rect(0, 0, 10, 10, "#fff", "tip \"quoted\"");
  const std::string out = c.str();
  CHECK(check_well_formed(out).empty());
  CHECK_THAT(out, Catch::Contains("<title>a &lt;b&gt; &amp; c</title>"));
  CHECK_THAT(out, Catch::Contains("<title>tip &quot;quoted&quot;</title></rect>"));
}
