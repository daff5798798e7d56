// tests/support/tiny_quantized.h
// The trainers' test subject: the golden tiny GQA llama, 8 windows of 24 random tokens
// (seed 3), calibrated at W4A8 with every equivalent-transform pair. Deterministic.
#pragma once

#include <torch/torch.h>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_model.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

namespace mq::test {

/// A loaded model, its calibrated wrapper and the windows it was calibrated on.
struct TinyQuantized {
  LoadedModel lm;
  QuantizedModel qm{nullptr};
  torch::Tensor windows;  // [8, 24] int64
};

/// A freshly loaded and calibrated tiny llama at W4A8 with every LET pair.
inline TinyQuantized make_tiny_w4a8() {
  TinyQuantized s;
  s.lm = load_model((golden_dir() / "tiny-llama").string());
  auto gen = at::detail::createCPUGenerator(3);
  s.windows = torch::randint(0, s.lm.model->config().vocab_size, {8, 24}, gen);
  auto stats = collect_act_stats(s.lm.model, s.windows, 4);
  const auto quant = load_quant_config("w4a8", (source_dir() / "configs" / "quant").string());
  s.qm = QuantizedModel(s.lm.model, QuantizedModelOptions(quant).let(LetPairs{}));
  s.qm->set_act_ranges(stats);
  return s;
}

}  // namespace mq::test
