// tests/quant/test_weight_transform.cpp
// The LET transform of a linear weight (quant/weight_transform.h): the composed ops, their
// shape errors, and WeightFakeQuantizer::forward_transformed on the CPU (the composed path)
// against forward of the transformed weight.
#include <catch2/catch.hpp>

#include "mobilequant/quant/fake_quantizer.h"
#include "mobilequant/quant/weight_transform.h"
#include "tests/support/test_support.h"

using Catch::Matchers::Contains;

TEST_CASE("Weight transform scales columns, then divides or multiplies rows", "[unit]") {
  auto gen = at::detail::createCPUGenerator(7);
  const auto w = torch::randn({3, 5}, gen);        // [3, 5]
  const auto col = torch::rand({5}, gen) + 0.5;    // [5]
  const auto row = torch::rand({3}, gen) + 0.5;    // [3]
  REQUIRE(mq::transform_weight(w, {}).is_same(w));
  const auto scaled = w * col.unsqueeze(0);        // [3, 5]
  REQUIRE(torch::equal(mq::transform_weight(w, {col, {}, false}), scaled));
  REQUIRE(torch::equal(mq::transform_weight(w, {col, row, true}), scaled / row.unsqueeze(1)));
  REQUIRE(torch::equal(mq::transform_weight(w, {col, row, false}), scaled * row.unsqueeze(1)));
  REQUIRE(torch::equal(mq::transform_weight(w, {{}, row, true}), w / row.unsqueeze(1)));
  REQUIRE_THROWS_WITH(mq::transform_weight(w, {torch::ones({3}), {}, false}),
                      Contains("column factor of shape [3]") && Contains("expected [5]"));
  REQUIRE_THROWS_WITH(mq::transform_weight(w, {{}, torch::ones({5}), true}),
                      Contains("row factor of shape [5]") && Contains("expected [3]"));
}

TEST_CASE("forward_transformed equals forward of the transformed weight on the CPU",
          "[unit]") {
  auto gen = at::detail::createCPUGenerator(8);
  mq::QuantSpec spec;
  spec.enabled = true;
  spec.bits = 4;
  spec.granularity = mq::Granularity::kPerChannel;
  mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, {6, 8}, "test.w"));
  wq->enable_lwc();
  const auto w = torch::randn({6, 8}, gen);                           // [6, 8]
  const auto col = (torch::rand({8}, gen) + 0.5).requires_grad_(true);  // [8]
  const auto row = (torch::rand({6}, gen) + 0.5).requires_grad_(true);  // [6]
  const mq::WeightTransform t{col, row, true};
  const auto want = wq(mq::transform_weight(w, t));                   // [6, 8]
  const auto got = wq->forward_transformed(w, t, torch::kFloat32);
  REQUIRE(torch::equal(got, want));
  REQUIRE(torch::equal(wq->forward_transformed(w, t, torch::kBFloat16),
                       want.to(torch::kBFloat16)));
  got.sum().backward();
  REQUIRE(col.grad().defined());
  REQUIRE(row.grad().defined());
  REQUIRE(wq->upbound_factor.grad().defined());
}
