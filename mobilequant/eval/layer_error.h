// mobilequant/eval/layer_error.h
// The `layer-error` evaluation: how far each decoder block's output of the evaluated model
// (normally the simulated-quantized one) lies from the float model's, on the same input ids.
// Both models run their own full forward, so errors accumulate through depth as they do in
// deployment; per block the figures are
//   rel_mse = Σ (h − h_ref)² / Σ h_ref²     over every position and channel of every window,
//   cosine  = mean over positions of cos(h[t, :], h_ref[t, :]),
// both accumulated in fp64. h is the tensor the forward continues with at the block's
// `resid_add_2.output` site (after that site's fake quantizer, if any); the final norm's
// output (`model.norm.output`) is one extra entry.
//
// The block outputs are recorded by BlockOutputTap, ForwardHooks that wrap a model's own hooks
// (or none) and pass every call through unchanged. Any installed hooks switch the decoder to
// its explicit path (attention without SDPA, SiLU as x * sigmoid(x); models/decoder.h), so a
// float model compared here runs that path too: the float model against itself gives exactly
// zero, and a quantized model is compared with the same computation with quantization off.
// The inputs are the model inputs of the first windows of lm-eval's `wikitext` protocol
// (eval/perplexity.h), every position counted.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mobilequant/eval/token_windows.h"
#include "mobilequant/eval/window_scorer.h"
#include "mobilequant/io/tokenizer.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// ForwardHooks that forward every call to `inner` (nullptr: the plain explicit path) and hand
/// the tensor the forward continues with at each block's resid_add_2.output (layer 0..N-1)
/// and at model.norm.output (layer -1) to a sink. They change no tensor and no weight.
class BlockOutputTap : public ForwardHooks {
 public:
  /// Receives (layer, h): h [B, T, C] as returned by the inner hooks; layer -1: final norm.
  using Sink = std::function<void(int64_t layer, const torch::Tensor& h)>;
  /// Wraps `inner` (not owned; may be nullptr) and reports to `sink`.
  BlockOutputTap(ForwardHooks* inner, Sink sink);
  /// The inner hooks' weights (stored ones without inner hooks).
  LayerWeights layer_weights(int64_t layer, const LayerWeights& stored) override;
  /// The inner hooks' result (x without), reported to the sink at the two recorded sites.
  torch::Tensor activation(int64_t layer, ActSite site, const torch::Tensor& x) override;
  /// The inner hooks' attention probabilities (the composed ops without inner hooks).
  torch::Tensor attention_probs(int64_t layer, const torch::Tensor& scores, double scale,
                                const torch::Tensor& mask) override;

 private:
  ForwardHooks* inner_;
  Sink sink_;
};

/// Installs `hooks` on `model` for the guard's lifetime, then puts back what was installed.
class ScopedHooks {
 public:
  /// Installs `hooks` (not owned) on `model`.
  ScopedHooks(CausalLm model, ForwardHooks* hooks);
  ~ScopedHooks();
  ScopedHooks(const ScopedHooks&) = delete;
  ScopedHooks& operator=(const ScopedHooks&) = delete;

 private:
  CausalLm model_;
  ForwardHooks* previous_;
};

/// The accumulated error of one recorded tensor.
struct LayerErrorSums {
  double sq_diff = 0.0;     ///< Σ (h − h_ref)²
  double sq_ref = 0.0;      ///< Σ h_ref²
  double cosine_sum = 0.0;  ///< Σ over positions of cos(h[t, :], h_ref[t, :])
  int64_t positions = 0;    ///< positions accumulated (batch x tokens)

  /// Σ (h − h_ref)² / Σ h_ref² (NaN while sq_ref is 0).
  double rel_mse() const;
  /// cosine_sum / positions (NaN while empty).
  double cosine() const;
  /// Adds h and its reference h_ref, both [..., C] of one shape (any dtype; computed in
  /// fp64). Throws mq::Error naming `what` if the shapes differ.
  void add(const torch::Tensor& h, const torch::Tensor& h_ref, const std::string& what);
};

/// The outcome of evaluate_layer_error.
struct LayerErrorResult {
  std::vector<LayerErrorSums> layers;  ///< one per decoder block, in order
  LayerErrorSums final_norm;           ///< model.norm.output
  int64_t windows = 0;                 ///< model inputs
  int64_t tokens = 0;                  ///< positions per recorded tensor (Σ input lengths)
  double seconds = 0.0;                ///< wall time of both models' forwards
};

/// The model inputs of the lm-eval `wikitext` protocol's first `count` windows for `text`
/// (documents in order, rolling windows of max_length; lm_eval_wikitext_windows). Only as
/// many documents are tokenized as the windows need. Throws mq::Error if count < 1 or the
/// text has no window.
std::vector<ScoringWindow> layer_error_windows(const Tokenizer& tokenizer, const std::string& text,
                                               int64_t max_length, int64_t count);

/// Runs `model` (through its installed hooks) and `reference` (through its own, normally none)
/// on each window's input ids, one window per forward under NoGradGuard, each on the device of
/// its parameters, and accumulates every block output's error against the reference's.
/// Throws mq::Error if the two models differ in blocks, width or vocabulary, or a token id is
/// outside the vocabulary. `model` and `reference` may be the same model.
LayerErrorResult evaluate_layer_error(
    CausalLm& model, CausalLm& reference, const std::vector<ScoringWindow>& windows,
    const std::function<void(const ScoreProgress&)>& progress = {});

}  // namespace mq
