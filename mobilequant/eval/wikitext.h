// mobilequant/eval/wikitext.h
// WikiText-2 as lm-eval-harness v0.3's `wikitext` task sees it (the protocol MobileQuant
// reports, reference-implementation.md §5.2): the raw test file split into one document
// per article, and the detokenizer applied to each document before tokenization.
//
// Two text layouts are accepted:
//   - the original `wiki.test.raw` (one line per paragraph, blank lines are " "), which
//     lm-eval's dataset script splits;
//   - the GPTQ-style dump `"\n\n".join(load_dataset("wikitext", ...)["text"])`, i.e. the
//     Hugging Face rows (each line with its "\n", blank lines as "") joined by "\n\n". This
//     is what ../shared/data/wikitext2/wiki.test.raw.txt holds. The join is undone exactly
//     (a row is either "" or ends at its first "\n") and blank rows become the original's
//     " " lines again, so the documents, their bytes and their words equal lm-eval's.
// The GPTQ protocol (eval/perplexity.h) uses the dump as it is.
#pragma once

#include <string>
#include <vector>

namespace mq {

/// Whether `text` is a GPTQ-style "\n\n" join of Hugging Face WikiText rows (see above).
bool is_wikitext_row_dump(const std::string& text);

/// The original raw-file text: undoes the "\n\n" row join (blank rows -> " " lines) when
/// `text` is such a dump, else returns `text` unchanged.
std::string wikitext_original_text(const std::string& text);

/// Whether a line is an article title (" = Title = "), by lm-eval's rule: after
/// "= = =" -> "===" and "= =" -> "==" and strip(), it starts with "= " and ends with " =".
/// Section headings (" = = Sub = = ") are not titles.
bool is_wikitext_title_line(const std::string& line);

/// lm-eval's document split of an original raw file: lines (split at "\n") are gathered
/// until the next title line; a non-blank gathered page is emitted (joined by "\n"), and the
/// last page is always emitted. Accepts a row dump too (it is converted first).
/// The 62 test articles give 62 documents.
std::vector<std::string> wikitext_documents(const std::string& text);

/// lm-eval's `wikitext_detokenizer`: the same sequence of replacements (contractions,
/// " @-@ " number separators, spaced punctuation, bracket and quote contents stripped,
/// "= =" headings, " ° ", line-edge spaces, " N ", " 's"), on UTF-8 bytes.
std::string wikitext_detokenize(const std::string& text);

}  // namespace mq
