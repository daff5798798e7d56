// tests/train/test_param_groups.cpp
// The grouped optimizer's gradient check (train/param_groups.h): a non-finite gradient names
// its group, the tensor (through the namer, or by index without one), the tensor's shape and
// how many elements are NaN and infinite, and the last tensor affected; QuantizedModel::parameter_name gives the namer a
// module path for every trainable tensor.
#include <catch2/catch.hpp>

#include <limits>

#include "mobilequant/train/param_groups.h"
#include "tests/support/tiny_quantized.h"

namespace {

/// Two LWC-group tensors with gradients; the second gets 2 NaN and 1 infinite element.
struct TwoTensors {
  torch::Tensor a = torch::zeros({3});     // [3]
  torch::Tensor b = torch::zeros({2, 4});  // [2, 4]
  mq::GroupedOptimizer make() {
    const mq::ParamGroupOptions off{false, 1e-3, 1e-3, 0.0};
    const mq::ParamGroupOptions on{true, 1e-3, 1e-3, 0.0};
    mq::GroupedOptimizer opt({{{}, {a, b}, {}}}, {{off, on, off}}, 0, 10);
    a.mutable_grad() = torch::ones({3});
    b.mutable_grad() = torch::ones({2, 4});
    return opt;
  }
};

}  // namespace

TEST_CASE("GroupedOptimizer: the gradient norm, and a non-finite gradient named exactly",
          "[unit]") {
  TwoTensors t;
  auto opt = t.make();
  // Per-tensor norms are fp32 (sqrt(3), sqrt(8)), summed as squares in fp64.
  CHECK(opt.grad_norm("here", 0) == Approx(std::sqrt(11.0)).epsilon(1e-7));

  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float inf = std::numeric_limits<float>::infinity();
  {
    torch::NoGradGuard no_grad;
    t.b.mutable_grad()[0][1] = nan;
    t.b.mutable_grad()[1][2] = nan;
    t.b.mutable_grad()[1][3] = -inf;
  }
  REQUIRE_THROWS_WITH(opt.grad_norm("train: step 7", 7),
                      Catch::Contains("train: step 7: non-finite gradient in parameter group "
                                      "'lwc' at step 7: tensor #1 [2, 4] has 2 NaN and 1 "
                                      "infinite of 8 gradient elements (the tensor's own "
                                      "values are finite)"));
  CHECK_THROWS_WITH(opt.grad_norm("w", 0), !Catch::Contains("tensors have non-finite"));
  opt.set_namer([&t](const torch::Tensor& p) { return p.is_same(t.b) ? "the_b" : "the_a"; });
  {
    torch::NoGradGuard no_grad;
    t.b[0][0] = inf;
    t.a.mutable_grad()[2] = nan;
  }
  REQUIRE_THROWS_WITH(opt.grad_norm("w", 3),
                      Catch::Contains(": the_a [3] has 1 NaN and 0 infinite of 3") &&
                          Catch::Contains("values are finite)") &&
                          Catch::EndsWith("; 2 of the group's 2 tensors have non-finite "
                                          "gradients, the last of them the_b"));
}

TEST_CASE("QuantizedModel::parameter_name names every trainable tensor by its module path",
          "[unit]") {
  auto s = mq::test::make_tiny_w4a8();
  s.qm->enable_lwc();
  const auto let = s.qm->let_parameters();
  REQUIRE(!let.empty());
  CHECK(s.qm->parameter_name(let.front()).rfind("layers.0.scales.", 0) == 0);
  for (const auto& group : {let, s.qm->lwc_parameters(), s.qm->lrl_parameters()}) {
    REQUIRE(!group.empty());
    for (const auto& p : group) CHECK(!s.qm->parameter_name(p).empty());
  }
  CHECK(s.qm->parameter_name(torch::zeros({1})).empty());
  CHECK(s.qm->parameter_name(s.qm->lrl_parameters().back())
            .find("_quantizer.") != std::string::npos);
}
