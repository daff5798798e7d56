// mobilequant/eval/perplexity.cpp
// The wikitext (lm-eval), wikitext-gptq and docs perplexity protocols.
#include "mobilequant/eval/perplexity.h"

#include <chrono>
#include <cmath>
#include <sstream>

#include "mobilequant/core/error.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/eval/token_windows.h"
#include "mobilequant/eval/wikitext.h"

namespace mq {

namespace {

/// Scores `windows` and fills the totals of `r`, with per-document sums over `num_docs`.
void score_into(CausalLm& model, const std::vector<ScoringWindow>& windows, int64_t num_docs,
                const ScoreOptions& score, PerplexityResult& r) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<double> lls = score_windows(model, windows, score);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.document_loglikelihoods.assign(static_cast<size_t>(num_docs), 0.0);
  for (size_t i = 0; i < windows.size(); ++i) {
    r.document_loglikelihoods[static_cast<size_t>(windows[i].document)] += lls[i];
  }
  r.loglikelihood = 0.0;
  for (double ll : r.document_loglikelihoods) r.loglikelihood += ll;
  r.scored_tokens = count_scored(windows);
  r.windows = static_cast<int64_t>(windows.size());
  r.documents = num_docs;
}

/// The first `limit` items of `v` (all when limit < 0).
template <typename T>
std::vector<T> take(std::vector<T> v, int64_t limit) {
  if (limit >= 0 && static_cast<size_t>(limit) < v.size()) v.resize(static_cast<size_t>(limit));
  return v;
}

}  // namespace

std::vector<PerplexityMetric> lm_eval_perplexity_metrics(double loglikelihood, int64_t words,
                                                         int64_t bytes) {
  MQ_CHECK(words > 0 && bytes > 0, "lm-eval metrics: expected positive word and byte counts, got ",
           words, " words and ", bytes, " bytes");
  return {{"word_perplexity", std::exp(-loglikelihood / static_cast<double>(words))},
          {"byte_perplexity", std::exp(-loglikelihood / static_cast<double>(bytes))},
          {"bits_per_byte", -loglikelihood / static_cast<double>(bytes) / std::log(2.0)}};
}

std::vector<ScoringWindow> lm_eval_wikitext_windows(const Tokenizer& tokenizer,
                                                    const std::vector<std::string>& documents,
                                                    int64_t max_length) {
  MQ_CHECK(tokenizer.eos_id() >= 0,
           "wikitext (lm-eval): the tokenizer has no EOS id, which the protocol uses as the "
           "first window's prefix");
  std::vector<ScoringWindow> windows;
  for (size_t d = 0; d < documents.size(); ++d) {
    const std::vector<int64_t> ids = tokenizer.encode(wikitext_detokenize(documents[d]));
    auto w = rolling_token_windows(ids, tokenizer.eos_id(), max_length, static_cast<int64_t>(d));
    windows.insert(windows.end(), std::make_move_iterator(w.begin()),
                   std::make_move_iterator(w.end()));
  }
  return windows;
}

PerplexityResult evaluate_wikitext_lm_eval(CausalLm& model, const Tokenizer& tokenizer,
                                           const std::string& text, const WikitextOptions& opts,
                                           const ScoreOptions& score) {
  const std::vector<std::string> docs = take(wikitext_documents(text), opts.limit_documents);
  PerplexityResult r;
  r.task = "wikitext";
  std::ostringstream p;
  p << "lm-eval v0.3 wikitext: " << docs.size()
    << " article documents, wikitext_detokenizer, no BOS, rolling windows of max_length="
    << opts.max_length << " with EOS as the first window's prefix (context_len=1), "
    << "loglikelihoods summed per document; words = len(re.split(r'\\s+', page)) and "
    << "bytes = UTF-8 bytes, both of the original page";
  r.protocol = p.str();
  const auto windows = lm_eval_wikitext_windows(tokenizer, docs, opts.max_length);
  score_into(model, windows, static_cast<int64_t>(docs.size()), score, r);
  for (const auto& d : docs) {
    r.words += count_split_words(d);
    r.bytes += static_cast<int64_t>(d.size());
  }
  r.metrics = lm_eval_perplexity_metrics(r.loglikelihood, r.words, r.bytes);
  return r;
}

std::vector<int64_t> gptq_token_ids(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> ids;
  if (tokenizer.adds_bos() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<int64_t> body = tokenizer.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

PerplexityResult evaluate_wikitext_gptq(CausalLm& model, const Tokenizer& tokenizer,
                                        const std::string& text, const GptqOptions& opts,
                                        const ScoreOptions& score) {
  const std::vector<int64_t> ids = gptq_token_ids(tokenizer, text);
  const auto all = gptq_windows(ids, opts.seqlen);
  MQ_CHECK(!all.empty(), "wikitext-gptq: the text has ", ids.size(),
           " tokens, fewer than one window of seqlen=", opts.seqlen);
  const auto windows = take(all, opts.limit_windows);
  PerplexityResult r;
  r.task = "wikitext-gptq";
  std::ostringstream p;
  p << "GPTQ/OmniQuant: text tokenized once (" << ids.size() << " ids, BOS "
    << (tokenizer.adds_bos() && tokenizer.bos_id() >= 0 ? "prepended" : "not added")
    << "), " << windows.size() << (windows.size() < all.size() ? " (limited) of " : " of ")
    << all.size() << " non-overlapping windows of seqlen=" << opts.seqlen
    << ", token ppl = exp(mean nll over the seqlen-1 next-token predictions per window)";
  r.protocol = p.str();
  score_into(model, windows, static_cast<int64_t>(windows.size()), score, r);
  r.metrics = {{"token_perplexity",
                std::exp(-r.loglikelihood / static_cast<double>(r.scored_tokens))}};
  return r;
}

PerplexityResult evaluate_documents(CausalLm& model, const Tokenizer& tokenizer,
                                    const std::string& text, const DocumentOptions& opts,
                                    const ScoreOptions& score) {
  const int64_t prefix = tokenizer.bos_id() >= 0 ? tokenizer.bos_id() : tokenizer.eos_id();
  MQ_CHECK(prefix >= 0, "docs: the tokenizer has neither a BOS nor an EOS id to prefix documents");
  const std::vector<std::string> docs =
      take(split_documents(text, opts.separator), opts.limit_documents);
  MQ_CHECK(!docs.empty(), "docs: no non-empty document between '", opts.separator, "' lines");
  std::vector<ScoringWindow> windows;
  for (size_t d = 0; d < docs.size(); ++d) {
    auto w = prefixed_document_window(tokenizer.encode(docs[d]), prefix, opts.max_length,
                                      static_cast<int64_t>(d));
    windows.insert(windows.end(), std::make_move_iterator(w.begin()),
                   std::make_move_iterator(w.end()));
  }
  MQ_CHECK(!windows.empty(), "docs: the documents encode to no tokens");
  PerplexityResult r;
  r.task = "docs";
  std::ostringstream p;
  p << docs.size() << " documents split at '" << opts.separator << "' lines, stripped, "
    << (tokenizer.bos_id() >= 0 ? "BOS" : "EOS") << " + tokens cut to max_length="
    << opts.max_length << " ids, every next token scored, token ppl = exp(-sum ll / scored)";
  r.protocol = p.str();
  score_into(model, windows, static_cast<int64_t>(docs.size()), score, r);
  r.metrics = {{"token_perplexity",
                std::exp(-r.loglikelihood / static_cast<double>(r.scored_tokens))}};
  return r;
}

}  // namespace mq
