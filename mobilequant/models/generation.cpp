// mobilequant/models/generation.cpp
#include "mobilequant/models/generation.h"

#include "mobilequant/core/error.h"

namespace mq {

std::vector<int64_t> generate_greedy(CausalLm& model, const std::vector<int64_t>& prompt,
                                     int64_t max_new_tokens, int64_t stop_id) {
  MQ_CHECK(!prompt.empty(), "generate_greedy: the prompt must hold at least one token (e.g. BOS)");
  torch::NoGradGuard no_grad;
  const auto device = model->parameters().front().device();
  const int64_t limit = model->config().max_position_embeddings;
  std::vector<int64_t> ids = prompt;
  std::vector<int64_t> out;
  for (int64_t step = 0; step < max_new_tokens && static_cast<int64_t>(ids.size()) < limit; ++step) {
    auto input = torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);  // [1, T]
    auto hidden = model->hidden_states(input);                               // [1, T, C]
    auto last = model->logits(hidden.select(1, hidden.size(1) - 1));        // [1, V]
    const int64_t next = last.argmax(-1).item<int64_t>();
    out.push_back(next);
    ids.push_back(next);
    if (next == stop_id) break;
  }
  return out;
}

}  // namespace mq
