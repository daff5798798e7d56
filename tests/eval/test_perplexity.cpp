// tests/eval/test_perplexity.cpp
// The scorer and the three protocols end to end on a tiny random CausalLm and a byte-level
// fake tokenizer, against direct computations (one forward pass per prediction for the
// lm-eval rolling protocol); the stories260K reference figure and the Python oracle's
// documents under [model].
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/eval/perplexity.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/eval/wikitext.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/core/file_util.h"
#include "tests/support/fakes.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

/// Tolerance on a summed log-likelihood of ~100 predictions (batched vs single fp32 passes).
constexpr double kLogLikelihoodAtol = 1e-4;

/// Bytes b -> ids b+3; 0 unk, 1 BOS, 2 EOS.
using mq::test::ByteTokenizer;

/// A 2-layer GQA llama with random weights over the byte vocabulary.
mq::CausalLm tiny_model() {
  return mq::test::tiny_byte_llama(2, 1234);
}

/// log p(target | context) from one forward pass over `context` alone.
double direct_logprob(mq::CausalLm& model, const std::vector<int64_t>& context, int64_t target) {
  torch::NoGradGuard no_grad;
  auto ids = torch::tensor(context, torch::kLong).unsqueeze(0);              // [1, T]
  auto logp = torch::log_softmax(model->forward(ids).to(torch::kFloat64), -1);  // [1, T, V]
  return logp[0][static_cast<int64_t>(context.size()) - 1][target].item<double>();
}

/// Σ log p of a window's scored targets, from one forward pass over its input.
double direct_window(mq::CausalLm& model, const mq::ScoringWindow& w) {
  torch::NoGradGuard no_grad;
  const int64_t len = w.input_length();
  std::vector<int64_t> in(w.tokens.begin(), w.tokens.end() - 1);
  auto ids = torch::tensor(in, torch::kLong).unsqueeze(0);                   // [1, L]
  auto logp = torch::log_softmax(model->forward(ids).to(torch::kFloat64), -1);  // [1, L, V]
  double sum = 0.0;
  for (int64_t t = len - w.num_scored; t < len; ++t) {
    sum += logp[0][t][w.tokens[static_cast<size_t>(t + 1)]].item<double>();
  }
  return sum;
}

/// A two-article WikiText dump: Hugging Face rows joined by "\n\n" as GPTQ does.
std::string wiki_dump() {
  const std::vector<std::string> rows = {
      "", " = Alpha = \n", "",
      " The alpha ( first ) letter , it 's said , is \" A \" . \n", "",
      " = = History = = \n", "", " It dates from 1 @,@ 000 BC . \n", "", "",
      " = Beta = \n", "", " Beta follows alpha ; N letters later comes omega . \n", ""};
  std::string dump;
  for (size_t i = 0; i < rows.size(); ++i) dump += (i ? "\n\n" : "") + rows[i];
  return dump;
}

}  // namespace

TEST_CASE("score_windows equals per-window forward passes when batched and chunked", "[unit]") {
  auto model = tiny_model();
  std::vector<mq::ScoringWindow> windows;
  auto make = [](int64_t len, int64_t scored, int64_t seed, int64_t doc) {
    mq::ScoringWindow w;
    for (int64_t i = 0; i <= len; ++i) w.tokens.push_back((seed * 31 + i * 17) % 256 + 3);
    w.num_scored = scored;
    w.document = doc;
    return w;
  };
  windows.push_back(make(12, 12, 1, 0));
  windows.push_back(make(12, 5, 2, 0));
  windows.push_back(make(7, 7, 3, 1));
  windows.push_back(make(12, 12, 4, 1));
  windows.push_back(make(12, 1, 5, 2));
  windows.push_back(make(1, 1, 6, 2));
  std::vector<double> expect;
  for (const auto& w : windows) expect.push_back(direct_window(model, w));
  for (int64_t batch : {1, 3, 8}) {
    for (int64_t budget : {int64_t{1} << 26, int64_t{259 * 5}, int64_t{1}}) {
      mq::ScoreOptions opts;
      opts.batch_size = batch;
      opts.max_logit_elements = budget;
      int64_t calls = 0;
      opts.progress = [&](const mq::ScoreProgress& p) {
        ++calls;
        CHECK(p.windows_done <= p.windows_total);
      };
      const auto got = mq::score_windows(model, windows, opts);
      REQUIRE(got.size() == expect.size());
      for (size_t i = 0; i < got.size(); ++i) {
        INFO("batch " << batch << " budget " << budget << " window " << i);
        CHECK(std::abs(got[i] - expect[i]) <= kLogLikelihoodAtol);
      }
      CHECK(calls >= 1);
    }
  }
  mq::ScoringWindow bad = make(4, 4, 7, 0);
  bad.tokens[2] = 259;
  REQUIRE_THROWS_WITH(mq::score_windows(model, {bad}),
                      Contains("token id 259") && Contains("vocabulary"));
}

TEST_CASE("lm-eval wikitext equals a per-token direct computation of its contexts", "[unit]") {
  auto model = tiny_model();
  const ByteTokenizer tok(false);
  const std::string dump = wiki_dump();
  REQUIRE(mq::is_wikitext_row_dump(dump));
  const auto pages = mq::wikitext_documents(dump);
  REQUIRE(pages.size() == 2);
  for (int64_t max_length : {int64_t{16}, int64_t{1000}}) {
    mq::WikitextOptions opts;
    opts.max_length = max_length;
    mq::ScoreOptions score;
    score.batch_size = 4;
    const auto r = mq::evaluate_wikitext_lm_eval(model, tok, dump, opts, score);
    REQUIRE(r.documents == 2);
    // Every prediction of lm-eval's rolling scheme, spelled out per token: token i is
    // predicted from EOS + ids[0, i) in the first window, else from the max_length ids that
    // precede the end of its window.
    double total = 0.0;
    int64_t tokens = 0, words = 0, bytes = 0;
    for (size_t d = 0; d < pages.size(); ++d) {
      const auto ids = tok.encode(mq::wikitext_detokenize(pages[d]));
      const auto n = static_cast<int64_t>(ids.size());
      double doc = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        std::vector<int64_t> ctx;
        if (i < max_length) {
          ctx.push_back(tok.eos_id());
          ctx.insert(ctx.end(), ids.begin(), ids.begin() + i);
        } else {
          const int64_t k = (i - max_length) / max_length;  // later-window index
          const int64_t end = std::min(n, max_length + (k + 1) * max_length);
          ctx.assign(ids.begin() + (end - max_length - 1), ids.begin() + i);
        }
        doc += direct_logprob(model, ctx, ids[static_cast<size_t>(i)]);
      }
      INFO("max_length " << max_length << " document " << d);
      CHECK(std::abs(r.document_loglikelihoods[d] - doc) <= kLogLikelihoodAtol);
      total += doc;
      tokens += n;
      words += mq::count_split_words(pages[d]);
      bytes += static_cast<int64_t>(pages[d].size());
    }
    CHECK(r.scored_tokens == tokens);
    CHECK(r.words == words);
    CHECK(r.bytes == bytes);
    CHECK(std::abs(r.loglikelihood - total) <= 2 * kLogLikelihoodAtol);
    // The figures are lm-eval's formulas of the result's own sums.
    const double ll = r.loglikelihood;
    REQUIRE(r.metrics.size() == 3);
    CHECK(r.metrics[0].name == "word_perplexity");
    CHECK(r.metrics[0].value == Approx(std::exp(-ll / static_cast<double>(words))).epsilon(1e-12));
    CHECK(r.metrics[1].name == "byte_perplexity");
    CHECK(r.metrics[1].value == Approx(std::exp(-ll / static_cast<double>(bytes))).epsilon(1e-12));
    CHECK(r.metrics[2].name == "bits_per_byte");
    CHECK(r.metrics[2].value ==
          Approx(-ll / static_cast<double>(bytes) / std::log(2.0)).epsilon(1e-12));
  }
}

TEST_CASE("GPTQ protocol adds BOS by default and scores numel / seqlen windows", "[unit]") {
  auto model = tiny_model();
  const ByteTokenizer with_bos(true), without_bos(false);
  const std::string text = wiki_dump();
  const auto ids = mq::gptq_token_ids(with_bos, text);
  REQUIRE(ids.front() == 1);
  REQUIRE(ids.size() == text.size() + 1);
  REQUIRE(mq::gptq_token_ids(without_bos, text).size() == text.size());
  mq::GptqOptions opts;
  opts.seqlen = 64;
  const auto r = mq::evaluate_wikitext_gptq(model, with_bos, text, opts);
  const auto nsamples = static_cast<int64_t>(ids.size()) / 64;
  CHECK(r.windows == nsamples);
  CHECK(r.scored_tokens == nsamples * 63);
  double nll = 0.0;
  for (int64_t i = 0; i < nsamples; ++i) {
    mq::ScoringWindow w;
    for (int64_t t = i * 64; t < (i + 1) * 64; ++t) w.tokens.push_back(ids[static_cast<size_t>(t)]);
    w.num_scored = 63;
    nll -= direct_window(model, w);
  }
  CHECK(r.metrics.at(0).name == "token_perplexity");
  CHECK(r.metrics.at(0).value ==
        Approx(std::exp(nll / static_cast<double>(nsamples * 63))).epsilon(1e-6));
  opts.seqlen = 4096;
  REQUIRE_THROWS_WITH(mq::evaluate_wikitext_gptq(model, with_bos, text, opts),
                      Contains("seqlen=4096"));
}

TEST_CASE("docs protocol scores BOS plus each document cut at max_length", "[unit]") {
  auto model = tiny_model();
  const ByteTokenizer tok(true);
  const std::string text = "once upon a time\n<|endoftext|>\n  the end of a much longer story  \n";
  mq::DocumentOptions opts;
  opts.max_length = 20;
  const auto r = mq::evaluate_documents(model, tok, text, opts);
  REQUIRE(r.documents == 2);
  CHECK(r.scored_tokens == 16 + 19);  // "once upon a time" (16 bytes), the second cut to 19
  double ll = 0.0;
  for (const std::string doc : {"once upon a time", "the end of a much longer story"}) {
    mq::ScoringWindow w;
    w.tokens.push_back(tok.bos_id());
    const auto ids = tok.encode(doc);
    w.tokens.insert(w.tokens.end(), ids.begin(),
                    ids.begin() + std::min<int64_t>(19, static_cast<int64_t>(ids.size())));
    w.num_scored = w.input_length();
    ll += direct_window(model, w);
  }
  CHECK(r.loglikelihood == Approx(ll).margin(kLogLikelihoodAtol));
  CHECK(r.metrics.at(0).value == Approx(std::exp(-ll / 35.0)).epsilon(1e-6));
  REQUIRE_THROWS_WITH(mq::evaluate_documents(model, tok, "<|endoftext|>\n \n", opts),
                      Contains("no non-empty document"));
}

TEST_CASE("stories260K on the TinyStories head gives 22 docs and 7158 tokens at ppl 3.3169",
          "[model]") {
  const fs::path dir = mq::test::shared_dir() / "models" / "stories260K";
  const fs::path data = mq::test::shared_dir() / "data" / "tinystories" / "valid.head.txt";
  if (!fs::exists(dir / "stories260K.bin") || !fs::exists(data)) {
    MQ_SKIP("no stories260K or TinyStories data under " << mq::test::shared_dir());
  }
  auto m = mq::load_model((dir / "stories260K.bin").string());
  REQUIRE(m.tokenizer != nullptr);
  mq::DocumentOptions opts;
  opts.max_length = 512;
  const auto r = mq::evaluate_documents(m.model, *m.tokenizer,
                                        mq::read_text_file(data.string()), opts);
  CHECK(r.documents == 22);
  CHECK(r.scored_tokens == 7158);
  INFO("token perplexity " << r.metrics.at(0).value);
  CHECK(std::abs(r.metrics.at(0).value - 3.3169) <= 0.0005);
}

TEST_CASE("WikiText documents and detokenization match the Python oracle", "[model]") {
  const fs::path data = mq::test::shared_dir() / "data" / "wikitext2" / "wiki.test.raw.txt";
  const fs::path script = mq::test::source_dir() / "eval" / "reference" / "hf_ppl.py";
  if (!fs::exists(data)) MQ_SKIP("no " << data);
  if (!fs::exists(mq::test::python())) MQ_SKIP("no Python at " << mq::test::python());
  const auto dir = mq::test::scratch_dir("wikitext_oracle");
  const auto out = dir / "docs.json";
  const std::string cmd = "'" + mq::test::python().string() + "' '" + script.string() +
                          "' --data '" + data.string() + "' --dump-docs '" + out.string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(out);
  const auto oracle = nlohmann::json::parse(in);
  const auto docs = mq::wikitext_documents(mq::read_text_file(data.string()));
  REQUIRE(oracle.size() == docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    INFO("document " << d);
    CHECK(oracle[d]["page"].get<std::string>() == docs[d]);
    CHECK(oracle[d]["detokenized"].get<std::string>() == mq::wikitext_detokenize(docs[d]));
    CHECK(oracle[d]["words"].get<int64_t>() == mq::count_split_words(docs[d]));
    CHECK(oracle[d]["bytes"].get<int64_t>() == static_cast<int64_t>(docs[d].size()));
  }
  mq::remove_tree(dir.string());
}
