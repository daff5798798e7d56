// mobilequant/eval/wikitext.cpp
// lm-eval v0.3's WikiText documents and detokenizer, re-expressed as byte-string passes.
// Every pattern is ASCII except " ° " (U+00B0, bytes C2 B0), so replacing UTF-8 bytes gives
// the same result as Python's replacements on code points.
#include "mobilequant/eval/wikitext.h"

#include <cctype>

#include "mobilequant/eval/text_documents.h"

namespace mq {

namespace {

/// Python's str.replace(from, to): every non-overlapping occurrence, left to right.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

/// re.sub(r"<open>\s*([^<close>]*?)\s*<close>", r"<open>\1<close>", s): every <open> that
/// has a later <close> is paired with the first one, and the text between is stripped of
/// (Unicode) whitespace at both ends; the scan resumes after the <close>.
std::string strip_inside_pairs(const std::string& s, char open, char close) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = s.find(open, pos);
    if (start == std::string::npos) break;
    const size_t end = s.find(close, start + 1);
    if (end == std::string::npos) break;  // no later <close>: no further match exists
    out.append(s, pos, start - pos);
    out += open;
    out += python_strip(s.substr(start + 1, end - start - 1));
    out += close;
    pos = end + 1;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

/// re.sub(r"/' [0-9]/", r"/'[0-9]/", s): the replacement is the literal text "/'[0-9]/".
std::string replace_slash_quote_digit(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    size_t hit = s.find("/' ", pos);
    while (hit != std::string::npos &&
           !(hit + 4 < s.size() && std::isdigit(static_cast<unsigned char>(s[hit + 3])) &&
             s[hit + 4] == '/')) {
      hit = s.find("/' ", hit + 1);
    }
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += "/'[0-9]/";
    pos = hit + 5;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

/// Splits at "\n" like Python's str.split("\n") (a trailing "\n" gives a last empty line).
std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (true) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      lines.push_back(text.substr(pos));
      return lines;
    }
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

/// Parses a "\n\n" row dump into its rows (each "" or ending in its only "\n");
/// returns false if `text` does not have that layout.
bool parse_row_dump(const std::string& text, std::vector<std::string>* rows) {
  size_t pos = 0;
  const size_t n = text.size();
  while (true) {
    if (pos == n || text.compare(pos, 2, "\n\n") == 0) {
      if (rows) rows->emplace_back();
    } else {
      const size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) {  // a last row without its "\n"
        if (rows) rows->push_back(text.substr(pos));
        return true;
      }
      if (rows) rows->push_back(text.substr(pos, nl + 1 - pos));
      pos = nl + 1;
    }
    if (pos == n) return true;
    if (text.compare(pos, 2, "\n\n") != 0) return false;
    pos += 2;
  }
}

}  // namespace

bool is_wikitext_row_dump(const std::string& text) {
  // A single line without "\n" parses either way; only multi-row text is called a dump.
  if (text.find("\n\n") == std::string::npos) return false;
  return parse_row_dump(text, nullptr);
}

std::string wikitext_original_text(const std::string& text) {
  if (!is_wikitext_row_dump(text)) return text;
  std::vector<std::string> rows;
  parse_row_dump(text, &rows);
  std::string out;
  out.reserve(text.size());
  for (const auto& row : rows) out += row.empty() ? std::string(" \n") : row;
  return out;
}

bool is_wikitext_title_line(const std::string& line) {
  const std::string r = python_strip(replace_all(replace_all(line, "= = =", "==="), "= =", "=="));
  return r.size() >= 2 && r.compare(0, 2, "= ") == 0 && r.compare(r.size() - 2, 2, " =") == 0;
}

std::vector<std::string> wikitext_documents(const std::string& text) {
  const std::vector<std::string> lines = split_lines(wikitext_original_text(text));
  std::vector<std::string> docs;
  std::vector<const std::string*> page;
  auto join = [&] {
    std::string s;
    for (size_t i = 0; i < page.size(); ++i) {
      if (i > 0) s += '\n';
      s += *page[i];
    }
    return s;
  };
  for (const auto& line : lines) {
    if (is_wikitext_title_line(line)) {
      std::string p = join();
      if (!python_strip(p).empty()) docs.push_back(std::move(p));
      page.clear();
    }
    page.push_back(&line);
  }
  docs.push_back(join());  // lm-eval emits the last page unconditionally
  return docs;
}

std::string wikitext_detokenize(const std::string& text) {
  std::string s = text;
  // contractions
  s = replace_all(s, "s '", "s'");
  s = replace_slash_quote_digit(s);
  // number separators
  s = replace_all(s, " @-@ ", "-");
  s = replace_all(s, " @,@ ", ",");
  s = replace_all(s, " @.@ ", ".");
  // punctuation
  s = replace_all(s, " : ", ": ");
  s = replace_all(s, " ; ", "; ");
  s = replace_all(s, " . ", ". ");
  s = replace_all(s, " ! ", "! ");
  s = replace_all(s, " ? ", "? ");
  s = replace_all(s, " , ", ", ");
  // brackets and quotes: contents stripped
  s = strip_inside_pairs(s, '(', ')');
  s = strip_inside_pairs(s, '[', ']');
  s = strip_inside_pairs(s, '{', '}');
  s = strip_inside_pairs(s, '"', '"');
  s = strip_inside_pairs(s, '\'', '\'');
  // miscellaneous
  s = replace_all(s, "= = = =", "====");
  s = replace_all(s, "= = =", "===");
  s = replace_all(s, "= =", "==");
  s = replace_all(s, " \xC2\xB0 ", "\xC2\xB0");  // " ° " -> "°"
  s = replace_all(s, " \n", "\n");
  s = replace_all(s, "\n ", "\n");
  s = replace_all(s, " N ", " 1 ");
  s = replace_all(s, " 's", "'s");
  return s;
}

}  // namespace mq
