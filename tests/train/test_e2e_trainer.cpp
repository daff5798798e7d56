// tests/train/test_e2e_trainer.cpp
// The end-to-end trainer core (train/e2e_trainer.h) on a tiny GQA llama at W4A8 with every
// equivalent transform: the MSE to the float model's last-layer outputs falls over epochs;
// groups that are switched off do not move; a NaN in a scale stops the run with an error that
// names the step.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/train/blockwise_trainer.h"
#include "mobilequant/train/cuda_graph_step.h"
#include "mobilequant/train/e2e_trainer.h"
#include "tests/support/tiny_quantized.h"
#include "tests/support/test_support.h"

namespace {

/// Last-epoch mean loss must fall below this fraction of the first epoch's.
constexpr double kLossRatio = 0.98;

/// The tiny llama at W4A8 with every LET pair (tests/support/tiny_quantized.h).
mq::test::TinyQuantized make_setup() { return mq::test::make_tiny_w4a8(); }

}  // namespace

TEST_CASE("End-to-end training lowers the loss to the float model's last layer", "[unit]") {
  torch::manual_seed(0);
  auto s = make_setup();
  mq::EndToEndOptions o;
  o.epochs = 8;
  o.batch_size = 2;
  o.let = {true, 1e-3, 1e-4, 0.0};
  o.lwc = {true, 1e-2, 1e-3, 0.0};
  o.lrl = {true, 1e-7, 1e-8, 0.0};  // Adam steps ~lr: 16-bit scales are ~1e-5
  int64_t seen = 0;
  o.on_step = [&](const mq::TrainStep& t) {
    REQUIRE(t.step == seen++);
    REQUIRE(std::isfinite(t.loss));
    REQUIRE(t.grad_norm > 0.0);
  };
  const auto r = mq::train_end_to_end(*s.qm, s.windows, o);
  std::cout << "  tiny-llama w4a8: loss " << r.first_epoch_loss << " -> " << r.last_epoch_loss
            << " over " << r.steps << " steps" << std::endl;
  REQUIRE(r.steps == 32);
  REQUIRE(seen == 32);
  // Deterministic on the CPU (measured 0.112 -> 0.108): a trainer that applied no update, or
  // the wrong sign, would not go below the first epoch.
  CHECK(r.last_epoch_loss < kLossRatio * r.first_epoch_loss);
}

TEST_CASE("End-to-end training leaves switched-off groups alone", "[unit]") {
  auto s = make_setup();
  std::vector<torch::Tensor> ranges;
  for (const auto& p : s.qm->lrl_parameters()) ranges.push_back(p.detach().clone());
  mq::EndToEndOptions o;
  o.epochs = 1;
  o.batch_size = 4;
  o.lrl.enabled = false;
  o.lwc.enabled = false;
  mq::train_end_to_end(*s.qm, s.windows, o);
  const auto after = s.qm->lrl_parameters();
  REQUIRE(after.size() == ranges.size());
  for (size_t i = 0; i < after.size(); ++i) REQUIRE(torch::equal(after[i], ranges[i]));
  REQUIRE(s.qm->lwc_parameters().empty());
  bool moved = false;
  for (const auto& p : s.qm->let_parameters()) moved = moved || !torch::all(p == 1).item<bool>();
  REQUIRE(moved);
}

TEST_CASE("End-to-end training: a NaN stops the run naming the step; bad batches are errors",
          "[unit]") {
  auto s = make_setup();
  {
    torch::NoGradGuard no_grad;
    s.qm->let_parameters().front()[0] = std::numeric_limits<float>::quiet_NaN();
  }
  mq::EndToEndOptions o;
  REQUIRE_THROWS_WITH(mq::train_end_to_end(*s.qm, s.windows, o),
                      Catch::Contains("non-finite") && Catch::Contains("step 0"));
  o.batch_size = 3;
  REQUIRE_THROWS_WITH(mq::train_end_to_end(*s.qm, s.windows, o),
                      Catch::Contains("batch_size 3") && Catch::Contains("8 windows"));
}

TEST_CASE("End-to-end training resumed from a checkpoint ends bitwise where a whole run does",
          "[unit]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("mq-e2e-resume-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  mq::EndToEndOptions o;
  o.epochs = 3;
  o.batch_size = 2;
  o.lrl = {true, 1e-7, 1e-8, 0.0};
  o.checkpoint_every = 3;  // 4 steps per epoch: checkpoints after steps 3, 4, 6, 8, 9, 12
  // The whole run.
  auto whole = make_setup();
  const auto r_whole = mq::train_end_to_end(*whole.qm, whole.windows, o);
  // A run stopped after step 6 (its checkpoint written, step 7 never taken), then resumed in a
  // new model from the checkpoint directory.
  {
    auto first = make_setup();
    auto o1 = o;
    o1.checkpoint_dir = dir.string();
    o1.on_checkpoint = [](const std::string&, int64_t steps) {
      if (steps == 6) throw std::runtime_error("stop");
    };
    REQUIRE_THROWS_WITH(mq::train_end_to_end(*first.qm, first.windows, o1), "stop");
  }
  auto second = make_setup();
  auto o2 = o;
  o2.checkpoint_dir = dir.string();
  o2.resume = true;
  int64_t first_step = -1;
  o2.on_step = [&](const mq::TrainStep& t) {
    if (first_step < 0) first_step = t.step;
  };
  const auto r = mq::train_end_to_end(*second.qm, second.windows, o2);
  CHECK(r.resumed_from == 6);
  CHECK(first_step == 6);
  CHECK(r.first_epoch_loss == r_whole.first_epoch_loss);
  CHECK(r.last_epoch_loss == r_whole.last_epoch_loss);
  const auto a = whole.qm->quant_state(), b = second.qm->quant_state();
  REQUIRE(a.size() == b.size());
  for (const auto& [name, t] : a) {
    INFO(name);
    REQUIRE(torch::equal(t, b.at(name)));
  }
  // A checkpoint of another run length is refused.
  auto third = make_setup();
  auto o3 = o2;
  o3.epochs = 1;
  REQUIRE_THROWS_WITH(mq::train_end_to_end(*third.qm, third.windows, o3),
                      Catch::Contains("another configuration"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("End-to-end training: gradient accumulation equals the larger batch", "[unit]") {
  // Mean of two micro-batch means == mean over the batch (equal sizes), up to rounding.
  constexpr double kRelTol = 1e-4;
  auto big = make_setup();
  auto acc = make_setup();
  mq::EndToEndOptions o;
  o.epochs = 1;
  o.batch_size = 4;
  o.lrl.enabled = false;
  std::vector<double> losses_big, losses_acc;
  o.on_step = [&](const mq::TrainStep& t) { losses_big.push_back(t.loss); };
  mq::train_end_to_end(*big.qm, big.windows, o);
  o.batch_size = 2;
  o.grad_accum = 2;
  o.on_step = [&](const mq::TrainStep& t) { losses_acc.push_back(t.loss); };
  mq::train_end_to_end(*acc.qm, acc.windows, o);
  REQUIRE(losses_big.size() == 2);
  REQUIRE(losses_acc.size() == 2);
  for (size_t i = 0; i < 2; ++i) CHECK(losses_acc[i] == Approx(losses_big[i]).epsilon(kRelTol));
  const auto a = big.qm->let_parameters(), b = acc.qm->let_parameters();
  for (size_t i = 0; i < a.size(); ++i)
    CHECK(torch::allclose(a[i], b[i], /*rtol=*/1e-4, /*atol=*/1e-6));
}

TEST_CASE("End-to-end training with the KL and LM losses and in bf16 lowers its loss",
          "[unit]") {
  for (const auto& [loss, bf16] : {std::pair{mq::TrainLoss::kKl, false},
                                   std::pair{mq::TrainLoss::kLm, false},
                                   std::pair{mq::TrainLoss::kMse, true}}) {
    INFO("loss " << mq::to_string(loss) << (bf16 ? " bf16" : " fp32"));
    torch::manual_seed(0);
    auto s = make_setup();
    mq::EndToEndOptions o;
    o.epochs = 12;  // measured: kl 0.0393 -> 0.0376, lm 6.079 -> 6.077, bf16 0.112 -> 0.105
    o.batch_size = 2;
    o.loss = loss;
    o.bf16 = bf16;
    o.let = {true, 1e-3, 1e-4, 0.0};
    o.lwc = {true, 1e-2, 1e-3, 0.0};
    o.lrl.enabled = false;
    const auto r = mq::train_end_to_end(*s.qm, s.windows, o);
    std::cout << "  tiny-llama w4a8 " << mq::to_string(loss) << (bf16 ? " bf16" : "") << ": loss "
              << r.first_epoch_loss << " -> " << r.last_epoch_loss << std::endl;
    CHECK(std::isfinite(r.last_epoch_loss));
    CHECK(r.last_epoch_loss < r.first_epoch_loss);
  }
}

TEST_CASE("Both trainers keep every trainable tensor on a CUDA model's device", "[unit]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  for (const bool blockwise : {false, true}) {
    INFO(std::string(blockwise ? "block-wise" : "end to end"));
    auto s = make_setup();
    s.lm.model->to(torch::kCUDA);
    s.qm->to(torch::kCUDA);
    if (blockwise) {
      mq::BlockwiseOptions o;
      o.epochs = 1;
      o.batch_size = 4;
      o.lrl.enabled = true;
      const auto r = mq::train_blockwise(*s.qm, s.windows, o);
      CHECK(r.steps > 0);
    } else {
      mq::EndToEndOptions o;
      o.epochs = 1;
      o.batch_size = 4;
      const auto r = mq::train_end_to_end(*s.qm, s.windows, o);
      CHECK(std::isfinite(r.last_epoch_loss));
      for (const auto& p : s.qm->lwc_parameters()) CHECK(p.device().is_cuda());
    }
    // quant_state() copies to the host; the parameters themselves must stay on the device.
    for (const auto& p : s.qm->named_parameters()) {
      INFO(p.key());
      CHECK(p.value().device().is_cuda());
    }
  }
}

TEST_CASE("End-to-end training with blocks recomputed in the backward pass equals without",
          "[unit]") {
  // The same forward and backward ops in the same order on the CPU: equal up to the last bit
  // in practice; the tolerance allows for a different reduction order in the autograd engine.
  constexpr double kRelTol = 1e-5;
  auto plain = make_setup();
  auto recomputed = make_setup();
  mq::EndToEndOptions o;
  o.epochs = 2;
  o.batch_size = 4;
  o.lrl = {true, 1e-7, 1e-8, 0.0};
  std::vector<double> loss_plain, norm_plain, loss_re, norm_re;
  o.on_step = [&](const mq::TrainStep& t) {
    loss_plain.push_back(t.loss);
    norm_plain.push_back(t.grad_norm);
  };
  mq::train_end_to_end(*plain.qm, plain.windows, o);
  o.recompute = true;
  o.on_step = [&](const mq::TrainStep& t) {
    loss_re.push_back(t.loss);
    norm_re.push_back(t.grad_norm);
  };
  mq::train_end_to_end(*recomputed.qm, recomputed.windows, o);
  REQUIRE(loss_re.size() == loss_plain.size());
  for (size_t i = 0; i < loss_re.size(); ++i) {
    INFO("step " << i);
    CHECK(loss_re[i] == Approx(loss_plain[i]).epsilon(kRelTol));
    CHECK(norm_re[i] == Approx(norm_plain[i]).epsilon(kRelTol));
    CHECK(norm_re[i] > 0.0);
  }
  const auto a = plain.qm->quant_state(), b = recomputed.qm->quant_state();
  for (const auto& [name, t] : a) {
    INFO(name);
    CHECK(torch::allclose(t, b.at(name), kRelTol, 1e-8));
  }
  o.loss = mq::TrainLoss::kKl;
  REQUIRE_THROWS_WITH(mq::train_end_to_end(*plain.qm, plain.windows, o),
                      Catch::Contains("recompute") && Catch::Contains("mse"));
}

TEST_CASE("End-to-end training replaying a captured CUDA graph equals eager training",
          "[unit]") {
  if (!torch::cuda::is_available()) MQ_SKIP("no CUDA device");
  if (!mq::CudaGraphStep::available(torch::Device(torch::kCUDA, 0)))
    MQ_SKIP("this build's LibTorch has no CUDA graphs");
  // The graph replays the eager micro-batch's kernels on the same inputs; every kernel of the
  // step is deterministic, so losses, gradient norms and parameters agree bit for bit.
  std::vector<std::string> logs;
  auto run = [&](bool graph, std::vector<double>& losses, std::vector<double>& norms) {
    auto s = make_setup();
    s.lm.model->to(torch::kCUDA);
    s.qm->to(torch::kCUDA);
    mq::EndToEndOptions o;
    o.epochs = 2;
    o.batch_size = 2;
    o.grad_accum = 2;
    o.lrl = {true, 1e-7, 1e-8, 0.0};
    o.cuda_graph = graph;
    o.log = [&](const std::string& line) { logs.push_back(line); };
    o.on_step = [&](const mq::TrainStep& t) {
      losses.push_back(t.loss);
      norms.push_back(t.grad_norm);
    };
    mq::train_end_to_end(*s.qm, s.windows, o);
    return s.qm->quant_state();
  };
  std::vector<double> loss_eager, norm_eager, loss_graph, norm_graph;
  const auto eager = run(false, loss_eager, norm_eager);
  const auto graphed = run(true, loss_graph, norm_graph);
  for (const auto& line : logs) CHECK(line.find("capture failed") == std::string::npos);
  REQUIRE(loss_graph.size() == loss_eager.size());
  REQUIRE(loss_graph.size() > 2);  // steps after the first replay the graph
  CHECK(loss_graph == loss_eager);
  CHECK(norm_graph == norm_eager);
  REQUIRE(graphed.size() == eager.size());
  for (const auto& [name, t] : eager) {
    INFO(name);
    CHECK(torch::equal(graphed.at(name).cpu(), t.cpu()));
  }
}
