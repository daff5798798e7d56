// tests/eval/test_text_documents.cpp
// Python-compatible word counting and stripping, document splitting, and the errors of
// read_text_file.
#include <catch2/catch.hpp>

#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/core/file_util.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;

TEST_CASE("count_split_words counts like Python re.split on whitespace runs", "[unit]") {
  using mq::count_split_words;
  CHECK(count_split_words("") == 1);          // ['']
  CHECK(count_split_words("a") == 1);         // ['a']
  CHECK(count_split_words("a b") == 2);
  CHECK(count_split_words(" a b ") == 4);     // ['', 'a', 'b', '']
  CHECK(count_split_words("a \n\n\t b") == 2);
  CHECK(count_split_words("   ") == 2);       // ['', '']
  // Unicode whitespace: U+00A0 and U+3000 split; U+2013 (en dash) does not.
  CHECK(count_split_words("a\xC2\xA0" "b") == 2);
  CHECK(count_split_words("a\xE3\x80\x80" "b") == 2);
  CHECK(count_split_words("a\xE2\x80\x93" "b") == 1);
  // Continuation bytes 0xA0/0x85 inside a character (U+00E0, U+0105) are not whitespace.
  CHECK(count_split_words("\xC3\xA0\xC4\x85") == 1);
}

TEST_CASE("python_strip removes Unicode whitespace at both ends only", "[unit]") {
  CHECK(mq::python_strip("  a b \n") == "a b");
  CHECK(mq::python_strip("\xC2\xA0x\xE2\x80\x80") == "x");
  CHECK(mq::python_strip(" \t\n ") == "");
  CHECK(mq::python_strip("caf\xC3\xA9 ") == "caf\xC3\xA9");
}

TEST_CASE("split_documents cuts at separator lines and strips each document", "[unit]") {
  const std::string text =
      "first story\nline two\n<|endoftext|>\n  second  \r\n<|endoftext|>\r\n\n<|endoftext|>\nthird";
  const auto docs = mq::split_documents(text, "<|endoftext|>");
  REQUIRE(docs.size() == 3);
  CHECK(docs[0] == "first story\nline two");
  CHECK(docs[1] == "second");
  CHECK(docs[2] == "third");
  // A separator inside a line does not split.
  CHECK(mq::split_documents("a <|endoftext|> b", "<|endoftext|>").size() == 1);
  REQUIRE_THROWS_WITH(mq::split_documents("x", "  "), Contains("separator"));
}

TEST_CASE("read_text_file names a missing or empty file", "[unit]") {
  const auto dir = mq::test::scratch_dir("text_documents");
  const auto missing = (dir / "nope.txt").string();
  REQUIRE_THROWS_WITH(mq::read_text_file(missing, "data file"),
                      Contains("nope.txt") && Contains("cannot open"));
  const auto empty = (dir / "empty.txt").string();
  std::ofstream(empty).close();
  REQUIRE_THROWS_WITH(mq::read_text_file(empty), Contains("empty.txt") && Contains("empty"));
  std::ofstream(dir / "a.txt") << "hello";
  CHECK(mq::read_text_file((dir / "a.txt").string()) == "hello");
  mq::remove_tree(dir.string());
}

TEST_CASE("the shared TinyStories head splits into 22 stories", "[unit]") {
  const fs::path file = mq::test::shared_dir() / "data" / "tinystories" / "valid.head.txt";
  if (!fs::exists(file)) MQ_SKIP("no " << file << " (set MQ_SHARED_DIR to the shared folder)");
  const auto docs = mq::split_documents(mq::read_text_file(file.string()), "<|endoftext|>");
  CHECK(docs.size() == 22);
}
