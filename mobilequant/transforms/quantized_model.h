// mobilequant/transforms/quantized_model.h
// The simulated-quantization model: a wrapper around a float CausalLm that plugs into its
// ForwardHooks (models/decoder.h) the learnable equivalent transforms of every block
// (transforms/smooth_scales.h), a weight fake quantizer per weight site and an activation
// fake quantizer per enabled activation site (quant/fake_quantizer.h), as a QuantConfig says.
//
// Lifecycle (the torchao way, style.md §3.9):
//   QuantizedModel qm(float_model, options);   // prepare: wraps, scales = 1, ranges unset
//   qm->set_act_ranges(stats);                  // calibrate (calib/act_stats.h)
//   ... train let/lwc/lrl parameters ...         // train (next issue)
//   qm->fold();                                 // convert: scales and clipping into the weights
//   save_quantized_model(...)                   // transforms/quantized_checkpoint.h
//
// The float model's parameters stay the checkpoint's (Hugging Face names); the wrapper owns
// only the quantization parameters, named as the reference names them
// ("model.layers.3.qkv_smooth_scale", "model.layers.3.mlp.w2.weight_quantizer.upbound_factor",
// "model.layers.3.self_attn.qk_bmm.output_quantizer.scale"). With quantization switched off
// and no scales, no hooks are installed and the float model runs at its own speed.
#pragma once

#include <torch/torch.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/core/tensor_map.h"
#include "mobilequant/models/decoder.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/transforms/smooth_scales.h"

namespace mq {

class ActStats;

/// Options of a QuantizedModel.
struct QuantizedModelOptions {
  /// Every site's spec.
  explicit QuantizedModelOptions(QuantConfig quant) : quant_(std::move(quant)) {}
  TORCH_ARG(QuantConfig, quant);
  /// Which equivalent-transform scales exist (none by default: RTN).
  TORCH_ARG(LetPairs, let) = LetPairs{false, false, false, false, false};
};

/// The quantization state of one decoder block.
class QuantizedLayerImpl : public torch::nn::Module {
 public:
  QuantizedLayerImpl(const ModelConfig& cfg, const QuantizedModelOptions& options, int64_t layer);
  LayerScales scales{nullptr};  ///< null when no pair is on
  /// One per WeightSite; empty holders where disabled.
  std::vector<WeightFakeQuantizer> weight_quantizers =
      std::vector<WeightFakeQuantizer>(kNumWeightSites, WeightFakeQuantizer(nullptr));
  /// One per ActSite; empty holders where disabled and at model-level sites.
  std::vector<ActFakeQuantizer> act_quantizers =
      std::vector<ActFakeQuantizer>(kNumActSites, ActFakeQuantizer(nullptr));
};
TORCH_MODULE(QuantizedLayer);

/// The tensor of `site` inside `w` (HF layout: [out, in], or [C] for a norm).
torch::Tensor& weight_of(LayerWeights& w, WeightSite site);
/// The same, read only.
const torch::Tensor& weight_of(const LayerWeights& w, WeightSite site);

/// A float CausalLm with equivalent transforms and fake quantizers plugged in.
class QuantizedModelImpl : public torch::nn::Module, public ForwardHooks {
 public:
  /// Wraps `model` (the wrapper holds it) and installs the hooks. The quantization parameters
  /// are created (fp32) on the device of the model's parameters. Validates the config against
  /// the model's shapes (group sizes).
  QuantizedModelImpl(CausalLm model, QuantizedModelOptions options);
  ~QuantizedModelImpl() override;

  /// Logits [B, T, V] for input_ids [B, T], through the hooks.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});

  // ForwardHooks
  /// Scales applied, then each enabled weight quantizer (cached under set_weight_cache).
  LayerWeights layer_weights(int64_t layer, const LayerWeights& stored) override;
  /// The observer (if any) sees x, then the site's quantizer (if enabled and on) applies.
  torch::Tensor activation(int64_t layer, ActSite site, const torch::Tensor& x) override;
  /// On CUDA with quantization on and no observer, per-tensor (or float) qk_bmm.output and
  /// pv_bmm.input sites and the causal mask: one fused kernel each way
  /// (quant/fused_softmax_quantize.h); otherwise the composed ops.
  torch::Tensor attention_probs(int64_t layer, const torch::Tensor& scores, double scale,
                                const torch::Tensor& mask) override;

  /// Switches every fake quantizer on or off at once (scales stay applied).
  void set_quantization(bool on);
  /// True while fake quantization is on.
  bool quantization() const { return quant_on_; }
  /// Observes activations (after the transforms, before quantization); empty clears.
  void set_observer(ActivationObserver observer);
  /// Caches the transformed, fake-quantized weights of every block while no gradient is
  /// recorded (evaluation). Any change through this class's methods invalidates the cache;
  /// call invalidate_weight_cache() after editing parameters directly.
  void set_weight_cache(bool on);
  /// Drops cached weights.
  void invalidate_weight_cache();
  /// Quantizes every weight as the integer export does (WeightFakeQuantizer::
  /// forward_export_codes: codes and quantization parameters from the fp32 weight, in fp32),
  /// whatever the model's dtype: the fp64 simulation of an export then runs on its codes.
  /// Folded models only (throws mq::Error naming the block when LET scales are present).
  void set_export_codes(bool on);

  /// Sets every enabled activation quantizer's range from calibration statistics (per-tensor
  /// min/max, or per channel where the spec says so). Throws mq::Error naming a site the
  /// statistics lack.
  void set_act_ranges(const ActStats& stats);
  /// Makes activation ranges learnable (ARL) or frozen.
  void set_act_ranges_learnable(bool learnable);
  /// Enables learnable weight clipping on every weight quantizer (bounds at `init`).
  void enable_lwc(double init = kLwcInit);

  /// Folds everything into the float weights in place (§1.4): scales applied and reset to 1,
  /// weights clipped to their LWC ranges and LWC removed. Afterwards the float model with
  /// quantization off equals the transformed model before folding.
  void fold();
  /// fold() for block i only (block-wise training folds each block once it is trained).
  void fold_layer(int64_t i);
  /// Enables learnable weight clipping on block i's weight quantizers only (bounds at `init`).
  void enable_lwc(int64_t i, double init);
  /// Removes block i's LWC bounds without folding them (e.g. before loading a folded block).
  void disable_lwc(int64_t i);

  /// The LET scales (empty if none).
  std::vector<torch::Tensor> let_parameters();
  /// The LWC bounds (empty unless enable_lwc).
  std::vector<torch::Tensor> lwc_parameters();
  /// The activation scales and offsets.
  std::vector<torch::Tensor> lrl_parameters();
  /// Block i's LET scales (empty if none).
  std::vector<torch::Tensor> let_parameters(int64_t i);
  /// Block i's LWC bounds (empty unless enabled there).
  std::vector<torch::Tensor> lwc_parameters(int64_t i);
  /// Block i's activation scales and offsets (initialised quantizers only; no model-level sites).
  std::vector<torch::Tensor> lrl_parameters(int64_t i);

  /// The module path of one of this wrapper's parameters (e.g.
  /// "layers.3.scales.qkv_smooth_scale"), found by identity; "" if it is none of them.
  std::string parameter_name(const torch::Tensor& p) const;
  /// Every quantization parameter under the reference's qualified names.
  TensorMap quant_state() const;
  /// Loads a quant_state(); every name must be known and every shape match (`source` in
  /// errors). Activation quantizers named in it become initialised.
  void load_quant_state(const TensorMap& tensors, const std::string& source);

  /// The quantization config.
  const QuantConfig& quant_config() const { return options.quant(); }
  /// The wrapped float model.
  CausalLm float_model() const { return model_; }
  /// The quantization state of block i.
  QuantizedLayer layer(int64_t i) const;

  QuantizedModelOptions options;

 private:
  void update_hooks();
  ActFakeQuantizer& act_quantizer(int64_t layer, ActSite site);
  /// Calls fn(layer, site, quantizer) for every enabled activation quantizer, model-level
  /// sites (layer -1) first, then block by block in site order.
  template <class F>
  void for_each_act_quantizer(F&& fn) const;

  /// layer_weights without the cache: the LET scales, then the fake quantizers.
  LayerWeights simulated_weights(int64_t layer, const LayerWeights& stored);
  /// layer_weights under set_export_codes.
  LayerWeights export_code_weights(int64_t layer, const LayerWeights& stored);

  CausalLm model_;
  torch::nn::ModuleList layers_{nullptr};
  std::vector<QuantizedLayerImpl*> layer_ptrs_;  // layers_'s entries, for the per-site hot path
  std::vector<ActFakeQuantizer> model_act_quantizers_ =  // model-level sites
      std::vector<ActFakeQuantizer>(kNumActSites, ActFakeQuantizer(nullptr));
  bool quant_on_ = true;
  bool cache_on_ = false;
  bool export_codes_ = false;
  std::vector<LayerWeights> cache_;            // per block, when cache_on_ (else empty)
  std::vector<bool> cache_valid_;
  ActivationObserver observer_;
};
TORCH_MODULE(QuantizedModel);

}  // namespace mq
