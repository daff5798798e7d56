// tests/quant/test_primitives.cpp
// quant/primitives.h: code ranges, choose_qparams (eq. 3-4 and the scale clamp), round_ste,
// quantize/dequantize against a scalar C++ formula, fake_quantize == dequantize(quantize) bit
// for bit over bits 2..16, sym/asym and every granularity, and the gradients of x, scale and
// offset against reference-implementation.md §3.2, computed here independently.
#include <cmath>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "mobilequant/core/error.h"
#include "mobilequant/quant/primitives.h"
#include "tests/support/fakes.h"
#include "tests/support/test_support.h"

namespace {

using Catch::Contains;
using mq::Granularity;
using mq::QParams;
using mq::QuantSpec;

/// Gradients are sums of a handful of fp32 products: their rounding differs from the formula's.
constexpr double kGradTol = 1e-5;

using mq::test::make_spec;

/// Per-tensor QParams from plain numbers.
QParams scalar_qparams(float scale, float offset, int64_t bits, bool symmetric) {
  QParams p;
  p.scale = torch::tensor(scale);    // []
  p.offset = torch::tensor(offset);  // []
  std::tie(p.qmin, p.qmax) = mq::code_range(bits, symmetric);
  return p;
}

/// A weight [rows, cols] with random values, exact ties of the per-tensor grid and repeated
/// extremes, so every granularity sees values on its bounds and on .5 boundaries.
torch::Tensor edge_weight(int64_t rows, int64_t cols) {
  torch::manual_seed(7);
  auto w = torch::randn({rows, cols});  // [rows, cols]
  w[0][1] = w.max().item<float>();      // a repeated maximum
  w[1][2] = w.min().item<float>();      // a repeated minimum
  w[2][3] = 0.0f;
  w[3][0] = 0.5f;
  w[3][1] = -0.5f;
  w[3][2] = 1.5f;
  return w;
}

}  // namespace

TEST_CASE("code_range gives the grids of 2..16 bits and rejects 1 and 17", "[unit]") {
  for (int64_t b = 2; b <= 16; ++b) {
    CAPTURE(b);
    REQUIRE(mq::code_range(b, false) == std::pair<int64_t, int64_t>{0, (1 << b) - 1});
    REQUIRE(mq::code_range(b, true) ==
            std::pair<int64_t, int64_t>{-(1 << (b - 1)), (1 << (b - 1)) - 1});
    const QuantSpec s = make_spec(b, true, Granularity::kPerTensor);
    REQUIRE(mq::code_range(b, true) == std::pair<int64_t, int64_t>{s.qmin(), s.qmax()});
  }
  REQUIRE_THROWS_AS(mq::code_range(1, false), mq::Error);
  REQUIRE_THROWS_WITH(mq::code_range(1, false), Contains("bits: got 1, expected 2..16"));
  REQUIRE_THROWS_WITH(mq::code_range(17, true), Contains("bits: got 17, expected 2..16"));
  REQUIRE_THROWS_WITH(mq::choose_qparams(torch::zeros({}), torch::ones({}), 17, false),
                      Contains("bits: got 17"));
}

TEST_CASE("choose_qparams follows eq. 3-4 and clamps the scale at both ends", "[unit]") {
  // Asymmetric 8-bit [-1, 3]: scale = 4/255, offset = -round(-1/scale) (fp32 throughout).
  {
    const QParams p = mq::choose_qparams(torch::tensor(-1.0f), torch::tensor(3.0f), 8, false);
    const float s = (3.0f - -1.0f) / 255.0f;
    const float o = -std::nearbyint(-1.0f / s);
    REQUIRE(p.scale.item<float>() == s);
    REQUIRE(p.offset.item<float>() == o);
    REQUIRE(o == 64.0f);  // -1 / (4/255) = -63.75 -> 64
    REQUIRE(p.qmin == 0);
    REQUIRE(p.qmax == 255);
    REQUIRE(p.scale.scalar_type() == torch::kFloat32);
  }
  // Symmetric 4-bit [-2, 1]: scale = max(|min|, |max|) / 7, offset 0, signed grid.
  {
    const QParams p = mq::choose_qparams(torch::tensor(-2.0f), torch::tensor(1.0f), 4, true);
    REQUIRE(p.scale.item<float>() == 2.0f / 7.0f);
    REQUIRE(p.offset.item<float>() == 0.0f);
    REQUIRE(p.qmin == -8);
    REQUIRE(p.qmax == 7);
  }
  // Lower clamp: an empty range gives scale 1e-5 and the offset is taken from the clamped
  // scale (as the reference), not from 0.
  {
    const QParams p = mq::choose_qparams(torch::tensor(0.5f), torch::tensor(0.5f), 8, false);
    const float smin = static_cast<float>(mq::kMinScale);
    REQUIRE(p.scale.item<float>() == smin);
    REQUIRE(p.offset.item<float>() == -std::nearbyint(0.5f / smin));
  }
  // Upper clamp.
  {
    const QParams p = mq::choose_qparams(torch::tensor(-1e9f), torch::tensor(1e9f), 2, false);
    REQUIRE(p.scale.item<float>() == static_cast<float>(mq::kMaxScale));
    const QParams ps = mq::choose_qparams(torch::tensor(-1e9f), torch::tensor(1e9f), 2, true);
    REQUIRE(ps.scale.item<float>() == static_cast<float>(mq::kMaxScale));
  }
  // Elementwise over any shape.
  {
    const auto mn = torch::tensor({-1.0f, 0.0f, -3.0f}).reshape({3, 1});  // [3, 1]
    const auto mx = torch::tensor({1.0f, 2.0f, -1.0f}).reshape({3, 1});   // [3, 1]
    const QParams p = mq::choose_qparams(mn, mx, 8, false);
    REQUIRE(p.scale.sizes() == torch::IntArrayRef({3, 1}));
    REQUIRE(p.offset.sizes() == torch::IntArrayRef({3, 1}));
    REQUIRE(p.scale[2][0].item<float>() == 2.0f / 255.0f);
    REQUIRE(p.offset[2][0].item<float>() == -std::nearbyint(-3.0f / (2.0f / 255.0f)));
  }
  REQUIRE_THROWS_WITH(mq::choose_qparams(torch::zeros({2}), torch::ones({3}), 8, false),
                      Contains("differ in shape"));
}

TEST_CASE("choose_qparams: gradient through the scale and its clamp, none through the offset",
          "[unit]") {
  // Inside the clamp: d scale / d max = 1 / 255, d scale / d min = -1 / 255.
  {
    auto mn = torch::tensor(-1.0f).requires_grad_();  // []
    auto mx = torch::tensor(3.0f).requires_grad_();   // []
    const QParams p = mq::choose_qparams(mn, mx, 8, false);
    p.scale.backward();
    REQUIRE(mx.grad().item<float>() == 1.0f / 255.0f);
    REQUIRE(mn.grad().item<float>() == -1.0f / 255.0f);
  }
  // Offset: round has zero gradient (no STE on the offset, §2).
  {
    auto mn = torch::tensor(-1.0f).requires_grad_();
    auto mx = torch::tensor(3.0f).requires_grad_();
    const QParams p = mq::choose_qparams(mn, mx, 8, false);
    p.offset.backward();
    REQUIRE(mn.grad().item<float>() == 0.0f);
    REQUIRE(mx.grad().item<float>() == 0.0f);
  }
  // Clamped at 1e-5: autograd's clamp passes no gradient.
  {
    auto mn = torch::tensor(0.5f).requires_grad_();
    auto mx = torch::tensor(0.5f).requires_grad_();
    const QParams p = mq::choose_qparams(mn, mx, 8, false);
    p.scale.backward();
    REQUIRE(mx.grad().item<float>() == 0.0f);
    REQUIRE(mn.grad().item<float>() == 0.0f);
  }
}

TEST_CASE("round_ste rounds half to even forward and passes the gradient through", "[unit]") {
  auto x = torch::tensor({-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 0.3f, 2.7f}).requires_grad_();
  const auto y = mq::round_ste(x);  // [8]
  const auto expected = torch::tensor({-2.0f, -2.0f, -0.0f, 0.0f, 2.0f, 2.0f, 0.0f, 3.0f});
  REQUIRE(torch::equal(y.detach(), expected));
  (y * torch::arange(1, 9, torch::kFloat32)).sum().backward();
  REQUIRE(torch::equal(x.grad(), torch::arange(1, 9, torch::kFloat32)));
}

TEST_CASE("quantize and dequantize equal the scalar formula, ties to even, codes in range",
          "[unit]") {
  // scale 0.25 is a power of two: x = (k + 0.5) * 0.25 gives exact ties x / s = k + 0.5.
  const QParams p = scalar_qparams(0.25f, 3.0f, 4, false);  // codes [0, 15]
  std::vector<float> xs;
  for (int k = -8; k <= 16; ++k) xs.push_back((static_cast<float>(k) + 0.5f) * 0.25f);
  torch::manual_seed(3);
  const auto r = torch::randn({64}) * 2.0f;  // [64], beyond the range on both sides
  for (int64_t i = 0; i < r.size(0); ++i) xs.push_back(r[i].item<float>());
  const auto x = torch::tensor(xs);  // [N]
  const auto q = mq::quantize(x, p);  // [N]
  REQUIRE(q.scalar_type() == torch::kInt32);
  REQUIRE(q.sizes() == x.sizes());
  const auto xhat = mq::dequantize(q, p);  // [N]
  REQUIRE(xhat.scalar_type() == torch::kFloat32);
  for (size_t i = 0; i < xs.size(); ++i) {
    CAPTURE(i, xs[i]);
    // std::nearbyint rounds half to even under the default rounding mode, as torch.round.
    const float code = std::min(15.0f, std::max(0.0f, std::nearbyint(xs[i] / 0.25f) + 3.0f));
    REQUIRE(q[i].item<int32_t>() == static_cast<int32_t>(code));
    REQUIRE(xhat[i].item<float>() == (code - 3.0f) * 0.25f);
  }
  // Ties by hand: 0.125 / 0.25 = 0.5 -> 0, 0.375 -> 1.5 -> 2, 0.625 -> 2.5 -> 2.
  REQUIRE(mq::quantize(torch::tensor({0.125f, 0.375f, 0.625f, -0.375f}), p)
              .equal(torch::tensor({3, 5, 5, 1}, torch::kInt32)));
  REQUIRE(q.min().item<int32_t>() == 0);
  REQUIRE(q.max().item<int32_t>() == 15);
  // A symmetric grid reaches both signed ends.
  const QParams ps = scalar_qparams(0.25f, 0.0f, 3, true);  // codes [-4, 3]
  const auto qs = mq::quantize(torch::tensor({-100.0f, 100.0f, -0.875f}), ps);
  REQUIRE(qs.equal(torch::tensor({-4, 3, -4}, torch::kInt32)));  // -3.5 -> -4 (even)
}

TEST_CASE("quantize rejects a non-integral offset, naming the value", "[unit]") {
  const QParams p = scalar_qparams(0.1f, 2.5f, 8, false);
  REQUIRE_THROWS_AS(mq::quantize(torch::zeros({3}), p), mq::Error);
  REQUIRE_THROWS_WITH(mq::quantize(torch::zeros({3}), p),
                      Contains("offset 2.5") && Contains("not an integer"));
  // fake_quantize accepts it (a learned offset drifts off-integer, §3.2).
  REQUIRE_NOTHROW(mq::fake_quantize(torch::zeros({3}), p));
}

TEST_CASE("fake_quantize equals dequantize(quantize(x)) bit for bit, bits 2..16, every grid",
          "[unit]") {
  const auto w = edge_weight(8, 32);  // [8, 32]
  torch::manual_seed(11);
  const auto wide = torch::randn({8, 32}) * 3.0f;  // [8, 32], clipped by the ranges of w
  for (int64_t bits = 2; bits <= 16; ++bits) {
    for (bool sym : {false, true}) {
      for (Granularity g :
           {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
        const QuantSpec spec = make_spec(bits, sym, g, g == Granularity::kPerGroup ? 8 : 0);
        CAPTURE(spec.describe());
        auto [mn, mx] = mq::weight_min_max(w, spec);  // [groups, 1] or [1]
        const QParams p = mq::choose_qparams(mn, mx, bits, sym);
        for (const auto& x : {w, wide}) {
          const auto xg = mq::grouped_weight(x, spec);  // [groups, g]
          const auto q = mq::quantize(xg, p);           // [groups, g]
          const auto fq = mq::fake_quantize(xg, p);     // [groups, g]
          const auto dq = mq::dequantize(q, p);         // [groups, g]
          INFO(mq::test::describe_max_diff(fq, dq));
          REQUIRE(torch::equal(fq, dq));
          REQUIRE(q.min().item<int64_t>() >= p.qmin);
          REQUIRE(q.max().item<int64_t>() <= p.qmax);
        }
        const auto q = mq::quantize(mq::grouped_weight(w, spec), p);  // [groups, g]
        if (!sym) {
          // Each group's own minimum is code 0 exactly: round(min/s) - round(min/s).
          const auto per_group_min = g == Granularity::kPerTensor ? q.min().reshape({1})
                                                                  : q.amin(-1);  // [groups]
          REQUIRE((per_group_min == 0).all().item<bool>());
        }
        // The wide input is clipped at both ends of the grid.
        const auto qw = mq::quantize(mq::grouped_weight(wide, spec), p);
        REQUIRE(qw.min().item<int64_t>() == p.qmin);
        REQUIRE(qw.max().item<int64_t>() == p.qmax);
      }
    }
  }
}

TEST_CASE("near ties: x / scale is a division, as the reference, in every function", "[unit]") {
  // Inputs at and next to (k + 0.5) * scale for scales that are not powers of two, where
  // x * (1 / scale) rounds differently from x / scale for some of them.
  const float offset = 8.0f;
  size_t reciprocal_differs = 0;
  for (float s : {0.1f, 0.3f, 0.7f, 3.0f / 255.0f, 1.7f}) {
    CAPTURE(s);
    std::vector<float> xs;
    for (int k = -300; k <= 300; ++k) {
      const float t = (static_cast<float>(k) + 0.5f) * s;
      xs.push_back(std::nextafter(t, -INFINITY));
      xs.push_back(t);
      xs.push_back(std::nextafter(t, INFINITY));
    }
    const QParams p = scalar_qparams(s, offset, 16, false);  // codes [0, 65535]
    const auto x = torch::tensor(xs);                        // [N]
    const auto fq = mq::fake_quantize(x, p);                 // [N]
    const auto q = mq::quantize(x, p);                       // [N]
    REQUIRE(torch::equal(fq, mq::dequantize(q, p)));
    const auto fq_acc = fq.accessor<float, 1>();
    const auto q_acc = q.accessor<int32_t, 1>();
    for (size_t i = 0; i < xs.size(); ++i) {
      const float code = std::max(0.0f, std::nearbyint(xs[i] / s) + offset);
      if (std::nearbyint(xs[i] * (1.0f / s)) != std::nearbyint(xs[i] / s)) ++reciprocal_differs;
      REQUIRE(q_acc[static_cast<int64_t>(i)] == static_cast<int32_t>(code));
      REQUIRE(fq_acc[static_cast<int64_t>(i)] == (code - offset) * s);
    }
  }
  REQUIRE(reciprocal_differs > 0);  // the inputs do tell the two apart
}

TEST_CASE("fake_quantize computes in fp32 and returns the input dtype", "[unit]") {
  torch::manual_seed(5);
  const auto x32 = torch::randn({4, 16}) * 2.0f;  // [4, 16]
  const QParams p = mq::choose_qparams(torch::tensor(-1.5f), torch::tensor(2.0f), 8, false);
  for (auto dtype : {torch::kFloat16, torch::kBFloat16, torch::kFloat32}) {
    const auto x = x32.to(dtype);  // [4, 16]
    const auto fq = mq::fake_quantize(x, p);
    REQUIRE(fq.scalar_type() == dtype);
    REQUIRE(torch::equal(fq, mq::dequantize(mq::quantize(x, p), p).to(dtype)));
    REQUIRE(torch::equal(fq, mq::fake_quantize(x.to(torch::kFloat32), p).to(dtype)));
  }
}

TEST_CASE("fake_quantize gradients of x, scale and offset follow §3.2", "[unit]") {
  // 4-bit asymmetric, scale 0.1, offset 3: the grid covers [(0-3)*0.1, (15-3)*0.1] = [-0.3, 1.2].
  // Per-element scale and offset ([N]) so that each element's gradient is seen on its own.
  const std::vector<float> xs = {
      0.537f, -0.21f, 0.0f, 1.0f, 0.049f, 1.149f,  // inside
      1.2f,                                         // rounds onto qmax: clamp passes (inclusive)
      1.26f, 2.0f, 50.0f,                           // clipped high
      -0.36f, -1.0f, -40.0f};                       // clipped low
  const int64_t n = static_cast<int64_t>(xs.size());
  const float s0 = 0.1f;
  const float o0 = 3.0f;
  const float qmin = 0.0f;
  const float qmax = 15.0f;
  for (float offset_drift : {0.0f, 0.3f}) {  // a learned offset may be non-integral
    const float o = o0 + offset_drift;
    CAPTURE(o);
    auto x = torch::tensor(xs).requires_grad_();                 // [N]
    auto scale = torch::full({n}, s0).requires_grad_();           // [N]
    auto offset = torch::full({n}, o).requires_grad_();           // [N]
    QParams p;
    p.scale = scale;
    p.offset = offset;
    p.qmin = 0;
    p.qmax = 15;
    mq::fake_quantize(x, p).sum().backward();
    for (int64_t i = 0; i < n; ++i) {
      const float xi = xs[static_cast<size_t>(i)];
      CAPTURE(i, xi);
      const float v = xi / s0;                   // x / s as the quantizer computes it
      const float code = std::nearbyint(v) + o;  // before the clamp
      double dx, ds, doff;
      if (code > qmax) {  // clipped high
        dx = 0.0;
        ds = qmax - o;
        doff = -s0;
      } else if (code < qmin) {  // clipped low
        dx = 0.0;
        ds = qmin - o;
        doff = -s0;
      } else {  // inside
        dx = 1.0;
        ds = static_cast<double>(std::nearbyint(v)) - static_cast<double>(v);
        doff = 0.0;
      }
      // The classification above matches the comments; 1.2 / 0.1 rounds onto qmax exactly,
      // so it is clipped once the offset drifts up.
      const bool expect_inside = i < 6 || (i == 6 && offset_drift == 0.0f);
      REQUIRE(dx == (expect_inside ? 1.0 : 0.0));
      REQUIRE(x.grad()[i].item<double>() == dx);
      REQUIRE(std::abs(scale.grad()[i].item<double>() - ds) <= kGradTol);
      REQUIRE(std::abs(offset.grad()[i].item<double>() - doff) <= kGradTol);
    }
  }
}

TEST_CASE("grouped_weight and weight_min_max: shapes and values per granularity", "[unit]") {
  torch::manual_seed(2);
  const auto w = torch::randn({3, 12});  // [3, 12]
  {
    auto [mn, mx] = mq::weight_min_max(w, make_spec(8, false, Granularity::kPerTensor));
    REQUIRE(mn.sizes() == torch::IntArrayRef({1}));
    REQUIRE(mn.item<float>() == w.min().item<float>());
    REQUIRE(mx.item<float>() == w.max().item<float>());
  }
  {
    auto [mn, mx] = mq::weight_min_max(w, make_spec(8, false, Granularity::kPerChannel));
    REQUIRE(mn.sizes() == torch::IntArrayRef({3, 1}));
    for (int64_t r = 0; r < 3; ++r) {
      REQUIRE(mn[r][0].item<float>() == w[r].min().item<float>());
      REQUIRE(mx[r][0].item<float>() == w[r].max().item<float>());
    }
  }
  {
    const QuantSpec spec = make_spec(4, false, Granularity::kPerGroup, 4);
    const auto wg = mq::grouped_weight(w, spec);  // [9, 4]
    REQUIRE(wg.sizes() == torch::IntArrayRef({9, 4}));
    auto [mn, mx] = mq::weight_min_max(w, spec);  // [9, 1]
    REQUIRE(mn.sizes() == torch::IntArrayRef({9, 1}));
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t j = 0; j < 3; ++j) {
        const auto part = w[r].slice(0, 4 * j, 4 * j + 4);  // [4]: group j of row r
        REQUIRE(torch::equal(wg[r * 3 + j], part));
        REQUIRE(mn[r * 3 + j][0].item<float>() == part.min().item<float>());
        REQUIRE(mx[r * 3 + j][0].item<float>() == part.max().item<float>());
      }
    }
  }
  // A 1-D norm weight is viewed as [1, C].
  REQUIRE(mq::grouped_weight(torch::ones({5}), make_spec(16, false, Granularity::kPerTensor))
              .sizes() == torch::IntArrayRef({1, 5}));
  REQUIRE_THROWS_WITH(
      mq::grouped_weight(torch::zeros({4, 600}), make_spec(4, false, Granularity::kPerGroup, 48)),
      Contains("group_size 48 does not divide the input dimension 600"));
  REQUIRE_THROWS_WITH(mq::grouped_weight(torch::zeros({2, 2, 2}),
                                         make_spec(8, false, Granularity::kPerTensor)),
                      Contains("expected a 1-D or 2-D weight") && Contains("[2, 2, 2]"));
}
