#pragma once
// The report as PDF, drawn with Qt (QPdfWriter; the plots through QSvgRenderer, the tables through
// QTextDocument) from the same Document the HTML comes from. Built only where Qt 6 Gui + Svg are
// found (GEARLAB_HAVE_QT_PDF); elsewhere write_pdf throws and pdf_supported() is false.
#include <string>

#include "core/report/report.h"

namespace gear::report {

bool pdf_supported();
// A4 landscape. Without a running QGuiApplication (the CLI) one is made for the call, on the
// "offscreen" platform unless QT_QPA_PLATFORM says otherwise. Throws gear::Error naming the path.
void write_pdf(const Document& doc, const std::string& path);
void write_pdf(const ReportInputs& in, const std::string& path);

}  // namespace gear::report
