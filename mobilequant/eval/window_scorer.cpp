// mobilequant/eval/window_scorer.cpp
// Batched, memory-bounded log-likelihood scoring of token windows.
#include "mobilequant/eval/window_scorer.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "mobilequant/core/error.h"

namespace mq {

namespace {

/// Checks one window's shape and ids; `index` names it in the message.
void check_window(const ScoringWindow& w, size_t index, int64_t vocab) {
  const int64_t len = w.input_length();
  MQ_CHECK(len >= 1, "scoring window ", index, " (document ", w.document,
           "): expected at least 2 ids (input + target), got ", w.tokens.size());
  MQ_CHECK(w.num_scored >= 1 && w.num_scored <= len, "scoring window ", index, " (document ",
           w.document, "): num_scored must be in [1, ", len, "], got ", w.num_scored);
  for (size_t t = 0; t < w.tokens.size(); ++t) {
    MQ_CHECK(w.tokens[t] >= 0 && w.tokens[t] < vocab, "scoring window ", index, " (document ",
             w.document, "): token id ", w.tokens[t], " at position ", t,
             " is outside the model's vocabulary [0, ", vocab, ")");
  }
}

}  // namespace

std::vector<double> score_windows(CausalLm& model, const std::vector<ScoringWindow>& windows,
                                  const ScoreOptions& opts) {
  MQ_CHECK(opts.batch_size >= 1, "scoring: batch_size must be >= 1, got ", opts.batch_size);
  MQ_CHECK(opts.max_logit_elements >= 1, "scoring: max_logit_elements must be >= 1, got ",
           opts.max_logit_elements);
  const int64_t vocab = model->config().vocab_size;
  for (size_t i = 0; i < windows.size(); ++i) check_window(windows[i], i, vocab);
  const auto params = model->parameters();
  MQ_CHECK(!params.empty(), "scoring: the model has no parameters");
  const torch::Device device = opts.logits ? torch::Device(torch::kCPU) : params.front().device();

  // Longest inputs first (an out-of-memory shows at once), original order within a length.
  std::vector<size_t> order(windows.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return windows[a].input_length() > windows[b].input_length();
  });

  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  const int64_t rows_per_chunk = std::max<int64_t>(1, opts.max_logit_elements / vocab);
  std::vector<double> result(windows.size(), 0.0);
  ScoreProgress progress;
  progress.windows_total = static_cast<int64_t>(windows.size());

  size_t i = 0;
  while (i < order.size()) {
    const int64_t len = windows[order[i]].input_length();
    size_t j = i;
    int64_t n_max = 0;
    while (j < order.size() && static_cast<int64_t>(j - i) < opts.batch_size &&
           windows[order[j]].input_length() == len) {
      n_max = std::max(n_max, windows[order[j]].num_scored);
      ++j;
    }
    const auto batch = static_cast<int64_t>(j - i);

    // Inputs [B, L] and the targets of the last n_max positions [B, n_max].
    std::vector<int64_t> ids(static_cast<size_t>(batch * len));
    std::vector<int64_t> targets(static_cast<size_t>(batch * n_max));
    for (int64_t b = 0; b < batch; ++b) {
      const auto& tok = windows[order[i + b]].tokens;
      std::copy(tok.begin(), tok.begin() + len, ids.begin() + b * len);
      std::copy(tok.end() - n_max, tok.end(), targets.begin() + b * n_max);
    }
    const torch::Tensor input =
        torch::from_blob(ids.data(), {batch, len}, torch::kLong).to(device);  // [B, L]
    const torch::Tensor target =
        torch::from_blob(targets.data(), {batch * n_max}, torch::kLong).to(device);  // [B*n]

    torch::Tensor hidden, external;  // [B, L, C] from the model, or [B*n, V] given
    if (opts.logits) {
      const torch::Tensor all = opts.logits(input);  // [B, L, V]
      MQ_CHECK(all.dim() == 3 && all.size(0) == batch && all.size(1) == len &&
                   all.size(2) == vocab,
               "scoring: the external model returned logits of shape ", all.sizes(),
               ", expected [", batch, ", ", len, ", ", vocab, "]");
      external = all.narrow(1, len - n_max, n_max).reshape({batch * n_max, vocab});
    } else {
      hidden = model->hidden_states(input);  // [B, L, C]
    }
    const torch::Tensor scored =
        opts.logits ? torch::Tensor()
                    : hidden.narrow(1, len - n_max, n_max)
                          .reshape({batch * n_max, hidden.size(2)});  // [B*n, C]
    std::vector<torch::Tensor> parts;
    for (int64_t r0 = 0; r0 < batch * n_max; r0 += rows_per_chunk) {
      const int64_t rows = std::min(rows_per_chunk, batch * n_max - r0);
      const torch::Tensor logits =
          opts.logits ? external.narrow(0, r0, rows).to(torch::kFloat32)
                      : model->logits(scored.narrow(0, r0, rows)).to(torch::kFloat32);  // [r, V]
      const torch::Tensor picked =
          logits.gather(1, target.narrow(0, r0, rows).unsqueeze(1)).squeeze(1);  // [r]
      parts.push_back((picked - logits.logsumexp(1)).to(torch::kFloat64));     // [r]
    }
    const torch::Tensor logp =
        torch::cat(parts).reshape({batch, n_max}).to(torch::kCPU).contiguous();  // [B, n] f64
    const auto acc = logp.accessor<double, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      const ScoringWindow& w = windows[order[i + b]];
      double sum = 0.0;
      for (int64_t t = n_max - w.num_scored; t < n_max; ++t) sum += acc[b][t];
      result[order[i + b]] = sum;
      progress.scored_done += w.num_scored;
    }
    progress.windows_done += batch;
    progress.tokens_done += batch * len;
    progress.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (opts.progress) opts.progress(progress);
    i = j;
  }
  return result;
}

}  // namespace mq
