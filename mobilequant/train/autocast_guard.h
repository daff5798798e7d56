// mobilequant/train/autocast_guard.h
// bf16 autocast for a scope (torch.autocast in Python): matmuls and linears run in bf16 on
// the given device type; everything else keeps its dtype. The fake quantizers compute in fp32
// whatever they are given (quant/fake_quantizer.h).
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace mq {

/// Enables bf16 autocast on `device`'s type while alive when `on` (else does nothing).
class AutocastGuard {
 public:
  /// Starts autocast (if `on`).
  AutocastGuard(const torch::Device& device, bool on) : type_(device.type()), on_(on) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(type_);
    prev_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  /// Restores the previous autocast state.
  ~AutocastGuard() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, prev_enabled_);
    at::autocast::set_autocast_dtype(type_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  at::DeviceType type_;
  bool on_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

}  // namespace mq
