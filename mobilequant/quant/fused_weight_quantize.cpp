// mobilequant/quant/fused_weight_quantize.cpp
// The host side: checks and the autograd functions around the kernels of
// fused_weight_quantize_cuda.cu. Without MQ_HAVE_CUDA_KERNELS the fused path is never taken.
#include "mobilequant/quant/fused_weight_quantize.h"

#include <tuple>
#include <utility>

#include "mobilequant/core/error.h"
#include "mobilequant/quant/primitives.h"

namespace mq {

#ifdef MQ_HAVE_CUDA_KERNELS
/// Defined in fused_weight_quantize_cuda.cu: (y [groups, g] in out_dtype, statistics [G, 8])
/// with G the number of (scale, offset) pairs; col / row undefined without a transform,
/// sig_up / sig_low without LWC.
std::pair<torch::Tensor, torch::Tensor> fused_weight_quantize_forward_cuda(
    const torch::Tensor& wg, const torch::Tensor& col, const torch::Tensor& row,
    bool row_divides, const torch::Tensor& sig_up, const torch::Tensor& sig_low, int64_t qmin,
    int64_t qmax, bool symmetric, bool per_row, torch::ScalarType out_dtype);
/// Defined there too: (d wg, d sig_up [G], d sig_low [G]; the two undefined without LWC).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> fused_weight_quantize_backward_cuda(
    const torch::Tensor& wg, const torch::Tensor& grad, const torch::Tensor& stats, int64_t qmin,
    int64_t qmax, bool symmetric, bool lwc, bool per_row);
/// And the transform's: (d col [in], d row [out], d sig_up [G], d sig_low [G]), each undefined
/// where its input is.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
fused_weight_quantize_scaled_backward_cuda(const torch::Tensor& w, const torch::Tensor& col,
                                           const torch::Tensor& row, bool row_divides,
                                           const torch::Tensor& grad, const torch::Tensor& stats,
                                           int64_t qmin, int64_t qmax, bool symmetric, bool lwc,
                                           bool per_row);

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// The LWC gradients in the shape of the sigmoids they belong to.
void reshape_like_sigmoids(AutogradContext* ctx, torch::Tensor& d_su, torch::Tensor& d_sl) {
  const auto shape = ctx->saved_data["sig_shape"].toIntVector();
  d_su = d_su.reshape(shape);
  d_sl = d_sl.reshape(shape);
}

/// The saved switches of both functions.
void save_codes(AutogradContext* ctx, int64_t qmin, int64_t qmax, bool symmetric, bool lwc,
                bool per_row, const torch::Tensor& sig_up) {
  ctx->saved_data["qmin"] = qmin;
  ctx->saved_data["qmax"] = qmax;
  ctx->saved_data["symmetric"] = symmetric;
  ctx->saved_data["lwc"] = lwc;
  ctx->saved_data["per_row"] = per_row;
  if (lwc) ctx->saved_data["sig_shape"] = sig_up.sizes().vec();
}

/// The autograd function: inputs (wg, sig_up, sig_low); the sigmoids are [G] or [G, 1] fp32.
/// Without LWC the sigmoid slots hold wg itself, unread and given no gradient (autograd takes
/// no undefined inputs).
struct FusedWeightQuantizeFunction : torch::autograd::Function<FusedWeightQuantizeFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& wg,
                               const torch::Tensor& sig_up, const torch::Tensor& sig_low,
                               int64_t qmin, int64_t qmax, bool symmetric, bool lwc,
                               bool per_row, int64_t out_dtype) {
    auto [y, stats] = fused_weight_quantize_forward_cuda(
        wg, {}, {}, false, lwc ? sig_up : torch::Tensor(), lwc ? sig_low : torch::Tensor(), qmin,
        qmax, symmetric, per_row, static_cast<torch::ScalarType>(out_dtype));
    ctx->save_for_backward({wg, stats});
    save_codes(ctx, qmin, qmax, symmetric, lwc, per_row, sig_up);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool lwc = ctx->saved_data["lwc"].toBool();
    auto [gx, d_su, d_sl] = fused_weight_quantize_backward_cuda(
        saved[0], grads[0], saved[1], ctx->saved_data["qmin"].toInt(),
        ctx->saved_data["qmax"].toInt(), ctx->saved_data["symmetric"].toBool(), lwc,
        ctx->saved_data["per_row"].toBool());
    if (lwc) reshape_like_sigmoids(ctx, d_su, d_sl);
    return {gx, d_su, d_sl, {}, {}, {}, {}, {}, {}};
  }
};

/// The transform's function: inputs (w, col, row, sig_up, sig_low), with w itself in the slots
/// of an absent factor or sigmoid (unread, given no gradient). w gets no gradient: it is frozen.
struct FusedScaledWeightQuantizeFunction
    : torch::autograd::Function<FusedScaledWeightQuantizeFunction> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& w,
                               const torch::Tensor& col, const torch::Tensor& row,
                               const torch::Tensor& sig_up, const torch::Tensor& sig_low,
                               bool has_col, bool has_row, bool row_divides, int64_t qmin,
                               int64_t qmax, bool symmetric, bool lwc, bool per_row,
                               int64_t out_dtype) {
    const torch::Tensor c = has_col ? col : torch::Tensor(), r = has_row ? row : torch::Tensor();
    auto [y, stats] = fused_weight_quantize_forward_cuda(
        w, c, r, row_divides, lwc ? sig_up : torch::Tensor(), lwc ? sig_low : torch::Tensor(),
        qmin, qmax, symmetric, per_row, static_cast<torch::ScalarType>(out_dtype));
    ctx->save_for_backward({w, stats, col, row});
    ctx->saved_data["has_col"] = has_col;
    ctx->saved_data["has_row"] = has_row;
    ctx->saved_data["row_divides"] = row_divides;
    save_codes(ctx, qmin, qmax, symmetric, lwc, per_row, sig_up);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool lwc = ctx->saved_data["lwc"].toBool();
    const torch::Tensor c = ctx->saved_data["has_col"].toBool() ? saved[2] : torch::Tensor();
    const torch::Tensor r = ctx->saved_data["has_row"].toBool() ? saved[3] : torch::Tensor();
    auto [d_col, d_row, d_su, d_sl] = fused_weight_quantize_scaled_backward_cuda(
        saved[0], c, r, ctx->saved_data["row_divides"].toBool(), grads[0], saved[1],
        ctx->saved_data["qmin"].toInt(), ctx->saved_data["qmax"].toInt(),
        ctx->saved_data["symmetric"].toBool(), lwc, ctx->saved_data["per_row"].toBool());
    if (lwc) reshape_like_sigmoids(ctx, d_su, d_sl);
    return {{}, d_col, d_row, d_su, d_sl, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  }
};

/// Checks both LWC sigmoids (or neither) against the `groups` they must cover.
void check_sigmoids(const torch::Tensor& w, const torch::Tensor& sig_up,
                    const torch::Tensor& sig_low, int64_t groups) {
  MQ_CHECK(sig_up.defined() == sig_low.defined(),
           "fused_weight_quantize: both LWC sigmoids or neither");
  if (!sig_up.defined()) return;
  for (const torch::Tensor* s : {&sig_up, &sig_low})
    MQ_CHECK(s->numel() == groups && s->scalar_type() == torch::kFloat32 &&
                 s->device() == w.device(),
             "fused_weight_quantize: an LWC sigmoid of shape ", s->sizes(), " (",
             s->scalar_type(), ", ", s->device(), "), expected ", groups, " fp32 values on ",
             w.device());
}

void check_out_dtype(torch::ScalarType out_dtype) {
  MQ_CHECK(out_dtype == torch::kFloat32 || out_dtype == torch::kBFloat16,
           "fused_weight_quantize: output dtype ", out_dtype, ", expected fp32 or bf16");
}

/// A factor of `n` fp32 values on `w`'s device, or undefined.
bool factor_fits(const torch::Tensor& f, int64_t n, const torch::Tensor& w) {
  return !f.defined() || (f.dim() == 1 && f.size(0) == n && f.scalar_type() == torch::kFloat32 &&
                          f.device() == w.device());
}

}  // namespace
#endif

bool fused_weight_quantize_supported(const torch::Tensor& wg) {
#ifdef MQ_HAVE_CUDA_KERNELS
  return wg.defined() && wg.is_cuda() && wg.scalar_type() == torch::kFloat32 && wg.dim() == 2 &&
         wg.is_contiguous();
#else
  (void)wg;
  return false;
#endif
}

torch::Tensor fused_weight_quantize(const torch::Tensor& wg, const torch::Tensor& sig_up,
                                    const torch::Tensor& sig_low, int64_t bits, bool symmetric,
                                    bool per_row, torch::ScalarType out_dtype) {
  MQ_CHECK(fused_weight_quantize_supported(wg), "fused_weight_quantize: not available for a ",
           wg.defined() ? wg.sizes() : c10::IntArrayRef{}, " tensor in this build (expected a ",
           "contiguous 2-D fp32 CUDA tensor)");
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto [qmin, qmax] = code_range(bits, symmetric);
  check_sigmoids(wg, sig_up, sig_low, per_row ? wg.size(0) : 1);
  check_out_dtype(out_dtype);
  const bool lwc = sig_up.defined();
  const torch::Tensor su = lwc ? sig_up.contiguous() : torch::Tensor();   // [G] or [G, 1]
  const torch::Tensor sl = lwc ? sig_low.contiguous() : torch::Tensor();  // [G] or [G, 1]
  const bool sig_grad = lwc && (su.requires_grad() || sl.requires_grad());
  const bool needs_grad = torch::GradMode::is_enabled() && (wg.requires_grad() || sig_grad);
  if (!needs_grad)
    return fused_weight_quantize_forward_cuda(wg, {}, {}, false, su, sl, qmin, qmax, symmetric,
                                              per_row, out_dtype)
        .first;
  return FusedWeightQuantizeFunction::apply(wg, lwc ? su : wg, lwc ? sl : wg, qmin, qmax,
                                            symmetric, lwc, per_row,
                                            static_cast<int64_t>(out_dtype));
#else
  return wg;  // not reached: the check above fails without the kernels
#endif
}

bool fused_weight_quantize_supported(const torch::Tensor& w, const WeightTransform& t) {
#ifdef MQ_HAVE_CUDA_KERNELS
  return fused_weight_quantize_supported(w) && !w.requires_grad() &&
         factor_fits(t.col, w.size(1), w) && factor_fits(t.row, w.size(0), w);
#else
  (void)w;
  (void)t;
  return false;
#endif
}

torch::Tensor fused_weight_quantize(const torch::Tensor& w, const WeightTransform& t,
                                    const torch::Tensor& sig_up, const torch::Tensor& sig_low,
                                    int64_t bits, bool symmetric, bool per_row,
                                    torch::ScalarType out_dtype) {
  MQ_CHECK(fused_weight_quantize_supported(w, t), "fused_weight_quantize: not available for a ",
           w.defined() ? w.sizes() : c10::IntArrayRef{}, " weight and its transform in this ",
           "build (expected a contiguous 2-D fp32 CUDA weight that needs no gradient, and fp32 ",
           "factors of its column and row counts on its device)");
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto [qmin, qmax] = code_range(bits, symmetric);
  check_sigmoids(w, sig_up, sig_low, per_row ? w.size(0) : 1);
  check_out_dtype(out_dtype);
  const bool lwc = sig_up.defined();
  const torch::Tensor su = lwc ? sig_up.contiguous() : torch::Tensor();  // [G] or [G, 1]
  const torch::Tensor sl = lwc ? sig_low.contiguous() : torch::Tensor();
  const torch::Tensor col = t.col.defined() ? t.col.contiguous() : torch::Tensor();  // [in]
  const torch::Tensor row = t.row.defined() ? t.row.contiguous() : torch::Tensor();  // [out]
  const bool any_grad = (lwc && (su.requires_grad() || sl.requires_grad())) ||
                        (col.defined() && col.requires_grad()) ||
                        (row.defined() && row.requires_grad());
  if (!torch::GradMode::is_enabled() || !any_grad)
    return fused_weight_quantize_forward_cuda(w, col, row, t.row_divides, su, sl, qmin, qmax,
                                              symmetric, per_row, out_dtype)
        .first;
  return FusedScaledWeightQuantizeFunction::apply(
      w, col.defined() ? col : w, row.defined() ? row : w, lwc ? su : w, lwc ? sl : w,
      col.defined(), row.defined(), t.row_divides, qmin, qmax, symmetric, lwc, per_row,
      static_cast<int64_t>(out_dtype));
#else
  return w;  // not reached: the check above fails without the kernels
#endif
}

}  // namespace mq
