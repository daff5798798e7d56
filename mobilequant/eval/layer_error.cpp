// mobilequant/eval/layer_error.cpp
// Per-block output error of a model against a float reference (eval/layer_error.h).
#include "mobilequant/eval/layer_error.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "mobilequant/core/error.h"
#include "mobilequant/eval/perplexity.h"
#include "mobilequant/eval/wikitext.h"

namespace mq {

BlockOutputTap::BlockOutputTap(ForwardHooks* inner, Sink sink)
    : inner_(inner), sink_(std::move(sink)) {}

LayerWeights BlockOutputTap::layer_weights(int64_t layer, const LayerWeights& stored) {
  return inner_ != nullptr ? inner_->layer_weights(layer, stored) : stored;
}

torch::Tensor BlockOutputTap::activation(int64_t layer, ActSite site, const torch::Tensor& x) {
  torch::Tensor y = inner_ != nullptr ? inner_->activation(layer, site, x) : x;
  if (site == ActSite::kResidAdd2Out || site == ActSite::kFinalNormOut) sink_(layer, y);
  return y;
}

torch::Tensor BlockOutputTap::attention_probs(int64_t layer, const torch::Tensor& scores,
                                              double scale, const torch::Tensor& mask) {
  if (inner_ != nullptr) return inner_->attention_probs(layer, scores, scale, mask);
  return ForwardHooks::attention_probs(layer, scores, scale, mask);  // [B, H, T, T]
}

ScopedHooks::ScopedHooks(CausalLm model, ForwardHooks* hooks)
    : model_(std::move(model)), previous_(model_->hooks()) {
  model_->set_hooks(hooks);
}

ScopedHooks::~ScopedHooks() { model_->set_hooks(previous_); }

double LayerErrorSums::rel_mse() const {
  return sq_ref > 0.0 ? sq_diff / sq_ref : std::numeric_limits<double>::quiet_NaN();
}

double LayerErrorSums::cosine() const {
  return positions > 0 ? cosine_sum / static_cast<double>(positions)
                       : std::numeric_limits<double>::quiet_NaN();
}

void LayerErrorSums::add(const torch::Tensor& h, const torch::Tensor& h_ref,
                         const std::string& what) {
  MQ_CHECK(h.defined() && h_ref.defined() && h.dim() >= 1 && h.sizes() == h_ref.sizes(),
           "layer-error: ", what, ": the model's tensor has shape ",
           h.defined() ? h.sizes() : torch::IntArrayRef{}, " but the reference's has ",
           h_ref.defined() ? h_ref.sizes() : torch::IntArrayRef{}, "; expected equal shapes");
  const torch::Tensor a = h.to(torch::kFloat64);                           // [..., C]
  const torch::Tensor b = h_ref.to(a.device(), torch::kFloat64);           // [..., C]
  sq_diff += (a - b).square().sum().item<double>();
  sq_ref += b.square().sum().item<double>();
  cosine_sum += torch::cosine_similarity(a, b, /*dim=*/-1).sum().item<double>();  // over [...]
  positions += a.numel() / a.size(-1);
}

std::vector<ScoringWindow> layer_error_windows(const Tokenizer& tokenizer, const std::string& text,
                                               int64_t max_length, int64_t count) {
  MQ_CHECK(count >= 1, "layer-error: expected at least 1 window, got ", count,
           " (eval limit 0?)");
  const std::vector<std::string> docs = wikitext_documents(text);
  std::vector<ScoringWindow> windows;
  for (size_t d = 0; d < docs.size() && static_cast<int64_t>(windows.size()) < count; ++d) {
    auto w = lm_eval_wikitext_windows(tokenizer, {docs[d]}, max_length);
    for (auto& x : w) {
      if (static_cast<int64_t>(windows.size()) == count) break;
      x.document = static_cast<int64_t>(d);
      windows.push_back(std::move(x));
    }
  }
  MQ_CHECK(!windows.empty(), "layer-error: the text's ", docs.size(),
           " WikiText documents encode to no window");
  return windows;
}

namespace {

/// Checks that `reference` can be compared with `model`.
void check_same_shape(const CausalLm& model, const CausalLm& reference) {
  const ModelConfig& m = model->config();
  const ModelConfig& r = reference->config();
  MQ_CHECK(m.num_hidden_layers == r.num_hidden_layers && m.hidden_size == r.hidden_size &&
               m.vocab_size == r.vocab_size,
           "layer-error: the reference model has ", r.num_hidden_layers, " layers, hidden size ",
           r.hidden_size, " and vocabulary ", r.vocab_size, ", but the evaluated model has ",
           m.num_hidden_layers, ", ", m.hidden_size, " and ", m.vocab_size,
           "; expected the float model the evaluated one was quantized from");
}

/// The device of a model's parameters.
torch::Device device_of(const CausalLm& model) {
  const auto params = model->parameters();
  MQ_CHECK(!params.empty(), "layer-error: the model has no parameters");
  return params.front().device();
}

}  // namespace

LayerErrorResult evaluate_layer_error(CausalLm& model, CausalLm& reference,
                                      const std::vector<ScoringWindow>& windows,
                                      const std::function<void(const ScoreProgress&)>& progress) {
  check_same_shape(model, reference);
  const int64_t layers = model->config().num_hidden_layers;
  const int64_t vocab = model->config().vocab_size;
  const torch::Device dev = device_of(model), ref_dev = device_of(reference);
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  LayerErrorResult r;
  r.layers.assign(static_cast<size_t>(layers), LayerErrorSums{});
  ScoreProgress p;
  p.windows_total = static_cast<int64_t>(windows.size());
  // Entry i < layers: block i's output; entry `layers`: the final norm's.
  const auto entry = [layers](int64_t layer) { return layer >= 0 ? layer : layers; };
  for (size_t w = 0; w < windows.size(); ++w) {
    const int64_t len = windows[w].input_length();
    MQ_CHECK(len >= 1, "layer-error: window ", w, " has no input token");
    std::vector<int64_t> ids(windows[w].tokens.begin(), windows[w].tokens.begin() + len);
    for (size_t t = 0; t < ids.size(); ++t) {
      MQ_CHECK(ids[t] >= 0 && ids[t] < vocab, "layer-error: window ", w, ": token id ", ids[t],
               " at position ", t, " is outside the vocabulary [0, ", vocab, ")");
    }
    const torch::Tensor input = torch::tensor(ids, torch::kLong).unsqueeze(0);  // [1, L]

    // The reference's outputs first, kept until the model's arrive.
    std::vector<torch::Tensor> ref_out(static_cast<size_t>(layers + 1));  // each [1, L, C]
    {
      BlockOutputTap tap(reference->hooks(), [&](int64_t layer, const torch::Tensor& h) {
        ref_out[static_cast<size_t>(entry(layer))] = h;
      });
      ScopedHooks installed(reference, &tap);
      reference->hidden_states(input.to(ref_dev));
    }
    {
      BlockOutputTap tap(model->hooks(), [&](int64_t layer, const torch::Tensor& h) {
        const auto e = static_cast<size_t>(entry(layer));
        const std::string what =
            layer >= 0 ? "layer " + std::to_string(layer) + " (resid_add_2.output)"
                       : std::string("final norm (model.norm.output)");
        MQ_CHECK(ref_out[e].defined(), "layer-error: ", what,
                 ": the reference reported no tensor there");
        LayerErrorSums& sums = layer >= 0 ? r.layers[e] : r.final_norm;
        sums.add(h, ref_out[e], what);
        ref_out[e] = torch::Tensor();  // consumed: what stays defined, the model never reported
      });
      ScopedHooks installed(model, &tap);
      model->hidden_states(input.to(dev));
    }
    for (int64_t e = 0; e <= layers; ++e) {
      MQ_CHECK(!ref_out[static_cast<size_t>(e)].defined(),
               "layer-error: the evaluated model reported no ",
               e < layers ? "output of layer " + std::to_string(e) : std::string("final norm"));
    }
    r.windows += 1;
    r.tokens += len;
    p.windows_done = r.windows;
    p.tokens_done = r.tokens;
    p.scored_done = r.tokens;
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (progress) progress(p);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace mq
