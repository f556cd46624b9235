// Text in CSV that a spreadsheet would run as a formula ("CSV injection", OWASP): a cell
// that starts with = + - @ TAB or CR is written with a leading apostrophe, which
// spreadsheets read as "this is text" and do not show. So is a cell that starts with an
// apostrophe, so that reading drops exactly one again: CsvTextGuarded / CsvTextUnguarded
// are inverse, and `joule devices import` of a `joule devices export` gets every value
// back as it was (docs/SECURITY.md, "CSV files"). Found by a black-box test: a device
// name "=HYPERLINK(…)" set with an owner key, or an event_id sent by a device, came out
// as a live formula.
#pragma once

#include <string>
#include <string_view>

namespace joule {

inline bool CsvTextNeedsGuard(std::string_view s) {
  if (s.empty()) return false;
  switch (s.front()) {
    case '=':
    case '+':
    case '-':
    case '@':
    case '\t':
    case '\r':
    case '\'':
      return true;
    default:
      return false;
  }
}

// `s` as a spreadsheet takes it for text (before any quoting).
inline std::string CsvTextGuarded(std::string_view s) {
  return CsvTextNeedsGuard(s) ? "'" + std::string(s) : std::string(s);
}

// A field read back: one leading apostrophe dropped.
inline std::string_view CsvTextUnguarded(std::string_view field) {
  if (!field.empty() && field.front() == '\'') field.remove_prefix(1);
  return field;
}

}  // namespace joule
