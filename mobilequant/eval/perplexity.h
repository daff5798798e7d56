// mobilequant/eval/perplexity.h
// The three perplexity protocols end to end (text -> tokens -> windows -> scores -> figures),
// each result labelled with the exact protocol that produced it, since the numbers of
// different protocols are not comparable:
//
//   wikitext       lm-eval-harness v0.3 `wikitext` (what MobileQuant reports; reference-
//                  implementation.md §5.2): one document per article, wikitext_detokenizer,
//                  tokens without BOS, rolling windows of max_length with EOS as the first
//                  window's prefix, log-likelihoods summed per document;
//                  word_perplexity = exp(-Σll / Σwords), byte_perplexity = exp(-Σll / Σbytes),
//                  bits_per_byte = -Σll / Σbytes / ln 2. Words and bytes are counted on the
//                  ORIGINAL page, before detokenization, as lm-eval's PerplexityTask does
//                  (process_results gets the page; count_words = len(re.split(r"\s+", page)),
//                  which counts the empty pieces at a leading/trailing whitespace run;
//                  count_bytes = len(page.encode("utf-8"))).
//   wikitext-gptq  GPTQ/OmniQuant: the "\n\n"-joined test text tokenized once with the
//                  tokenizer's default special tokens (BOS if adds_bos()), numel // seqlen
//                  non-overlapping windows, token_perplexity = exp(mean nll) over the
//                  seqlen-1 scored predictions of every window.
//   docs           any text split into documents at separator lines (TinyStories'
//                  "<|endoftext|>"), each stripped and scored after a BOS prefix (EOS where the
//                  tokenizer has no BOS), cut to max_length ids including the prefix;
//                  token_perplexity = exp(-Σll / Σscored).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mobilequant/eval/window_scorer.h"
#include "mobilequant/io/tokenizer.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// One named figure, e.g. {"word_perplexity", 14.9}.
struct PerplexityMetric {
  std::string name;  ///< word_perplexity, byte_perplexity, bits_per_byte or token_perplexity
  double value = 0.0;
};

/// The outcome of one protocol on one data file.
struct PerplexityResult {
  std::string task;                       ///< "wikitext", "wikitext-gptq" or "docs"
  std::string protocol;                   ///< the protocol in words, with its parameters
  std::vector<PerplexityMetric> metrics;  ///< the figures the protocol defines
  double loglikelihood = 0.0;             ///< Σ ln p over every scored prediction
  int64_t scored_tokens = 0;              ///< predictions scored
  int64_t documents = 0;                  ///< documents (GPTQ: windows, i.e. nsamples)
  int64_t windows = 0;                    ///< model inputs
  int64_t words = 0;                      ///< Σ words (wikitext only)
  int64_t bytes = 0;                      ///< Σ UTF-8 bytes (wikitext only)
  double seconds = 0.0;                   ///< wall time of the scoring
  std::vector<double> document_loglikelihoods;  ///< Σ ln p per document, in order
};

/// Options of the lm-eval WikiText protocol.
struct WikitextOptions {
  int64_t max_length = 2048;     ///< rolling window length (lm-eval's max_length)
  int64_t limit_documents = -1;  ///< score only the first N documents (-1: all)
};

/// Options of the GPTQ/OmniQuant protocol.
struct GptqOptions {
  int64_t seqlen = 2048;       ///< window length
  int64_t limit_windows = -1;  ///< score only the first N windows (-1: all nsamples)
};

/// Options of the document protocol.
struct DocumentOptions {
  std::string separator = "<|endoftext|>";  ///< a line holding only this ends a document
  int64_t max_length = 2048;                ///< ids per document, prefix included
  int64_t limit_documents = -1;             ///< score only the first N documents (-1: all)
};

/// The lm-eval figures from Σ ln p, Σ words and Σ bytes: word_perplexity, byte_perplexity,
/// bits_per_byte (in that order).
std::vector<PerplexityMetric> lm_eval_perplexity_metrics(double loglikelihood, int64_t words,
                                                         int64_t bytes);

/// Windows of the lm-eval WikiText protocol for `documents` (original pages): each page is
/// detokenized, encoded without special tokens and cut into rolling windows after EOS.
/// Throws mq::Error if the tokenizer has no EOS.
std::vector<ScoringWindow> lm_eval_wikitext_windows(const Tokenizer& tokenizer,
                                                    const std::vector<std::string>& documents,
                                                    int64_t max_length);

/// lm-eval v0.3 `wikitext` on `text` (the raw test file or its "\n\n" row dump).
PerplexityResult evaluate_wikitext_lm_eval(CausalLm& model, const Tokenizer& tokenizer,
                                           const std::string& text, const WikitextOptions& opts,
                                           const ScoreOptions& score = {});

/// Ids of the GPTQ protocol: BOS (if the tokenizer adds one by default) + encode(text).
std::vector<int64_t> gptq_token_ids(const Tokenizer& tokenizer, const std::string& text);

/// GPTQ/OmniQuant WikiText perplexity on `text` (the "\n\n"-joined test split as it is).
PerplexityResult evaluate_wikitext_gptq(CausalLm& model, const Tokenizer& tokenizer,
                                        const std::string& text, const GptqOptions& opts,
                                        const ScoreOptions& score = {});

/// Perplexity of the documents of `text` (split_documents at opts.separator).
PerplexityResult evaluate_documents(CausalLm& model, const Tokenizer& tokenizer,
                                    const std::string& text, const DocumentOptions& opts,
                                    const ScoreOptions& score = {});

}  // namespace mq
