// tests/cuda_emu/emu_weight_kernels.cpp
// The kernels of mobilequant/quant/fused_weight_quantize_cuda.cu, run on the CPU under the
// CUDA emulation (emu.h), against the composed torch ops as CUDA runs them (a division by the
// host scalar qmax is a multiplication by fp32(1 / qmax) there): values bit for bit, the
// weight's gradient within relative 1e-5 and the LWC sigmoids' within 1e-4 (sums in another
// order), per tensor (many blocks) and per row, asymmetric and symmetric, with and without
// LWC, with the maximum and minimum tied at several elements. Exit status 0 when all hold.
// ctest label cuda-emu (`scripts/test.sh cuda-emu`).
#include "fused_weight_quantize_cuda.inc"

#include <torch/torch.h>

#include "tests/support/tensor_compare.h"

#include <cstdio>

namespace {

using namespace mq;
using mq::test::rel_l2;

const Transform kNone{nullptr, nullptr, false};

struct Grads {
  torch::Tensor y, gw, g_up, g_low;
};

/// The quantizer's composed ops (fake_quantizer.cpp, primitives.cpp) on x [groups, g]
/// (differentiable), with CUDA's division by a host scalar; su / sl the LWC sigmoids shaped as
/// the range ([groups, 1] or [1]) or undefined.
torch::Tensor quantize_composed(const torch::Tensor& x, const torch::Tensor& su,
                                const torch::Tensor& sl, bool per_row, bool sym, int64_t qmin,
                                int64_t qmax) {
  torch::Tensor mn0, mx0;  // [groups, 1] or [1]
  if (per_row) {
    mn0 = x.amin(-1, true);
    mx0 = x.amax(-1, true);
  } else {
    mn0 = x.flatten().amin(0).reshape({1});
    mx0 = x.flatten().amax(0).reshape({1});
  }
  torch::Tensor mn = mn0, mx = mx0;
  if (su.defined()) {
    mx = su * mx0;
    mn = sl * mn0;
  }
  const auto inv = torch::scalar_tensor(1.0f / static_cast<float>(qmax));
  torch::Tensor scale, offset;
  if (sym) {
    scale = (torch::maximum(mn.abs(), mx.abs()) * inv).clamp(1e-5, 1e6);
    offset = torch::zeros_like(scale);
  } else {
    scale = ((mx - mn) * inv).clamp(1e-5, 1e6);
    offset = -torch::round(mn / scale);
  }
  const auto t = x / scale;
  const auto q = ((torch::round(t) - t).detach() + t + offset)
                     .clamp(static_cast<double>(qmin), static_cast<double>(qmax));
  return (q - offset) * scale;  // [groups, g]
}

/// su / sl as leaves shaped like the range of `groups` groups (undefined stays undefined).
torch::Tensor sigmoid_leaf(const torch::Tensor& s, bool per_row) {
  if (!s.defined()) return s;
  return s.clone().reshape(per_row ? std::vector<int64_t>{s.numel(), 1} : std::vector<int64_t>{1})
      .requires_grad_(true);
}

/// The composed ops of WeightFakeQuantizer on the CPU, the LWC sigmoids as leaves.
Grads composed(torch::Tensor wg, torch::Tensor su, torch::Tensor sl, bool per_row, bool sym,
               int64_t qmin, int64_t qmax, const torch::Tensor& gy) {
  wg = wg.clone().requires_grad_(true);
  su = sigmoid_leaf(su, per_row);
  sl = sigmoid_leaf(sl, per_row);
  const auto y = quantize_composed(wg, su, sl, per_row, sym, qmin, qmax);
  y.backward(gy);
  Grads r{y.detach(), wg.grad(), {}, {}};
  if (su.defined()) {
    r.g_up = su.grad().flatten();
    r.g_low = sl.grad().flatten();
  }
  return r;
}

/// The kernels as fused_weight_quantize_forward/backward_cuda launch them.
Grads fused(const torch::Tensor& w, const torch::Tensor& su, const torch::Tensor& sl,
            bool per_row, const Codes& codes, const torch::Tensor& gy) {
  const int64_t rows = w.size(0), cols = w.size(1), n = w.numel();
  const int64_t groups = per_row ? rows : 1;
  const float* sup = su.defined() ? su.data_ptr<float>() : nullptr;
  const float* slp = sl.defined() ? sl.data_ptr<float>() : nullptr;
  auto y = torch::empty_like(w), gx = torch::empty_like(w);
  auto stats = torch::zeros({groups, kStats});
  auto d_su = torch::zeros({groups}), d_sl = torch::zeros({groups});
  const float* wp = w.data_ptr<float>();
  const float* gp = gy.data_ptr<float>();
  if (per_row) {
    const auto threads = static_cast<unsigned>(row_threads(cols));
    emu_launch(rows, threads, 0, forward_rows_kernel<float>, wp, y.data_ptr<float>(),
               stats.data_ptr<float>(), cols, sup, slp, kNone, codes);
    emu_launch(rows, threads, 0, backward_rows_kernel<float>, wp, gp, gx.data_ptr<float>(),
               static_cast<const float*>(stats.data_ptr<float>()), d_su.data_ptr<float>(),
               d_sl.data_ptr<float>(), static_cast<float*>(nullptr), cols, kNone, codes);
  } else {
    const int blocks = tensor_blocks(rows);
    auto partial = torch::empty({2, blocks});
    emu_launch(blocks, kThreads, 0, min_max_partial_kernel, wp, rows, cols, kNone,
               partial.data_ptr<float>());
    emu_launch(1, kThreads, 0, params_tensor_kernel,
               static_cast<const float*>(partial.data_ptr<float>()), blocks,
               stats.data_ptr<float>(), sup, slp, codes);
    const float* st = stats.data_ptr<float>();
    emu_launch(blocks, kThreads, 0, apply_tensor_kernel<float>, wp, y.data_ptr<float>(), rows,
               cols, kNone, st, codes);
    auto pf = torch::empty({blocks});
    auto pn = torch::empty({2, blocks}, torch::kInt);
    auto out = torch::empty({4});
    emu_launch(blocks, kThreads, 0, backward_partial_kernel<float>, wp, gp, gx.data_ptr<float>(),
               rows, cols, kNone, st, pf.data_ptr<float>(), pn.data_ptr<int>(), codes);
    emu_launch(1, kThreads, 0, chain_tensor_kernel, static_cast<const float*>(pf.data_ptr<float>()),
               static_cast<const int*>(pn.data_ptr<int>()), blocks, st, out.data_ptr<float>(),
               codes);
    emu_launch(flat_blocks(n), kThreads, 0, ties_tensor_kernel, wp, gx.data_ptr<float>(), n, st,
               static_cast<const float*>(out.data_ptr<float>()));
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
  }
  return {y, gx, d_su, d_sl};
}

// ------------------------------------------------------------ with the LET transform

struct ScaledGrads {
  torch::Tensor y, g_col, g_row, g_up, g_low;
};

/// The transform's composed ops (quant/weight_transform.cpp) then the quantizer's, the weight
/// frozen and the factors and sigmoids leaves.
ScaledGrads composed_scaled(const torch::Tensor& w, torch::Tensor col, torch::Tensor row,
                            bool divides, torch::Tensor su, torch::Tensor sl, bool per_row,
                            bool sym, int64_t qmin, int64_t qmax, const torch::Tensor& gy) {
  col = col.clone().requires_grad_(true);
  row = row.defined() ? row.clone().requires_grad_(true) : row;
  su = sigmoid_leaf(su, per_row);
  sl = sigmoid_leaf(sl, per_row);
  auto t = w * col.unsqueeze(0);  // [rows, cols]
  if (row.defined()) t = divides ? t / row.unsqueeze(1) : t * row.unsqueeze(1);
  const auto y = quantize_composed(t, su, sl, per_row, sym, qmin, qmax);
  y.backward(gy);
  ScaledGrads r{y.detach(), col.grad(), row.defined() ? row.grad() : row, {}, {}};
  if (su.defined()) {
    r.g_up = su.grad().flatten();
    r.g_low = sl.grad().flatten();
  }
  return r;
}

/// The kernels as fused_weight_quantize_forward_cuda and _scaled_backward_cuda launch them,
/// writing Out and reading gradients of G (float or c10::BFloat16).
template <typename Out, typename G>
ScaledGrads fused_scaled(const torch::Tensor& w, const torch::Tensor& col, const torch::Tensor& row,
                         bool divides, const torch::Tensor& su, const torch::Tensor& sl,
                         bool per_row, const Codes& codes, const torch::Tensor& gy_in) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t groups = per_row ? rows : 1;
  const Transform t{col.data_ptr<float>(), row.defined() ? row.data_ptr<float>() : nullptr,
                    divides};
  const float* sup = su.defined() ? su.data_ptr<float>() : nullptr;
  const float* slp = sl.defined() ? sl.data_ptr<float>() : nullptr;
  const auto out_dtype = std::is_same_v<Out, float> ? torch::kFloat : torch::kBFloat16;
  const auto gy = gy_in.to(std::is_same_v<G, float> ? torch::kFloat : torch::kBFloat16);
  auto y = torch::empty({rows, cols}, out_dtype);
  auto stats = torch::zeros({groups, kStats});
  auto d_su = torch::zeros({groups}), d_sl = torch::zeros({groups});
  auto shares = torch::zeros({groups, 2});
  const float* wp = w.data_ptr<float>();
  Out* yp = reinterpret_cast<Out*>(y.data_ptr());
  const G* gp = reinterpret_cast<const G*>(gy.data_ptr());
  float* st = stats.data_ptr<float>();
  if (per_row) {
    const auto threads = static_cast<unsigned>(row_threads(cols));
    emu_launch(rows, threads, 0, forward_rows_kernel<Out>, wp, yp, st, cols, sup, slp, t, codes);
    emu_launch(rows, threads, 0, backward_rows_kernel<G>, wp, gp, static_cast<float*>(nullptr),
               static_cast<const float*>(st), d_su.data_ptr<float>(), d_sl.data_ptr<float>(),
               shares.data_ptr<float>(), cols, t, codes);
  } else {
    const int blocks = tensor_blocks(rows);
    auto partial = torch::empty({2, blocks});
    emu_launch(blocks, kThreads, 0, min_max_partial_kernel, wp, rows, cols, t,
               partial.data_ptr<float>());
    emu_launch(1, kThreads, 0, params_tensor_kernel,
               static_cast<const float*>(partial.data_ptr<float>()), blocks, st, sup, slp, codes);
    emu_launch(blocks, kThreads, 0, apply_tensor_kernel<Out>, wp, yp, rows, cols, t,
               static_cast<const float*>(st), codes);
    auto pf = torch::empty({blocks});
    auto pn = torch::empty({2, blocks}, torch::kInt);
    auto out = torch::empty({4});
    emu_launch(blocks, kThreads, 0, backward_partial_kernel<G>, wp, gp,
               static_cast<float*>(nullptr), rows, cols, t, static_cast<const float*>(st),
               pf.data_ptr<float>(), pn.data_ptr<int>(), codes);
    emu_launch(1, kThreads, 0, chain_tensor_kernel, static_cast<const float*>(pf.data_ptr<float>()),
               static_cast<const int*>(pn.data_ptr<int>()), blocks, static_cast<const float*>(st),
               out.data_ptr<float>(), codes);
    d_su = out.narrow(0, 0, 1);
    d_sl = out.narrow(0, 1, 1);
    shares = out.narrow(0, 2, 2).clone();
  }
  const int64_t bands = (rows + kBandRows - 1) / kBandRows;
  const int64_t tiles = (cols + kTileCols - 1) / kTileCols;
  auto partial_col = torch::zeros({bands, cols}), partial_row = torch::zeros({rows, tiles});
  emu_launch(dim3{static_cast<unsigned>(bands), static_cast<unsigned>(tiles), 1},
             kBandWarps * 32, 0, scaled_grads_kernel<G>, wp, gp, rows, cols, t,
             static_cast<const float*>(st), static_cast<const float*>(shares.data_ptr<float>()),
             static_cast<int64_t>(per_row ? 1 : 0), codes, partial_col.data_ptr<float>(),
             row.defined() ? partial_row.data_ptr<float>() : static_cast<float*>(nullptr));
  return {y, partial_col.sum(0), row.defined() ? partial_row.sum(1) : torch::Tensor(), d_su,
          d_sl};
}

/// The transformed cases; returns the number of failures.
int scaled_cases(at::Generator& gen) {
  struct Case {
    int64_t rows, cols;
    bool per_row;
    int bits;
    bool sym, lwc;
    int row_op;  // 0 none, 1 divide, 2 multiply
    bool bf16;   // bf16 output and incoming gradient
  };
  // Bands of 32 rows and tiles of 256 columns, whole and cut; per tensor over many blocks.
  const Case cases[] = {{70, 530, false, 8, false, true, 1, false},
                        {33, 300, false, 8, true, false, 2, true},
                        {40, 270, true, 4, false, true, 1, false},
                        {36, 256, true, 8, true, true, 0, true},
                        {20, 300, true, 8, false, false, 2, false}};
  int failures = 0;
  for (const Case& c : cases) {
    auto w = torch::randn({c.rows, c.cols}, gen) * 0.05 + 0.01;  // [rows, cols]
    auto col = torch::rand({c.cols}, gen) + 0.5;                  // [cols]
    auto row = c.row_op == 0 ? torch::Tensor() : torch::rand({c.rows}, gen) + 0.5;  // [rows]
    // Tied transformed extremes: equal weights at columns with equal factors, in rows with
    // equal factors (the maximum three times, the minimum twice).
    const int64_t last = c.rows - 1, mid = c.rows / 2;
    col[3] = col[0];
    col[c.cols - 1] = col[0];
    if (row.defined()) {
      row[last] = row[0];
      row[mid] = row[0];
    }
    const float hi = 2.0f, lo = -1.5f;
    w[0][0] = hi;
    w[0][3] = hi;
    w[last][c.cols - 1] = hi;
    w[0][1] = lo;
    w[mid][1] = lo;
    const int64_t groups = c.per_row ? c.rows : 1;
    torch::Tensor su, sl;  // [groups]
    if (c.lwc) {
      su = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
      sl = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
    }
    const int64_t qmin = c.sym ? -(int64_t{1} << (c.bits - 1)) : 0;
    const int64_t qmax = c.sym ? (int64_t{1} << (c.bits - 1)) - 1 : (int64_t{1} << c.bits) - 1;
    auto gy = torch::randn({c.rows, c.cols}, gen);
    if (c.bf16) gy = gy.to(torch::kBFloat16).to(torch::kFloat);  // what a bf16 matmul hands back
    const bool divides = c.row_op == 1;
    const ScaledGrads want =
        composed_scaled(w, col, row, divides, su, sl, c.per_row, c.sym, qmin, qmax, gy);
    const Codes codes = make_codes(qmin, qmax, c.sym, c.lwc);
    const ScaledGrads got =
        c.bf16 ? fused_scaled<c10::BFloat16, c10::BFloat16>(w, col, row, divides, su, sl,
                                                             c.per_row, codes, gy)
               : fused_scaled<float, float>(w, col, row, divides, su, sl, c.per_row, codes, gy);
    const bool same = torch::equal(got.y, want.y.to(got.y.scalar_type()));
    const double e_col = rel_l2(got.g_col, want.g_col);
    const double e_row = row.defined() ? rel_l2(got.g_row, want.g_row) : 0.0;
    const double e_up = c.lwc ? rel_l2(got.g_up, want.g_up) : 0.0;
    const double e_low = c.lwc ? rel_l2(got.g_low, want.g_low) : 0.0;
    // Sums over a column or row of up to 530 terms in another order: relative 1e-5; the LWC
    // gradients chain d scale, a sum over the whole group: 1e-4 as above.
    const bool ok = same && e_col <= 1e-5 && e_row <= 1e-5 && e_up <= 1e-4 && e_low <= 1e-4;
    failures += !ok;
    std::printf("%s LET [%ld, %ld] %s %d bits%s%s, rows %s%s: values %s, d col %.1e, "
                "d row %.1e, d up %.1e, d low %.1e\n",
                ok ? "ok  " : "FAIL", static_cast<long>(c.rows), static_cast<long>(c.cols),
                c.per_row ? "per row" : "per tensor", c.bits, c.sym ? " symmetric" : "",
                c.lwc ? " LWC" : "", c.row_op == 0 ? "kept" : (divides ? "divided" : "multiplied"),
                c.bf16 ? ", bf16 out" : "", same ? "equal" : "DIFFER", e_col, e_row, e_up, e_low);
  }
  return failures;
}

}  // namespace

int main() {
  auto gen = at::detail::createCPUGenerator(41);
  struct Case {
    int64_t rows, cols;
    bool per_row;
    int bits;
  };
  // Per tensor: one block, then 40 blocks of partials (one a row); per row: rows shorter than a block,
  // longer than a block, of one warp (per-group 32) and of part of one.
  const Case cases[] = {{1, 300, false, 16}, {40, 1100, false, 8}, {96, 200, true, 8},
                        {12, 2100, true, 4}, {192, 32, true, 4},   {5, 20, true, 8}};
  int failures = 0;
  for (const Case& c : cases) {
    for (const bool sym : {false, true}) {
      for (const bool lwc : {false, true}) {
        auto w = torch::randn({c.rows, c.cols}, gen) * 0.05 + 0.01;  // [rows, cols]
        auto flat = w.view({-1});
        const float hi = w.max().item<float>() + 0.01f, lo = w.min().item<float>() - 0.02f;
        const int64_t n = flat.numel();
        for (const int64_t i : {int64_t{0}, int64_t{3}, n - 1}) flat[i] = hi;  // tied maximum
        for (const int64_t i : {int64_t{1}, n / 2}) flat[i] = lo;              // tied minimum
        if (sym) flat[5] = -hi;
        const int64_t groups = c.per_row ? c.rows : 1;
        torch::Tensor su, sl;  // [groups]
        if (lwc) {
          su = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
          sl = torch::sigmoid(torch::rand({groups}, gen) * 3 + 1);
        }
        const int64_t qmin = sym ? -(int64_t{1} << (c.bits - 1)) : 0;
        const int64_t qmax = sym ? (int64_t{1} << (c.bits - 1)) - 1 : (int64_t{1} << c.bits) - 1;
        const auto gy = torch::randn({c.rows, c.cols}, gen);
        const Grads want = composed(w, su, sl, c.per_row, sym, qmin, qmax, gy);
        const Grads got = fused(w, su, sl, c.per_row, make_codes(qmin, qmax, sym, lwc), gy);
        const bool same = torch::equal(got.y, want.y);
        const double e_w = rel_l2(got.gw, want.gw);
        const double e_up = lwc ? rel_l2(got.g_up, want.g_up) : 0.0;
        const double e_low = lwc ? rel_l2(got.g_low, want.g_low) : 0.0;
        const bool ok = same && e_w <= 1e-5 && e_up <= 1e-4 && e_low <= 1e-4;
        failures += !ok;
        std::printf("%s [%ld, %ld] %s %d bits%s%s: values %s, d w %.1e, d up %.1e, d low %.1e\n",
                    ok ? "ok  " : "FAIL", static_cast<long>(c.rows), static_cast<long>(c.cols),
                    c.per_row ? "per row" : "per tensor", c.bits, sym ? " symmetric" : "",
                    lwc ? " LWC" : "", same ? "equal" : "DIFFER", e_w, e_up, e_low);
      }
    }
  }
  failures += scaled_cases(gen);
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
