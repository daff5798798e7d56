// tests/bench/test_train_bench.cpp
// The training benchmark's arithmetic and its references (bench/train_bench.h): the FLOP count
// of a step against the hand-counted TinyLlama-1.1B figure, and bench_train_references on the
// tiny llama leaves the model as it found it. No timing is checked: speed is a benchmark's.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "mobilequant/bench/train_bench.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/golden.h"
#include "tests/support/test_support.h"

TEST_CASE("train_step_flops counts 3 x forward of the linears and half the causal attention",
          "[unit]") {
  mq::ModelConfig c;  // TinyLlama-1.1B
  c.hidden_size = 2048, c.num_hidden_layers = 22, c.num_attention_heads = 32;
  c.num_key_value_heads = 4, c.head_dim = 64, c.intermediate_size = 5632;
  // Per block: q 2048 x 2048, k and v 2048 x 256, o 2048 x 2048, gate/up/down 2048 x 5632:
  // 44,040,192 weights; linears 2 * 44,040,192 * 22 * 2048 = 3,968,549,781,504 FLOPs, QK^T
  // and PV 22 * 4 * 2048^2 * 32 * 64 / 2 = 377,957,122,048; the step three times their sum.
  const double expected = 3.0 * (3968549781504.0 + 377957122048.0);
  CHECK(mq::train_step_flops(c, 2048, 1) == expected);
  CHECK(mq::train_step_flops(c, 2048, 3) == 3.0 * expected);  // linear in the batch at fixed T
}

TEST_CASE("bench_train_references times both references and leaves the model as it was",
          "[unit]") {
  auto lm = mq::load_model((mq::test::golden_dir() / "tiny-llama").string());
  mq::CausalLm model = lm.model;
  // Flags both ways (every other block weight frozen) and one block weight with a gradient,
  // to see all of them restored.
  auto all = model->parameters();
  for (size_t i = 0; i < all.size(); ++i) all[i].set_requires_grad(i % 2 == 0);
  auto graded = model->layer(0)->parameters().front();
  graded.set_requires_grad(true);
  graded.mutable_grad() = torch::full_like(graded, 0.5);
  std::vector<torch::Tensor> before;
  std::vector<bool> flags, grads;
  for (const auto& p : all) {
    before.push_back(p.detach().clone());
    flags.push_back(p.requires_grad());
    grads.push_back(p.grad().defined());
  }

  mq::TrainBenchOptions o;
  o.seqlen = 16;
  o.batch = 2;
  o.warmup = 1;
  o.steps = 3;
  for (auto p : {mq::BenchPrecision::kFp32, mq::BenchPrecision::kBf16}) {
    o.precision = p;
    const auto r = mq::bench_train_references(model, o);
    CHECK(r.precision == p);
    REQUIRE(r.float_step_seconds.size() == 3);
    REQUIRE(r.matmul_seconds.size() == 3);
    for (double s : r.float_step_seconds) CHECK((std::isfinite(s) && s > 0));
    for (double s : r.matmul_seconds) CHECK((std::isfinite(s) && s > 0));
    CHECK(r.flops_per_step == mq::train_step_flops(model->config(), 16, 2));
    CHECK(r.peak_tflops == 0.0);  // the CPU has no listed peak
  }
  const auto params = model->parameters();
  REQUIRE(params.size() == before.size());
  for (size_t i = 0; i < params.size(); ++i) {
    CHECK(torch::equal(params[i], before[i]));
    CHECK(params[i].requires_grad() == flags[i]);
    CHECK(params[i].grad().defined() == grads[i]);
  }
  CHECK(torch::equal(graded.grad(), torch::full_like(graded, 0.5)));
}
