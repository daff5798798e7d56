// tests/train/test_blockwise_trainer.cpp
// The block-wise trainer (train/blockwise_trainer.h) on a tiny GQA llama (2 blocks) at W4A8
// with every equivalent transform: each block's MSE to its float target falls; the trained
// and folded model is closer to the float model's last block than RTN; groups that are
// switched off do not move; a run resumed from a checkpoint after block 1 ends bit for bit
// where an uninterrupted run does; a NaN in block 1's scales stops the run naming the block.
#include <catch2/catch.hpp>

#include <iostream>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/train/blockwise_trainer.h"
#include "tests/support/tiny_quantized.h"
#include "tests/support/test_support.h"

namespace {

/// Each block's last-epoch mean loss must fall below this fraction of its first epoch's.
constexpr double kLossRatio = 0.97;
/// The trained model's last-block MSE to the float model on the training windows must fall
/// below this fraction of RTN's (the same quantizers, no transforms, no clipping) ...
constexpr double kMseRatio = 0.9;
/// ... and on held-out windows must not rise above RTN's (8 windows of random tokens: the
/// held-out gain is small and moves with the optimizer's last bits, 0.978 with LibTorch's
/// per-parameter AdamW, 0.999 with the fused one).
constexpr double kHeldOutMseRatio = 1.0;

/// The tiny llama at W4A8 with every LET pair (tests/support/tiny_quantized.h).
mq::test::TinyQuantized make_setup() { return mq::test::make_tiny_w4a8(); }

/// Options of the loss tests: 8 epochs of 4 steps per block, every group on.
mq::BlockwiseOptions train_options() {
  mq::BlockwiseOptions o;
  o.epochs = 8;
  o.batch_size = 2;
  o.let = {true, 5e-3, 5e-4, 0.0};
  o.lwc = {true, 5e-2, 5e-3, 0.0};
  o.lrl = {true, 1e-7, 1e-8, 0.0};  // Adam steps ~lr: 16-bit scales are ~1e-5
  return o;
}

/// The last block's output [N, T, C] for `ids` through the model as it is (hooks included).
torch::Tensor last_block_output(mq::CausalLm& model, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  auto h = model->embed(ids);
  for (int64_t i = 0; i < model->config().num_hidden_layers; ++i) h = model->run_layer(i, h);
  return h;
}

/// Every parameter of the wrapper (float weights and quantization parameters) by name.
std::map<std::string, torch::Tensor> all_parameters(mq::QuantizedModel& qm) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : qm->named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

}  // namespace

TEST_CASE("Block-wise training lowers every block's loss and beats RTN on the last block",
          "[unit]") {
  torch::manual_seed(0);
  auto s = make_setup();
  auto gen = at::detail::createCPUGenerator(11);
  const auto held_out = torch::randint(0, s.lm.model->config().vocab_size, {8, 24}, gen);
  // References: the float model (quantization off, scales 1) and RTN (quantization on,
  // scales 1, no clipping), both before training.
  s.qm->set_quantization(false);
  const auto fp_train = last_block_output(s.lm.model, s.windows);
  const auto fp_held = last_block_output(s.lm.model, held_out);
  s.qm->set_quantization(true);
  const double rtn_train = torch::mse_loss(last_block_output(s.lm.model, s.windows), fp_train)
                               .item<double>();
  const double rtn_held = torch::mse_loss(last_block_output(s.lm.model, held_out), fp_held)
                              .item<double>();

  auto o = train_options();
  // ARL off here: with it on (lr 1e-7) the training windows improve as much but the held-out
  // MSE did not (measured 0.1134 -> 0.1139).
  o.lrl.enabled = false;
  int64_t seen = 0, layers_seen = 0;
  o.on_step = [&](const mq::TrainStep& t) {
    REQUIRE(t.layer == seen / 32);
    REQUIRE(t.step == seen % 32);
    REQUIRE(t.total_steps == 32);
    REQUIRE(t.tokens == 48);
    REQUIRE(std::isfinite(t.loss));
    REQUIRE(t.grad_norm > 0.0);
    ++seen;
  };
  o.on_layer = [&](int64_t layer, double first, double last) {
    REQUIRE(layer == layers_seen++);
    REQUIRE(first > 0.0);
    REQUIRE(last > 0.0);
  };
  const auto r = mq::train_blockwise(*s.qm, s.windows, o);
  REQUIRE(r.layers == 2);
  REQUIRE(r.resumed_layers == 0);
  REQUIRE(r.steps == 64);
  REQUIRE(seen == 64);
  REQUIRE(layers_seen == 2);
  REQUIRE(r.first_epoch_loss.size() == 2);
  REQUIRE(r.last_epoch_loss.size() == 2);
  // Everything is folded: no clipping bounds left, every scale back at 1.
  REQUIRE(s.qm->lwc_parameters().empty());
  for (const auto& p : s.qm->let_parameters()) REQUIRE(torch::all(p == 1).item<bool>());

  const double trained_train =
      torch::mse_loss(last_block_output(s.lm.model, s.windows), fp_train).item<double>();
  const double trained_held =
      torch::mse_loss(last_block_output(s.lm.model, held_out), fp_held).item<double>();
  std::cout << "  tiny-llama w4a8 block-wise: block 0 loss " << r.first_epoch_loss[0] << " -> "
            << r.last_epoch_loss[0] << ", block 1 loss " << r.first_epoch_loss[1] << " -> "
            << r.last_epoch_loss[1] << "; last-block MSE to float: train windows " << rtn_train
            << " (RTN) -> " << trained_train << ", held-out " << rtn_held << " -> "
            << trained_held << std::endl;
  // Deterministic on the CPU; measured (fused AdamW): block 0 loss 0.02780 -> 0.02519 (ratio
  // 0.91), block 1 0.1031 -> 0.0977 (0.95); last-block MSE to float, training windows 0.1216
  // (RTN) -> 0.0981 (0.81), held-out 0.1134 -> 0.1133. A trainer that applied no update, the wrong
  // sign, or trained the wrong block would not go below the first epoch or RTN.
  for (size_t i = 0; i < 2; ++i) {
    INFO("block " << i);
    CHECK(r.last_epoch_loss[i] < kLossRatio * r.first_epoch_loss[i]);
  }
  CHECK(trained_train < kMseRatio * rtn_train);
  CHECK(trained_held < kHeldOutMseRatio * rtn_held);
}

TEST_CASE("Block-wise training leaves switched-off groups alone", "[unit]") {
  auto s = make_setup();
  std::vector<torch::Tensor> ranges;
  for (const auto& p : s.qm->lrl_parameters()) ranges.push_back(p.detach().clone());
  std::vector<torch::Tensor> weights;
  for (const auto& p : s.lm.model->parameters()) weights.push_back(p.detach().clone());
  mq::BlockwiseOptions o;
  o.epochs = 1;
  o.batch_size = 4;
  o.lrl.enabled = false;
  o.lwc.enabled = false;
  int64_t steps = 0;
  o.on_step = [&](const mq::TrainStep& t) {
    ++steps;
    REQUIRE(t.lr[static_cast<size_t>(mq::ParamGroup::kLwc)] == 0.0);
    REQUIRE(t.lr[static_cast<size_t>(mq::ParamGroup::kLrl)] == 0.0);
    // Only the block being trained moves: the next block's scales are still 1.
    if (t.layer == 0) {
      for (const auto& p : s.qm->let_parameters(1)) REQUIRE(torch::all(p == 1).item<bool>());
    }
  };
  mq::train_blockwise(*s.qm, s.windows, o);
  REQUIRE(steps == 4);
  const auto after = s.qm->lrl_parameters();
  REQUIRE(after.size() == ranges.size());
  for (size_t i = 0; i < after.size(); ++i) REQUIRE(torch::equal(after[i], ranges[i]));
  REQUIRE(s.qm->lwc_parameters().empty());
  // LET trained, then folded into the weights: the block weights changed, the embedding and
  // the classifier (model-level, not trained) did not.
  const auto now = s.lm.model->named_parameters();
  REQUIRE(now.size() == weights.size());
  bool block_moved = false;
  for (size_t i = 0; i < now.size(); ++i) {
    const auto& name = now[i].key();
    const bool same = torch::equal(now[i].value(), weights[i]);
    if (name.rfind("model.layers.", 0) == 0) {
      block_moved = block_moved || !same;
    } else {
      INFO(name);
      REQUIRE(same);
    }
  }
  REQUIRE(block_moved);
}

TEST_CASE("Block-wise training resumed after block 1 ends bit for bit as an uninterrupted run",
          "[unit]") {
  auto o = train_options();
  o.epochs = 2;
  // Uninterrupted.
  auto a = make_setup();
  const auto ra = mq::train_blockwise(*a.qm, a.windows, o);
  REQUIRE(ra.layers == 2);
  // Interrupted after block 1 of 2 ...
  const auto dir = mq::test::scratch_dir("blockwise_resume");
  auto b = make_setup();
  auto ob = o;
  ob.checkpoint_dir = dir.string();
  ob.stop_after_layers = 1;
  const auto rb = mq::train_blockwise(*b.qm, b.windows, ob);
  REQUIRE(rb.layers == 1);
  REQUIRE(rb.last_epoch_loss.size() == 1);
  REQUIRE(std::filesystem::exists(mq::blockwise_checkpoint_path(dir.string())));
  // ... and resumed on a freshly loaded and calibrated model.
  auto c = make_setup();
  auto oc = o;
  oc.checkpoint_dir = dir.string();
  oc.resume = true;
  const auto rc = mq::train_blockwise(*c.qm, c.windows, oc);
  REQUIRE(rc.resumed_layers == 1);
  REQUIRE(rc.layers == 2);
  REQUIRE(rc.steps == ra.steps / 2);
  REQUIRE(rc.first_epoch_loss.size() == 1);
  REQUIRE(rc.first_epoch_loss[0] == ra.first_epoch_loss[1]);
  REQUIRE(rc.last_epoch_loss[0] == ra.last_epoch_loss[1]);
  const auto pa = all_parameters(a.qm);
  const auto pc = all_parameters(c.qm);
  REQUIRE(pa.size() == pc.size());
  for (const auto& kv : pa) {
    INFO(kv.first);
    auto it = pc.find(kv.first);
    REQUIRE(it != pc.end());
    REQUIRE(torch::equal(kv.second, it->second));
  }
  // A checkpoint of other windows is refused.
  auto d = make_setup();
  REQUIRE_THROWS_WITH(mq::train_blockwise(*d.qm, d.windows.narrow(0, 0, 4), oc),
                      Catch::Contains("written for windows 8x24") && Catch::Contains("4x24"));
  mq::remove_tree(dir.string());
}

TEST_CASE("Block-wise training: a NaN stops the run naming the block; bad batches are errors",
          "[unit]") {
  auto s = make_setup();
  {
    torch::NoGradGuard no_grad;
    s.qm->let_parameters(1).front()[0] = std::numeric_limits<float>::quiet_NaN();
  }
  const auto dir = mq::test::scratch_dir("blockwise_nan");
  mq::BlockwiseOptions o;
  o.epochs = 1;
  o.batch_size = 4;
  o.checkpoint_dir = dir.string();
  REQUIRE_THROWS_WITH(mq::train_blockwise(*s.qm, s.windows, o),
                      Catch::Contains("block 1") && Catch::Contains("non-finite") &&
                          Catch::Contains("step 0") && Catch::Contains("'let'") &&
                          Catch::Contains("after 1 block"));
  o.batch_size = 3;
  REQUIRE_THROWS_WITH(mq::train_blockwise(*s.qm, s.windows, o),
                      Catch::Contains("batch_size 3") && Catch::Contains("8 windows"));
  mq::remove_tree(dir.string());
}
