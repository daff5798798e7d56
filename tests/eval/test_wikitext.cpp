// tests/eval/test_wikitext.cpp
// lm-eval's WikiText pieces: the detokenizer on crafted strings (expected values are what
// lm-eval v0.3's wikitext_detokenizer returns for them), the title-line rule, the row-dump
// inversion, and the 62-document split of the shared test file.
#include <catch2/catch.hpp>

#include "mobilequant/eval/text_documents.h"
#include "mobilequant/eval/wikitext.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

TEST_CASE("wikitext_detokenize applies lm-eval's replacements in order", "[unit]") {
  using mq::wikitext_detokenize;
  CHECK(wikitext_detokenize("The dog 's bone costs 1 @,@ 000 dollars , he said . ") ==
        "The dog's bone costs 1,000 dollars, he said. ");
  CHECK(wikitext_detokenize("a ( b c ) d [ e ] { f } \" g \" ' h '") ==
        "a (b c) d [e] {f} \"g\" 'h'");
  CHECK(wikitext_detokenize(" = = Section = = \n \n Text @-@ based 5 \xC2\xB0 C \n") ==
        " == Section ==\n\nText-based 5\xC2\xB0" "C\n");
  CHECK(wikitext_detokenize("The players ' union : N of N ; yes ! no ? 3 @.@ 5") ==
        "The players' union: 1 of N; yes! no? 3.5");
  CHECK(wikitext_detokenize("at /' 5/ here") == "at /'[0-9]/ here");
  // A quote without a partner stays; nested brackets pair with the first closer.
  CHECK(wikitext_detokenize("He said \" hi \" and \" bye") == "He said \"hi\" and \" bye");
  CHECK(wikitext_detokenize("( a ( b ) c )") == "(a ( b) c )");
  CHECK(wikitext_detokenize(" = = = = Deep = = = = \n") == " ==== Deep ====\n");
  // Bracket contents are stripped of Unicode whitespace (U+00A0), like Python's \s.
  CHECK(wikitext_detokenize("x (\xC2\xA0y\xC2\xA0) z") == "x (y) z");
}

TEST_CASE("wikitext title lines are top-level headings only", "[unit]") {
  CHECK(mq::is_wikitext_title_line(" = Robert Boulter = "));
  CHECK(mq::is_wikitext_title_line("= Title ="));
  CHECK_FALSE(mq::is_wikitext_title_line(" = = Early life = = "));
  CHECK_FALSE(mq::is_wikitext_title_line(" = = = Deeper = = = "));
  CHECK_FALSE(mq::is_wikitext_title_line(" "));
  CHECK_FALSE(mq::is_wikitext_title_line(" a = b = c"));
}

TEST_CASE("a GPTQ row dump is turned back into the original raw file", "[unit]") {
  // Hugging Face rows (a line with its "\n", blank lines as "") joined as GPTQ does.
  const std::vector<std::string> rows = {"", " = A = \n", "", " text a . \n", "",
                                         " = B = \n", "", " b . \n", ""};
  std::string dump;
  for (size_t i = 0; i < rows.size(); ++i) dump += (i ? "\n\n" : "") + rows[i];
  REQUIRE(mq::is_wikitext_row_dump(dump));
  const std::string original = " \n = A = \n \n text a . \n \n = B = \n \n b . \n \n";
  CHECK(mq::wikitext_original_text(dump) == original);
  CHECK_FALSE(mq::is_wikitext_row_dump(original));
  CHECK(mq::wikitext_original_text(original) == original);
  // lm-eval's pages: the leading blank line is dropped, the last page keeps the final "".
  const auto docs = mq::wikitext_documents(dump);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0] == " = A = \n \n text a . \n ");
  CHECK(docs[1] == " = B = \n \n b . \n \n");
  CHECK(mq::wikitext_documents(original) == docs);
  // Words as lm-eval counts them: the empty pieces at both ends count.
  CHECK(mq::count_split_words(docs[0]) == 8);  // '', '=', 'A', '=', 'text', 'a', '.', ''
}

TEST_CASE("the shared WikiText-2 test file splits into lm-eval's 62 documents", "[unit]") {
  const fs::path file = mq::test::shared_dir() / "data" / "wikitext2" / "wiki.test.raw.txt";
  if (!fs::exists(file)) MQ_SKIP("no " << file << " (set MQ_SHARED_DIR to the shared folder)");
  const std::string text = mq::read_text_file(file.string());
  REQUIRE(mq::is_wikitext_row_dump(text));
  const auto docs = mq::wikitext_documents(text);
  REQUIRE(docs.size() == 62);
  CHECK(docs.front().rfind(" = Robert Boulter = \n \n Robert Boulter is an English film", 0) == 0);
  int64_t words = 0, bytes = 0, plain_words = 0;
  for (const auto& d : docs) {
    REQUIRE(mq::is_wikitext_title_line(d.substr(0, d.find('\n'))));
    words += mq::count_split_words(d);
    bytes += static_cast<int64_t>(d.size());
  }
  // 241,211 whitespace-separated words (the README's figure) plus an empty piece at each
  // end of every document, which len(re.split(r"\s+", page)) counts: 241,211 + 2 * 62.
  plain_words = words - 2 * 62;
  CHECK(plain_words == 241211);
  CHECK(words == 241335);
  // UTF-8 bytes of the 62 original pages (blank lines restored as " ").
  CHECK(bytes == 1290527);
}
