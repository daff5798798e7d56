// mobilequant/calib/act_stats.h
// Activation statistics through the decoder's taps: for every site of every layer, the
// running minimum and maximum per channel (the last dimension) over every calibration token,
// or per tensor where the last dimension is the sequence (attention scores/probabilities).
// Per-channel |max| feeds SmoothQuant (§1.5); per-tensor min/max initialise the static
// activation ranges (§3.3: pure min/max, no percentile). Saved to safetensors with the
// provenance in its metadata, and reused when the same inputs are asked for again.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include "mobilequant/config/quant_sites.h"
#include "mobilequant/models/decoder.h"

namespace mq {

/// Range of one site.
struct SiteStats {
  torch::Tensor min;  ///< [C] per channel, or [1] (sites without a channel dim); fp32, CPU
  torch::Tensor max;  ///< same shape as min
  int64_t batches = 0;  ///< forward passes that reached the site

  /// max(|min|, |max|) per channel: [C] or [1].
  torch::Tensor absmax() const;
  /// Per-tensor minimum as a scalar tensor [].
  torch::Tensor tensor_min() const;
  /// Per-tensor maximum as a scalar tensor [].
  torch::Tensor tensor_max() const;
};

/// Statistics of every (layer, site) seen; model-level sites use layer -1.
class ActStats {
 public:
  /// Folds x (any shape, last dim channels) into the running range of (layer, site). The
  /// reduction runs on x's device; results stay there until finish().
  void observe(int64_t layer, ActSite site, const torch::Tensor& x);
  /// Moves everything to the CPU in fp32 and checks every value is finite: a NaN or inf
  /// throws mq::Error naming the site (e.g. "model.layers.3.mlp.w2.output") and the value.
  void finish();
  /// True if (layer, site) was observed.
  bool contains(int64_t layer, ActSite site) const;
  /// The stats of (layer, site); throws mq::Error naming the site when it was never observed.
  const SiteStats& at(int64_t layer, ActSite site) const;
  /// Every entry, ordered by (layer, site).
  const std::map<std::pair<int64_t, ActSite>, SiteStats>& entries() const { return stats_; }

  /// Writes "<qualified site>.min"/".max" (fp32 [C] or [1]) and ".batches" (int64 [1])
  /// tensors and `metadata` to `path` (atomically).
  void save(const std::string& path, const std::map<std::string, std::string>& metadata) const;
  /// Reads a file written by save(); unknown names, a site lacking one of its three tensors,
  /// bad shapes and non-finite values are errors naming the file and tensor.
  /// `metadata`, if given, receives the file's metadata.
  static ActStats load(const std::string& path,
                       std::map<std::string, std::string>* metadata = nullptr);

 private:
  std::map<std::pair<int64_t, ActSite>, SiteStats> stats_;
};

/// Progress of a calibration pass: (windows done, windows total).
using CalibrationProgress = std::function<void(int64_t done, int64_t total)>;

/// Runs the windows [N, T] (int64) through `model` in batches of `batch_size` under
/// NoGradGuard on the model's device and returns the statistics of every site (finished).
/// Whatever hooks the model had are restored afterwards (also on error).
ActStats collect_act_stats(CausalLm& model, const torch::Tensor& windows, int64_t batch_size,
                           const CalibrationProgress& progress = {});

}  // namespace mq
