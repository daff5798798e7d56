// mobilequant/bench/forward_bench.cpp
#include "mobilequant/bench/forward_bench.h"

#include <algorithm>
#include <chrono>

#include "mobilequant/core/error.h"

namespace mq {

namespace {
void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}
}  // namespace

std::vector<ForwardBenchResult> bench_forward(CausalLm& model, const ForwardBenchOptions& opts) {
  MQ_CHECK(opts.reps > 0, "bench_forward: reps must be positive, got ", opts.reps);
  c10::InferenceMode guard;
  const auto device = model->parameters().front().device();
  const int64_t vocab = model->config().vocab_size;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  std::vector<ForwardBenchResult> results;
  for (int64_t t : opts.seqlens) {
    MQ_CHECK(t > 0 && t <= model->config().max_position_embeddings, "bench_forward: seqlen ", t,
             " outside [1, ", model->config().max_position_embeddings, "] (the model's context)");
    auto ids = torch::randint(vocab, {opts.batch, t}, gen, torch::kInt64).to(device);  // [B, T]
    for (int64_t i = 0; i < opts.warmup; ++i) model->forward(ids);
    sync(device);
    std::vector<double> times;
    for (int64_t i = 0; i < opts.reps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto logits = model->forward(ids);                                             // [B, T, V]
      sync(device);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    results.push_back({t, median, static_cast<double>(opts.batch * t) / median});
  }
  return results;
}

}  // namespace mq
