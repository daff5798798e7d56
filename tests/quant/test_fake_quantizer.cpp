// tests/quant/test_fake_quantizer.cpp
// quant/fake_quantizer.h: WeightFakeQuantizer against a scalar C++ formula of §2 with and
// without learnable weight clipping (LWC), the LWC bounds' gradients against central finite
// differences in fp64, clip(); ActFakeQuantizer's initialisation from a calibrated range, its
// forward, its §3.2 gradients (learnable and frozen), range() (§3.4); every error path on its
// message.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/quant/fake_quantizer.h"
#include "tests/support/fakes.h"
#include "tests/support/test_support.h"

namespace {

using Catch::Contains;
using mq::Granularity;
using mq::QuantSpec;

/// Central differences of an fp64 function of O(1) values: step and agreement.
constexpr double kFdStep = 1e-6;
constexpr double kFdTol = 1e-7;
/// Per-tensor activation gradients sum a few fp32 products: rounding differs from the formula.
constexpr double kGradTol = 1e-5;

using mq::test::make_spec;

/// §2 for one group, in scalar fp32 without torch: the range [mn, mx] gives scale and offset,
/// each value is fake-quantized.
std::vector<float> hand_fake_quant(const std::vector<float>& v, float mn, float mx, int64_t bits,
                                   bool sym) {
  const float qmin = sym ? -std::ldexp(1.0f, static_cast<int>(bits - 1)) : 0.0f;
  const float qmax = sym ? std::ldexp(1.0f, static_cast<int>(bits - 1)) - 1.0f
                         : std::ldexp(1.0f, static_cast<int>(bits)) - 1.0f;
  float s = sym ? std::max(std::abs(mn), std::abs(mx)) / qmax : (mx - mn) / qmax;
  s = std::min(std::max(s, static_cast<float>(mq::kMinScale)), static_cast<float>(mq::kMaxScale));
  const float o = sym ? 0.0f : -std::nearbyint(mn / s);
  std::vector<float> out;
  for (float x : v) {
    const float q = std::min(qmax, std::max(qmin, std::nearbyint(x / s) + o));
    out.push_back((q - o) * s);
  }
  return out;
}

/// The hand formula over a whole weight [rows, cols], group by group; `up`/`low` are the
/// sigmoid factors per group (1 without LWC).
torch::Tensor hand_weight_fake_quant(const torch::Tensor& w, const QuantSpec& spec,
                                     const std::vector<float>& up, const std::vector<float>& low) {
  const int64_t rows = w.size(0);
  const int64_t cols = w.size(1);
  const int64_t g = spec.granularity == Granularity::kPerTensor    ? rows * cols
                    : spec.granularity == Granularity::kPerChannel ? cols
                                                                   : spec.group_size;
  const auto flat = w.contiguous().flatten();  // [rows * cols]; groups are consecutive runs
  const auto acc = flat.accessor<float, 1>();
  auto out = torch::empty({rows * cols});  // [rows * cols]
  for (int64_t k = 0; k * g < rows * cols; ++k) {
    std::vector<float> v;
    for (int64_t i = k * g; i < (k + 1) * g; ++i) v.push_back(acc[i]);
    const float mn = *std::min_element(v.begin(), v.end()) * low[static_cast<size_t>(k)];
    const float mx = *std::max_element(v.begin(), v.end()) * up[static_cast<size_t>(k)];
    const auto fq = hand_fake_quant(v, mn, mx, spec.bits, spec.symmetric);
    for (int64_t i = 0; i < g; ++i) out[k * g + i] = fq[static_cast<size_t>(i)];
  }
  return out.reshape(w.sizes());
}

std::vector<float> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat32).contiguous().flatten();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

/// Sets a registered LWC bound to `values` (same number of elements) without recording a grad.
void set_bound(torch::Tensor& bound, const torch::Tensor& values) {
  torch::NoGradGuard no_grad;
  bound.copy_(values.reshape(bound.sizes()));
}

}  // namespace

TEST_CASE("WeightFakeQuantizer without LWC equals the §2 formula for every grid", "[unit]") {
  torch::manual_seed(21);
  const auto w = torch::randn({4, 16});  // [4, 16]
  for (int64_t bits : {2, 3, 4, 8, 16}) {
    for (bool sym : {false, true}) {
      for (Granularity g :
           {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
        const QuantSpec spec = make_spec(bits, sym, g, g == Granularity::kPerGroup ? 4 : 0);
        CAPTURE(spec.describe());
        mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, {4, 16}, "w"));
        REQUIRE_FALSE(wq->lwc_enabled());
        const int64_t groups = g == Granularity::kPerTensor    ? 1
                               : g == Granularity::kPerChannel ? 4
                                                               : 16;
        const std::vector<float> ones(static_cast<size_t>(groups), 1.0f);
        const auto out = wq->forward(w);  // [4, 16]
        REQUIRE(out.sizes() == w.sizes());
        const auto expected = hand_weight_fake_quant(w, spec, ones, ones);
        REQUIRE_ALLCLOSE(out, expected, 0.0);
        // The range is recomputed from the current weight at every call.
        const auto w2 = w * 3.0f;  // [4, 16]
        REQUIRE_ALLCLOSE(wq->forward(w2), hand_weight_fake_quant(w2, spec, ones, ones), 0.0);
      }
    }
  }
}

TEST_CASE("WeightFakeQuantizer quantizes a 1-D norm weight per tensor and keeps bf16", "[unit]") {
  torch::manual_seed(4);
  const auto w = 1.0f + 0.1f * torch::randn({24});  // [24]
  mq::WeightFakeQuantizer wq(
      mq::WeightFakeQuantizerOptions(make_spec(16, false, Granularity::kPerTensor), {24}, "n"));
  wq->enable_lwc();
  REQUIRE(wq->upbound_factor.sizes() == torch::IntArrayRef({1}));
  const float sig4 = torch::sigmoid(torch::tensor(4.0f)).item<float>();
  const auto expected =
      hand_weight_fake_quant(w.reshape({1, 24}), make_spec(16, false, Granularity::kPerTensor),
                             {sig4}, {sig4})
          .reshape({24});
  REQUIRE_ALLCLOSE(wq->forward(w), expected, 0.0);
  const auto wb = w.to(torch::kBFloat16);  // [24]
  const auto outb = wq->forward(wb);
  REQUIRE(outb.scalar_type() == torch::kBFloat16);
  REQUIRE(torch::equal(outb, wq->forward(wb.to(torch::kFloat32)).to(torch::kBFloat16)));
}

TEST_CASE("LWC: bounds start at 4.0 with the right shapes, scale the weight's min and max",
          "[unit]") {
  torch::manual_seed(22);
  const auto w = torch::randn({4, 16});  // [4, 16]
  for (bool sym : {false, true}) {
    for (Granularity g :
         {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
      const QuantSpec spec = make_spec(4, sym, g, g == Granularity::kPerGroup ? 8 : 0);
      CAPTURE(spec.describe());
      mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, {4, 16}, "w"));
      wq->enable_lwc();
      REQUIRE(wq->lwc_enabled());
      const int64_t groups = g == Granularity::kPerTensor    ? 1
                             : g == Granularity::kPerChannel ? 4
                                                             : 8;
      const auto shape = g == Granularity::kPerTensor ? std::vector<int64_t>{1}
                                                      : std::vector<int64_t>{groups, 1};
      REQUIRE(wq->upbound_factor.sizes() == torch::IntArrayRef(shape));
      REQUIRE(wq->lowbound_factor.sizes() == torch::IntArrayRef(shape));
      REQUIRE(torch::equal(wq->upbound_factor, torch::full(shape, mq::kLwcInit)));
      REQUIRE(torch::equal(wq->lowbound_factor, torch::full(shape, mq::kLwcInit)));
      REQUIRE(wq->upbound_factor.requires_grad());
      const auto params = wq->named_parameters();
      REQUIRE(params.contains("upbound_factor"));
      REQUIRE(params.contains("lowbound_factor"));
      REQUIRE(params["upbound_factor"].data_ptr() == wq->upbound_factor.data_ptr());

      // Non-default bounds, different per group.
      set_bound(wq->upbound_factor, torch::linspace(-1.0, 3.0, groups));
      set_bound(wq->lowbound_factor, torch::linspace(2.0, 0.5, groups));
      const auto up = to_vector(torch::sigmoid(wq->upbound_factor.detach()));
      const auto low = to_vector(torch::sigmoid(wq->lowbound_factor.detach()));
      const auto out = wq->forward(w);  // [4, 16]
      REQUIRE_ALLCLOSE(out, hand_weight_fake_quant(w, spec, up, low), 0.0);
      // LWC changes the result (this test could not pass with the bounds ignored).
      const std::vector<float> ones(static_cast<size_t>(groups), 1.0f);
      REQUIRE_FALSE(torch::equal(out, hand_weight_fake_quant(w, spec, ones, ones)));

      wq->disable_lwc();
      REQUIRE_FALSE(wq->lwc_enabled());
      REQUIRE(wq->named_parameters().size() == 0);
      REQUIRE_ALLCLOSE(wq->forward(w), hand_weight_fake_quant(w, spec, ones, ones), 0.0);
      wq->enable_lwc();  // re-enabling after disabling registers fresh bounds
      REQUIRE(wq->named_parameters().size() == 2);
    }
  }
}

TEST_CASE("WeightFakeQuantizer::forward_export_codes dequantizes the fp32 codes exactly",
          "[unit]") {
  torch::manual_seed(23);
  const auto w = torch::randn({6, 16});  // [6, 16] fp32
  const auto w64 = w.to(torch::kFloat64);
  int fp64_differs = 0;
  for (bool sym : {false, true}) {
    for (Granularity g :
         {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
      const QuantSpec spec = make_spec(4, sym, g, g == Granularity::kPerGroup ? 8 : 0);
      CAPTURE(spec.describe());
      mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, {6, 16}, "w"));
      wq->enable_lwc();
      const int64_t groups = wq->upbound_factor.numel();
      set_bound(wq->upbound_factor, torch::linspace(-1.0, 3.0, groups));
      set_bound(wq->lowbound_factor, torch::linspace(2.0, 0.5, groups));
      torch::NoGradGuard no_grad;
      const auto q32 = wq->forward(w);  // [6, 16] fp32
      // fp32 in: the plain forward, bit for bit.
      REQUIRE(torch::equal(wq->forward_export_codes(w), q32));
      // fp64 in (an fp64 model): the exact product (q - o) s of the fp32 codes and scales, so
      // that rounding it to fp32 gives the fp32 forward, and (x / s) + o is the code exactly.
      wq->to(torch::kFloat64);
      const auto e64 = wq->forward_export_codes(w64);  // [6, 16] fp64
      REQUIRE(e64.scalar_type() == torch::kFloat64);
      REQUIRE(torch::equal(e64.to(torch::kFloat32), q32));
      const mq::QParams p = wq->qparams(w);  // fp32, from the fp32 weight
      const auto codes = mq::quantize(mq::grouped_weight(w, spec), p);  // [groups, g]
      const auto back = mq::grouped_weight(e64, spec) / p.scale.to(torch::kFloat64) +
                        p.offset.to(torch::kFloat64);
      REQUIRE(torch::equal(back, codes.to(torch::kFloat64)));
      // The fp64 forward derives its own scales: not the export's weights.
      if (!torch::equal(wq->forward(w64), e64)) ++fp64_differs;
      wq->to(torch::kFloat32);
    }
  }
  CHECK(fp64_differs > 0);
}

TEST_CASE("LWC bound gradients equal central finite differences of the STE function (fp64)",
          "[unit]") {
  // With the STE the gradient is the derivative of the function in which the detached parts
  // (round(x/s) - x/s and the rounded offset, §2) are held at their values at the base point;
  // that function is written here by hand and differentiated numerically. Which elements are
  // clipped is held too: many codes sit exactly on qmin/qmax (each group's own minimum does),
  // where autograd's clamp counts them as inside and a two-sided difference would straddle the
  // kink.
  torch::manual_seed(23);
  const auto w = torch::randn({3, 8}, torch::kFloat64);  // [3, 8]
  const auto c = torch::randn({3, 8}, torch::kFloat64);  // [3, 8] upstream gradient
  for (bool sym : {false, true}) {
    for (Granularity g :
         {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
      const QuantSpec spec = make_spec(4, sym, g, g == Granularity::kPerGroup ? 4 : 0);
      CAPTURE(spec.describe());
      mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(spec, {3, 8}, "w"));
      wq->enable_lwc();
      wq->to(torch::kFloat64);
      const int64_t groups = wq->upbound_factor.numel();
      set_bound(wq->upbound_factor, torch::linspace(1.0, 3.0, groups, torch::kFloat64));
      set_bound(wq->lowbound_factor, torch::linspace(2.5, 0.5, groups, torch::kFloat64));
      (wq->forward(w) * c).sum().backward();
      const auto grad_up = wq->upbound_factor.grad().flatten();    // [groups]
      const auto grad_low = wq->lowbound_factor.grad().flatten();  // [groups]

      const int64_t gs = 24 / groups;
      const auto wg = w.reshape({groups, gs});  // [groups, gs]
      const auto cg = c.reshape({groups, gs});  // [groups, gs]
      const double qmin = sym ? -8.0 : 0.0;
      const double qmax = sym ? 7.0 : 15.0;
      const auto mn = std::get<0>(wg.min(1, true));  // [groups, 1]
      const auto mx = std::get<0>(wg.max(1, true));  // [groups, 1]
      auto scale_of = [&](const torch::Tensor& up, const torch::Tensor& low) {
        const auto mxc = torch::sigmoid(up.reshape({groups, 1})) * mx;   // [groups, 1]
        const auto mnc = torch::sigmoid(low.reshape({groups, 1})) * mn;  // [groups, 1]
        const auto alpha = sym ? torch::maximum(mnc.abs(), mxc.abs()) : mxc - mnc;
        return std::make_pair((alpha / qmax).clamp(mq::kMinScale, mq::kMaxScale), mnc);
      };
      const auto up0 = wq->upbound_factor.detach().flatten().clone();   // [groups]
      const auto low0 = wq->lowbound_factor.detach().flatten().clone();  // [groups]
      const auto [s0, mnc0] = scale_of(up0, low0);                     // [groups, 1] each
      const auto o0 = sym ? torch::zeros_like(s0) : -torch::round(mnc0 / s0);  // frozen
      const auto frac0 = torch::round(wg / s0) - wg / s0;                       // frozen
      const auto code0 = torch::round(wg / s0) + o0;                            // [groups, gs]
      const auto inside0 = (code0 >= qmin) & (code0 <= qmax);                   // frozen
      REQUIRE((~inside0).any().item<bool>());  // some elements are clipped
      auto loss = [&](const torch::Tensor& up, const torch::Tensor& low) {
        const auto s = scale_of(up, low).first;                               // [groups, 1]
        const auto q = torch::where(inside0, wg / s + frac0 + o0, code0.clamp(qmin, qmax));
        return ((q - o0) * s * cg).sum().item<double>();                      // q: [groups, gs]
      };
      double largest = 0.0;
      for (int64_t k = 0; k < groups; ++k) {
        CAPTURE(k);
        auto e = torch::zeros({groups}, torch::kFloat64);
        e[k] = kFdStep;
        const double fd_up = (loss(up0 + e, low0) - loss(up0 - e, low0)) / (2 * kFdStep);
        const double fd_low = (loss(up0, low0 + e) - loss(up0, low0 - e)) / (2 * kFdStep);
        REQUIRE(std::abs(grad_up[k].item<double>() - fd_up) <= kFdTol);
        REQUIRE(std::abs(grad_low[k].item<double>() - fd_low) <= kFdTol);
        largest = std::max({largest, std::abs(fd_up), std::abs(fd_low)});
      }
      REQUIRE(largest > 1e-3);  // the bounds do receive a gradient
    }
  }
}

TEST_CASE("WeightFakeQuantizer::clip clamps each group to its LWC range", "[unit]") {
  torch::manual_seed(24);
  const auto w = torch::randn({3, 8});  // [3, 8]
  mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(
      make_spec(4, false, Granularity::kPerChannel), {3, 8}, "w"));
  REQUIRE(wq->clip(w).is_same(w));  // without LWC: the weight itself
  wq->enable_lwc();
  set_bound(wq->upbound_factor, torch::tensor({0.0f, 1.0f, -2.0f}));
  set_bound(wq->lowbound_factor, torch::tensor({-1.0f, 0.0f, 5.0f}));
  const auto up = to_vector(torch::sigmoid(wq->upbound_factor.detach()));
  const auto low = to_vector(torch::sigmoid(wq->lowbound_factor.detach()));
  const auto clipped = wq->clip(w);  // [3, 8]
  REQUIRE(clipped.sizes() == w.sizes());
  auto expected = torch::empty({3, 8});  // [3, 8]
  for (int64_t r = 0; r < 3; ++r) {
    const auto row = to_vector(w[r]);
    const float lo = *std::min_element(row.begin(), row.end()) * low[static_cast<size_t>(r)];
    const float hi = *std::max_element(row.begin(), row.end()) * up[static_cast<size_t>(r)];
    for (int64_t i = 0; i < 8; ++i) {
      expected[r][i] = std::min(hi, std::max(lo, row[static_cast<size_t>(i)]));
    }
  }
  REQUIRE_ALLCLOSE(clipped, expected, 0.0);
  REQUIRE_FALSE(torch::equal(clipped, w));
}

TEST_CASE("WeightFakeQuantizer: disabled spec is the identity, errors name the quantizer",
          "[unit]") {
  QuantSpec off = make_spec(8, false, Granularity::kPerTensor);
  off.enabled = false;
  mq::WeightFakeQuantizer wq(mq::WeightFakeQuantizerOptions(off, {2, 4}, "w"));
  const auto w = torch::randn({2, 4});  // [2, 4]
  REQUIRE(wq->forward(w).is_same(w));
  wq->enable_lwc();
  REQUIRE_FALSE(wq->lwc_enabled());

  const std::string name = "model.layers.3.mlp.w2.weight";
  auto make = [&](const QuantSpec& spec, std::vector<int64_t> shape) {
    return mq::WeightFakeQuantizer(mq::WeightFakeQuantizerOptions(spec, std::move(shape), name));
  };
  REQUIRE_THROWS_AS(make(make_spec(1, false, Granularity::kPerTensor), {4, 4}), mq::Error);
  REQUIRE_THROWS_WITH(make(make_spec(1, false, Granularity::kPerTensor), {4, 4}),
                      Contains(name + ": bits: got 1, expected 2..16"));
  REQUIRE_THROWS_WITH(make(make_spec(17, true, Granularity::kPerChannel), {4, 4}),
                      Contains(name + ": bits: got 17, expected 2..16"));
  REQUIRE_THROWS_WITH(make(make_spec(4, false, Granularity::kPerGroup, 48), {1536, 600}),
                      Contains(name + ": group_size 48 does not divide the input dimension 600"));
  REQUIRE_NOTHROW(make(make_spec(4, false, Granularity::kPerGroup, 48), {1536, 576}));
  REQUIRE_THROWS_WITH(make(make_spec(16, false, Granularity::kPerChannel), {576}),
                      Contains(name) && Contains("per_tensor only") && Contains("per_channel"));
  REQUIRE_THROWS_WITH(make(make_spec(8, false, Granularity::kPerTensor), {2, 3, 4}),
                      Contains(name) && Contains("[2, 3, 4]"));
  auto ok = make(make_spec(8, false, Granularity::kPerTensor), {4, 4});
  REQUIRE_THROWS_WITH(ok->forward(torch::zeros({4, 5})),
                      Contains(name) && Contains("[4, 5]") && Contains("[4, 4]"));
}

TEST_CASE("ActFakeQuantizer::set_range initialises scale and offset by eq. 3-4", "[unit]") {
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerTensor), "a"));
    REQUIRE_FALSE(aq->initialized());
    aq->set_range(torch::tensor(-1.5f), torch::tensor(4.2f));
    REQUIRE(aq->initialized());
    const float s = (4.2f - -1.5f) / 255.0f;
    REQUIRE(aq->scale.dim() == 0);
    REQUIRE(aq->scale.item<float>() == s);
    REQUIRE(aq->offset.item<float>() == -std::nearbyint(-1.5f / s));
    // Registered under the reference's names, frozen by default.
    const auto params = aq->named_parameters();
    REQUIRE(params.contains("scale"));
    REQUIRE(params.contains("offset"));
    REQUIRE(params["scale"].data_ptr() == aq->scale.data_ptr());
    REQUIRE_FALSE(aq->scale.requires_grad());
    REQUIRE_FALSE(aq->offset.requires_grad());
    aq->set_learnable(true);
    REQUIRE(aq->scale.requires_grad());
    REQUIRE(aq->offset.requires_grad());
  }
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, true, Granularity::kPerTensor), "a"));
    aq->set_range(torch::tensor(-1.5f), torch::tensor(4.2f));
    REQUIRE(aq->scale.item<float>() == 4.2f / 127.0f);
    REQUIRE(aq->offset.item<float>() == 0.0f);
  }
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerChannel), "a"));
    aq->set_learnable(true);
    aq->set_range(torch::tensor({-1.0f, 0.0f, -2.0f, 0.5f}),
                  torch::tensor({1.0f, 3.0f, 2.0f, 0.5f}));
    REQUIRE(aq->scale.sizes() == torch::IntArrayRef({4}));
    REQUIRE(aq->scale[1].item<float>() == 3.0f / 255.0f);
    REQUIRE(aq->scale[3].item<float>() == static_cast<float>(mq::kMinScale));
    REQUIRE(aq->scale.requires_grad());  // learnability survives the new shape
    REQUIRE(aq->named_parameters()["scale"].data_ptr() == aq->scale.data_ptr());
    // A new calibration with another channel count replaces the parameters.
    aq->set_range(torch::zeros({6}), torch::ones({6}));
    REQUIRE(aq->scale.sizes() == torch::IntArrayRef({6}));
    REQUIRE(aq->named_parameters()["offset"].sizes() == torch::IntArrayRef({6}));
    REQUIRE(aq->named_parameters().size() == 2);
    REQUIRE(aq->offset.requires_grad());
  }
}

TEST_CASE("ActFakeQuantizer::forward equals dequantize(quantize(x)) and the scalar formula",
          "[unit]") {
  torch::manual_seed(31);
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerTensor), "a"));
    aq->set_range(torch::tensor(-1.0f), torch::tensor(2.0f));
    const auto x = torch::randn({2, 5, 16}) * 2.0f;  // [2, 5, 16], clipped at both ends
    const auto out = aq->forward(x);
    const mq::QParams p{aq->scale, aq->offset, 0, 255};
    REQUIRE(torch::equal(out, mq::dequantize(mq::quantize(x, p), p)));
    const auto expected =
        hand_fake_quant(to_vector(x), -1.0f, 2.0f, 8, false);  // the same range by hand
    REQUIRE_ALLCLOSE(out, torch::tensor(expected).reshape(x.sizes()), 0.0);
    const auto xh = x.to(torch::kFloat16);  // [2, 5, 16]
    REQUIRE(aq->forward(xh).scalar_type() == torch::kFloat16);
    REQUIRE(torch::equal(aq->forward(xh),
                         mq::dequantize(mq::quantize(xh, p), p).to(torch::kFloat16)));
  }
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(4, true, Granularity::kPerChannel), "a"));
    const auto mn = torch::tensor({-1.0f, -0.5f, -3.0f});  // [3]
    const auto mx = torch::tensor({1.0f, 2.0f, 0.1f});     // [3]
    aq->set_range(mn, mx);
    const auto x = torch::randn({4, 2, 3}) * 2.0f;  // [4, 2, 3]
    const auto out = aq->forward(x);                // [4, 2, 3]
    for (int64_t ch = 0; ch < 3; ++ch) {
      const auto xc = x.select(-1, ch);  // [4, 2]
      const auto expected = hand_fake_quant(to_vector(xc), mn[ch].item<float>(),
                                            mx[ch].item<float>(), 4, true);
      REQUIRE_ALLCLOSE(out.select(-1, ch), torch::tensor(expected).reshape({4, 2}), 0.0);
    }
  }
}

TEST_CASE("ActFakeQuantizer gradients of x, scale and offset follow §3.2; frozen gets none",
          "[unit]") {
  // 8-bit asymmetric, range [-1, 2]: inside, clipped high and clipped low, one pass each so that
  // the per-tensor scale/offset gradient (a sum) belongs to one case.
  const float lo = -1.0f;
  const float hi = 2.0f;
  const float s = (hi - lo) / 255.0f;
  const float o = -std::nearbyint(lo / s);
  const std::vector<std::vector<float>> cases = {
      {0.3f, -0.77f, 1.234f, 0.0f, 1.9f},  // inside
      {2.5f, 7.0f, 100.0f},                // clipped high
      {-1.2f, -3.0f}};                     // clipped low
  for (size_t c = 0; c < cases.size(); ++c) {
    CAPTURE(c);
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerTensor), "a"));
    aq->set_range(torch::tensor(lo), torch::tensor(hi));
    aq->set_learnable(true);
    auto x = torch::tensor(cases[c]).requires_grad_();  // [n]
    const auto upstream = torch::linspace(0.5, 2.0, x.size(0));  // [n]
    (aq->forward(x) * upstream).sum().backward();
    double ds = 0.0, doff = 0.0;
    for (size_t i = 0; i < cases[c].size(); ++i) {
      const float xi = cases[c][i];
      const double g = upstream[static_cast<int64_t>(i)].item<double>();
      const float v = xi / s;
      double dx = 0.0;
      if (c == 0) {  // inside: dx = 1, ds = round(x/s) - x/s, doff = 0
        dx = 1.0;
        ds += g * (static_cast<double>(std::nearbyint(v)) - v);
      } else if (c == 1) {  // clipped high: ds = qmax - offset, doff = -scale
        ds += g * (255.0 - o);
        doff += g * -static_cast<double>(s);
      } else {  // clipped low: ds = qmin - offset = -offset, doff = -scale
        ds += g * -static_cast<double>(o);
        doff += g * -static_cast<double>(s);
      }
      // dx * g up to the rounding of (g * s) / s in the backward pass
      REQUIRE(std::abs(x.grad()[static_cast<int64_t>(i)].item<double>() - dx * g) <= kGradTol);
    }
    REQUIRE(std::abs(aq->scale.grad().item<double>() - ds) <=
            kGradTol * std::max(1.0, std::abs(ds)));
    REQUIRE(std::abs(aq->offset.grad().item<double>() - doff) <= kGradTol);
    if (c > 0) REQUIRE(std::abs(ds) > 1.0);  // the clipped cases do move the scale
  }
  // Frozen (the default): no gradient into scale/offset, x's gradient unchanged.
  mq::ActFakeQuantizer aq(
      mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerTensor), "a"));
  aq->set_range(torch::tensor(lo), torch::tensor(hi));
  auto x = torch::tensor({0.3f, 5.0f}).requires_grad_();  // [2]
  aq->forward(x).sum().backward();
  REQUIRE_FALSE(aq->scale.grad().defined());
  REQUIRE_FALSE(aq->offset.grad().defined());
  REQUIRE(torch::equal(x.grad(), torch::tensor({1.0f, 0.0f})));
}

TEST_CASE("ActFakeQuantizer::range inverts scale and offset (§3.4); set_qparams", "[unit]") {
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerTensor), "a"));
    aq->set_qparams(torch::tensor(0.02f), torch::tensor(60.0f));
    REQUIRE(aq->initialized());
    auto [mn, mx] = aq->range();
    REQUIRE(mn.item<float>() == -60.0f * 0.02f);
    REQUIRE(mx.item<float>() == 0.02f * 255.0f + -60.0f * 0.02f);
    // Round trip through set_range: the bounds come back within one step.
    aq->set_range(torch::tensor(-1.3f), torch::tensor(2.9f));
    auto [mn2, mx2] = aq->range();
    const float step = aq->scale.item<float>();
    REQUIRE(std::abs(mn2.item<float>() - -1.3f) <= step);
    REQUIRE(std::abs(mx2.item<float>() - 2.9f) <= step);
  }
  {
    mq::ActFakeQuantizer aq(
        mq::ActFakeQuantizerOptions(make_spec(8, true, Granularity::kPerTensor), "a"));
    aq->set_qparams(torch::tensor(0.5f), torch::tensor(0.0f));
    auto [mn, mx] = aq->range();
    REQUIRE(mx.item<float>() == 0.5f * 127.0f);
    REQUIRE(mn.item<float>() == -0.5f * 127.0f);
  }
  mq::ActFakeQuantizer pc(
      mq::ActFakeQuantizerOptions(make_spec(8, false, Granularity::kPerChannel), "site.x"));
  pc->set_qparams(torch::full({3}, 0.1f), torch::zeros({3}));
  REQUIRE(pc->scale.sizes() == torch::IntArrayRef({3}));
  REQUIRE_THROWS_WITH(pc->set_qparams(torch::ones({3}), torch::zeros({4})),
                      Contains("site.x") && Contains("[3]") && Contains("[4]"));
  REQUIRE_THROWS_WITH(pc->set_qparams(torch::tensor({0.1f, 0.0f, 0.1f}), torch::zeros({3})),
                      Contains("site.x") && Contains("scale must be finite and > 0"));
}

TEST_CASE("ActFakeQuantizer errors name the site; a disabled spec is the identity", "[unit]") {
  const std::string site = "model.layers.3.self_attn.qk_bmm.input2";
  auto make = [&](const QuantSpec& spec) {
    return mq::ActFakeQuantizer(mq::ActFakeQuantizerOptions(spec, site));
  };
  REQUIRE_THROWS_AS(make(make_spec(4, false, Granularity::kPerGroup, 32)), mq::Error);
  REQUIRE_THROWS_WITH(make(make_spec(4, false, Granularity::kPerGroup, 32)),
                      Contains(site + ": granularity per_group is not supported for activations"));
  REQUIRE_THROWS_WITH(make(make_spec(1, false, Granularity::kPerTensor)),
                      Contains(site + ": bits: got 1, expected 2..16"));
  REQUIRE_THROWS_WITH(make(make_spec(17, false, Granularity::kPerTensor)),
                      Contains(site + ": bits: got 17, expected 2..16"));

  auto aq = make(make_spec(8, false, Granularity::kPerTensor));
  REQUIRE_THROWS_WITH(aq->forward(torch::zeros({2})),
                      Contains(site + ": activation quantizer used before its range was set"));
  REQUIRE_THROWS_WITH(aq->range(), Contains(site) && Contains("never set"));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  REQUIRE_THROWS_WITH(aq->set_range(torch::tensor(nan), torch::tensor(1.0f)),
                      Contains(site + ": calibration range is not finite: min nan, max 1"));
  REQUIRE_THROWS_WITH(aq->set_range(torch::tensor(-1.0f), torch::tensor(inf)),
                      Contains(site + ": calibration range is not finite: min -1, max inf"));
  REQUIRE_THROWS_WITH(aq->set_range(torch::tensor(2.0f), torch::tensor(1.0f)),
                      Contains(site + ": calibration range has min > max: min 2, max 1"));
  REQUIRE_THROWS_WITH(aq->set_range(torch::zeros({2}), torch::ones({2})),
                      Contains(site) && Contains("expects scalar min and max"));
  REQUIRE_FALSE(aq->initialized());  // failed calls leave it uninitialised

  auto pc = make(make_spec(8, false, Granularity::kPerChannel));
  REQUIRE_THROWS_WITH(pc->set_range(torch::tensor({0.0f, -inf}), torch::ones({2})),
                      Contains(site) && Contains("not finite") && Contains("channel 1"));
  pc->set_range(torch::zeros({4}), torch::ones({4}));
  REQUIRE_THROWS_WITH(pc->forward(torch::zeros({2, 5})),
                      Contains(site) && Contains("[2, 5]") && Contains("4 calibrated channels"));

  QuantSpec off = make_spec(8, false, Granularity::kPerTensor);
  off.enabled = false;
  auto id = make(off);
  const auto x = torch::randn({3});  // [3]
  REQUIRE(id->forward(x).is_same(x));  // no range needed when off
}
