// mobilequant/quant/fused_softmax_quantize.cpp
// The host side: checks and the autograd function around the kernels of
// fused_softmax_quantize_cuda.cu. Without MQ_HAVE_CUDA_KERNELS the fused path is never taken.
#include "mobilequant/quant/fused_softmax_quantize.h"

#include <array>

#include "mobilequant/core/error.h"

namespace mq {

/// Longest row (T) the kernels keep in shared memory (two fp32 rows of 48 KiB in all).
constexpr int64_t kMaxSoftmaxRow = 6144;

#ifdef MQ_HAVE_CUDA_KERNELS
/// Defined in fused_softmax_quantize_cuda.cu. q: [4] fp32 (in scale, in offset, out scale, out
/// offset); codes: {in qmin, in qmax, out qmin, out qmax}; enabled: {in, out}. Returns the
/// quantized probabilities and [2, rows] fp32 row statistics (maximum score, sum of
/// exponentials) for the backward pass.
std::pair<torch::Tensor, torch::Tensor> fused_softmax_quantize_cuda(
    const torch::Tensor& scores, double scale, const torch::Tensor& q,
    std::array<int64_t, 4> codes, std::array<bool, 2> enabled);
/// Defined there too, given the forward's row statistics: (d scores, [4] sums: d in scale,
/// d in offset, d out scale, d out offset).
std::pair<torch::Tensor, torch::Tensor> fused_softmax_quantize_backward_cuda(
    const torch::Tensor& scores, const torch::Tensor& grad, const torch::Tensor& stats,
    double scale, const torch::Tensor& q, std::array<int64_t, 4> codes,
    std::array<bool, 2> enabled);
#endif

namespace {

#ifdef MQ_HAVE_CUDA_KERNELS
struct FusedSoftmaxQuantizeFunction : torch::autograd::Function<FusedSoftmaxQuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& scores,
                               const torch::Tensor& s_in, const torch::Tensor& o_in,
                               const torch::Tensor& s_out, const torch::Tensor& o_out,
                               double scale, std::vector<int64_t> codes,
                               std::vector<int64_t> enabled) {
    const torch::Tensor q =
        torch::cat({s_in.reshape({1}), o_in.reshape({1}), s_out.reshape({1}), o_out.reshape({1})})
            .to(torch::kFloat32);  // [4]
    auto [probs, stats] =
        fused_softmax_quantize_cuda(scores, scale, q, {codes[0], codes[1], codes[2], codes[3]},
                                    {enabled[0] != 0, enabled[1] != 0});
    ctx->save_for_backward({scores, q, s_in, s_out, stats});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["codes"] = codes;
    ctx->saved_data["enabled"] = enabled;
    return probs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto codes = ctx->saved_data["codes"].toIntVector();
    const auto enabled = ctx->saved_data["enabled"].toIntVector();
    auto [gx, sums] = fused_softmax_quantize_backward_cuda(
        saved[0], grads[0], saved[4], ctx->saved_data["scale"].toDouble(), saved[1],
        {codes[0], codes[1], codes[2], codes[3]}, {enabled[0] != 0, enabled[1] != 0});
    const auto& s_in = saved[2];
    const auto& s_out = saved[3];
    return {gx,
            sums[0].reshape(s_in.sizes()),
            sums[1].reshape(s_in.sizes()),
            sums[2].reshape(s_out.sizes()),
            sums[3].reshape(s_out.sizes()),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};
#endif

}  // namespace

bool fused_softmax_quantize_supported(const torch::Tensor& scores) {
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto t = scores.scalar_type();
  return scores.is_cuda() && scores.dim() == 4 && scores.size(2) == scores.size(3) &&
         scores.size(3) <= kMaxSoftmaxRow &&
         (t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16);
#else
  (void)scores;
  return false;
#endif
}

torch::Tensor fused_softmax_quantize(const torch::Tensor& scores, double scale,
                                     const SoftmaxQuantizer& in, const SoftmaxQuantizer& out) {
  MQ_CHECK(fused_softmax_quantize_supported(scores), "fused_softmax_quantize: not available for ",
           "scores of shape ", scores.sizes(), " (", scores.scalar_type(), ") on ",
           scores.device(), " in this build (expected CUDA [B, H, T, T] with T <= ",
           kMaxSoftmaxRow, ")");
  for (const SoftmaxQuantizer* q : {&in, &out}) {
    if (!q->enabled) continue;
    MQ_CHECK(q->scale.defined() && q->offset.defined() && q->scale.numel() == 1 &&
                 q->offset.numel() == 1,
             "fused_softmax_quantize: a quantizer needs one-element scale and offset, got ",
             q->scale.defined() ? q->scale.sizes() : c10::IntArrayRef{}, " and ",
             q->offset.defined() ? q->offset.sizes() : c10::IntArrayRef{});
    MQ_CHECK(q->qmin < q->qmax, "fused_softmax_quantize: empty code range [", q->qmin, ", ",
             q->qmax, "]");
  }
#ifdef MQ_HAVE_CUDA_KERNELS
  const auto dev = scores.device();
  auto param = [&](const SoftmaxQuantizer& q, bool is_scale) {
    if (!q.enabled)
      return torch::full({1}, is_scale ? 1.0 : 0.0, torch::dtype(torch::kFloat32).device(dev));
    return is_scale ? q.scale : q.offset;
  };
  return FusedSoftmaxQuantizeFunction::apply(
      scores, param(in, true), param(in, false), param(out, true), param(out, false), scale,
      std::vector<int64_t>{in.qmin, in.qmax, out.qmin, out.qmax},
      std::vector<int64_t>{in.enabled ? 1 : 0, out.enabled ? 1 : 0});
#else
  (void)scale;
  return scores;
#endif
}

}  // namespace mq
