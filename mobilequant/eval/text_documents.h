// mobilequant/eval/text_documents.h
// Plain-text evaluation data: reading a text file (with errors that name it), splitting
// it into documents at separator lines, and the Python string semantics the evaluation
// protocols are defined by (str.strip(), re.split(r"\s+", s)), on UTF-8 bytes.
//
// Python's whitespace (str.isspace, the `\s` of a str regex) is Unicode whitespace, not
// just ASCII: U+0009..U+000D, U+001C..U+001F, U+0020, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. The helpers here use that set,
// so word counts and stripped documents match the Python reference byte for byte.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mq {

/// Reads a whole file as bytes; throws mq::Error naming `what` and the path when it is
/// missing, unreadable or empty.
std::string read_text_file(const std::string& path, const std::string& what = "data file");

/// Whether the Unicode code point `cp` is whitespace in Python's sense (str.isspace).
bool is_python_whitespace(char32_t cp);

/// Python's `s.strip()` (Unicode whitespace at both ends) on UTF-8 text.
std::string python_strip(const std::string& s);

/// `len(re.split(r"\s+", s))`: one more than the number of maximal whitespace runs, so a
/// leading or trailing run counts the empty piece Python returns there (lm-eval counts it).
int64_t count_split_words(const std::string& s);

/// Splits `text` into documents at lines whose stripped content equals `separator`
/// (e.g. "<|endoftext|>"); each document is stripped and empty documents are dropped.
/// "\r\n" line ends are accepted.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator);

}  // namespace mq
