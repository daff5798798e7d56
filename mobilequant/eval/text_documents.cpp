// mobilequant/eval/text_documents.cpp
// Reading text files and Python-compatible whitespace handling on UTF-8 bytes.
#include "mobilequant/eval/text_documents.h"

#include <fstream>
#include <sstream>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// Decodes the UTF-8 code point starting at s[i]; stores its byte length in `len`.
/// Malformed bytes decode as themselves with length 1 (they are never whitespace).
char32_t decode_utf8(const std::string& s, size_t i, size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t n = 1;
  char32_t cp = b0;
  if (b0 >= 0xC0 && b0 < 0xE0) {
    n = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 < 0xF0) {
    n = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 < 0xF8) {
    n = 4;
    cp = b0 & 0x07;
  }
  if (n == 1 || i + n > s.size()) {
    len = 1;
    return b0;
  }
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      len = 1;
      return b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  len = n;
  return cp;
}

/// Length of the whitespace code point at s[i], or 0 if s[i] does not start one.
size_t whitespace_len_at(const std::string& s, size_t i) {
  size_t len = 0;
  const char32_t cp = decode_utf8(s, i, len);
  return is_python_whitespace(cp) ? len : 0;
}

}  // namespace

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  MQ_CHECK(in.good(), what, " '", path, "': cannot open (missing or unreadable)");
  std::ostringstream buf;
  buf << in.rdbuf();
  MQ_CHECK(!in.bad(), what, " '", path, "': read error");
  std::string text = buf.str();
  MQ_CHECK(!text.empty(), what, " '", path, "': file is empty, expected text");
  return text;
}

bool is_python_whitespace(char32_t cp) {
  if (cp >= 0x09 && cp <= 0x0D) return true;
  if (cp >= 0x1C && cp <= 0x20) return true;
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680) return true;
  if (cp >= 0x2000 && cp <= 0x200A) return true;
  return cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string python_strip(const std::string& s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t len = whitespace_len_at(s, begin);
    if (len == 0) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    // Step back to the first byte of the last code point (at most 3 continuation bytes).
    size_t start = end - 1;
    while (start > begin && end - start < 4 &&
           (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) {
      --start;
    }
    size_t len = 0;
    const char32_t cp = decode_utf8(s, start, len);
    if (start + len != end) {  // malformed tail: not whitespace
      break;
    }
    if (!is_python_whitespace(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

int64_t count_split_words(const std::string& s) {
  int64_t runs = 0;
  bool in_run = false;
  for (size_t i = 0; i < s.size();) {
    size_t len = 0;
    const bool space = is_python_whitespace(decode_utf8(s, i, len));
    if (space && !in_run) ++runs;
    in_run = space;
    i += len;  // whole code points: a continuation byte such as 0xA0 is not U+00A0
  }
  return runs + 1;
}

std::vector<std::string> split_documents(const std::string& text, const std::string& separator) {
  MQ_CHECK(!python_strip(separator).empty(),
           "document separator: expected a non-blank line such as '<|endoftext|>', got '",
           separator, "'");
  const std::string sep = python_strip(separator);
  std::vector<std::string> docs;
  std::string current;
  auto flush = [&] {
    std::string doc = python_strip(current);
    if (!doc.empty()) docs.push_back(std::move(doc));
    current.clear();
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    const bool last = nl == std::string::npos;
    if (last) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (python_strip(line) == sep) {
      flush();
    } else {
      current += line;
      if (!last) current += '\n';
    }
    if (last) break;
    pos = nl + 1;
  }
  flush();
  return docs;
}

}  // namespace mq
