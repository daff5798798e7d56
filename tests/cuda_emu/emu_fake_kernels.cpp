// tests/cuda_emu/emu_fake_kernels.cpp
// The per-tensor forward kernel of mobilequant/quant/fused_fake_quantize_cuda.cu in 16-byte
// vectors, run on the CPU under the CUDA emulation (emu.h), against the element kernel on the
// same input and against the composed torch ops, fp32 and bf16, with a tail that is not a whole
// vector and values off the reciprocal path (zeros of both signs, tiny, huge, NaN) among
// ordinary ones: the values bit for bit (up to the sign of a zero). Exit status 0 when all
// hold. ctest label cuda-emu (`scripts/test.sh cuda-emu`).
#include "fused_fake_quantize_cuda.inc"

#include <torch/torch.h>

#include <cstdio>
#include <limits>

namespace {

using namespace mq;

/// Same values (NaN where NaN; +0 and -0 equal).
bool same_values(const torch::Tensor& a, const torch::Tensor& b) {
  const auto a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  return torch::equal(a64.isnan(), b64.isnan()) &&
         torch::equal(a64.nan_to_num(0.0), b64.nan_to_num(0.0));
}

template <typename T>
bool check(torch::ScalarType dtype, int64_t n, at::Generator& gen) {
  auto x32 = torch::randn({n}, gen) * 3;  // [n]
  const float specials[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 3e-39f, 1e30f, -1e30f,
                            std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  for (int i = 0; i < 9 && 17 * i + 3 < n; ++i) x32[17 * i + 3] = specials[i];
  const auto x = x32.to(dtype);
  const float s = 0.0371f, o = 121.25f, lo = 0.0f, hi = 255.0f;
  auto scale = torch::tensor({s}), offset = torch::tensor({o});
  const T* xp = static_cast<const T*>(x.data_ptr());  // [n]
  constexpr int kVec = 16 / sizeof(T);
  constexpr unsigned kBlock = 64, kGrid = 3;  // a grid-stride loop of several rounds

  auto y_vec = torch::empty_like(x), y_elem = torch::empty_like(x);
  emu_launch(kGrid, kBlock, 0, fake_quantize_vec_kernel<T, kVec>, xp,
             static_cast<T*>(y_vec.data_ptr()), n, scale.data_ptr<float>(),
             offset.data_ptr<float>(), lo, hi);
  emu_launch(kGrid, kBlock, 0, fake_quantize_kernel<T>, xp, static_cast<T*>(y_elem.data_ptr()),
             n, static_cast<const float*>(scale.data_ptr<float>()),
             static_cast<const float*>(offset.data_ptr<float>()), 0, n, lo, hi);
  const auto xf = x.to(torch::kFloat32);
  const auto composed = ((torch::round(xf / s) + o).clamp(lo, hi) - o) * s;
  const bool ok = same_values(y_vec, y_elem) && same_values(y_vec, composed.to(dtype));

  std::printf("%s %s n %ld: values %s\n", ok ? "ok  " : "FAIL",
              dtype == torch::kFloat32 ? "fp32" : "bf16", static_cast<long>(n),
              same_values(y_vec, y_elem) ? "equal to the element kernel's" : "DIFFER");
  return ok;
}

}  // namespace

int main() {
  auto gen = at::detail::createCPUGenerator(31);
  int failures = 0;
  failures += !check<float>(torch::kFloat32, 4099, gen);
  failures += !check<c10::BFloat16>(torch::kBFloat16, 4101, gen);
  failures += !check<float>(torch::kFloat32, 3, gen);  // no whole vector
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
