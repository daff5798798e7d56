// mobilequant/bench/train_bench.cpp
#include "mobilequant/bench/train_bench.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <iostream>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

#ifdef MQ_HAVE_TORCH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/core/error.h"
#include "mobilequant/train/autocast_guard.h"
#include "mobilequant/train/cuda_graph_step.h"
#include "mobilequant/train/e2e_trainer.h"
#include "mobilequant/train/param_groups.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Sets the TF32 switches for a precision and restores them on destruction.
class Tf32Guard {
 public:
  explicit Tf32Guard(BenchPrecision p)
      : cublas_(at::globalContext().allowTF32CuBLAS()),
        cudnn_(at::globalContext().allowTF32CuDNN()) {
    const bool tf32 = p == BenchPrecision::kTf32;
    at::globalContext().setAllowTF32CuBLAS(tf32);
    at::globalContext().setAllowTF32CuDNN(tf32);
  }
  ~Tf32Guard() {
    at::globalContext().setAllowTF32CuBLAS(cublas_);
    at::globalContext().setAllowTF32CuDNN(cudnn_);
  }
  Tf32Guard(const Tf32Guard&) = delete;
  Tf32Guard& operator=(const Tf32Guard&) = delete;

 private:
  bool cublas_, cudnn_;
};

/// Resets the kernel's peak-RSS mark of this process (Linux: "5" to /proc/self/clear_refs).
bool reset_host_peak() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

/// VmHWM of /proc/self/status in GiB (0 if unreadable).
double host_peak_gib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) * 1024.0 / kGiB;  // kB
  }
  return 0.0;
}

void reset_gpu_peak(const torch::Device& device) {
#ifdef MQ_HAVE_TORCH_CUDA
  if (!device.is_cuda()) return;
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

/// (peak allocated, peak reserved) in GiB; (-1, -1) when not on CUDA.
std::pair<double, double> gpu_peak_gib(const torch::Device& device) {
#ifdef MQ_HAVE_TORCH_CUDA
  if (device.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    // Index 0 is StatType::AGGREGATE (every pool).
    return {static_cast<double>(stats.allocated_bytes[0].peak) / kGiB,
            static_cast<double>(stats.reserved_bytes[0].peak) / kGiB};
  }
#else
  (void)device;
#endif
  return {-1.0, -1.0};
}

/// Aggregates a profiled step: CPU ops by self time (each op minus the ops nested in it on its
/// thread), device kernels by time.
void aggregate_profile(const std::vector<torch::autograd::profiler::KinetoEvent>& events,
                       int64_t top, TrainStepBreakdown& out) {
  struct Span {
    uint64_t start, end;
    std::string name;
  };
  std::map<uint64_t, std::vector<Span>> cpu_by_thread;
  std::unordered_map<std::string, std::pair<double, int64_t>> cpu, dev;  // name -> (ns, calls)
  for (const auto& e : events) {
    if (e.deviceType() == c10::DeviceType::CPU) {
      cpu_by_thread[e.startThreadId()].push_back({e.startNs(), e.endNs(), e.name()});
    } else {
      auto& d = dev[e.name()];
      d.first += static_cast<double>(e.durationNs());
      d.second += 1;
      out.device_total_ms += static_cast<double>(e.durationNs()) * 1e-6;
    }
  }
  for (auto& [tid, spans] : cpu_by_thread) {
    // Parents before children: by start, the longer first at equal starts.
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
      return a.start != b.start ? a.start < b.start : a.end > b.end;
    });
    std::vector<double> self(spans.size());
    std::vector<size_t> stack;  // open spans
    for (size_t i = 0; i < spans.size(); ++i) {
      while (!stack.empty() && spans[stack.back()].end <= spans[i].start) stack.pop_back();
      const double dur = static_cast<double>(spans[i].end - spans[i].start);
      self[i] = dur;
      if (!stack.empty()) self[stack.back()] -= dur;
      stack.push_back(i);
    }
    for (size_t i = 0; i < spans.size(); ++i) {
      auto& c = cpu[spans[i].name];
      c.first += self[i];
      c.second += 1;
      out.cpu_total_ms += self[i] * 1e-6;
    }
  }
  auto ranked = [top](const std::unordered_map<std::string, std::pair<double, int64_t>>& m) {
    std::vector<OpTime> v;
    for (const auto& [name, t] : m) v.push_back({name, t.first * 1e-6, t.second});
    std::sort(v.begin(), v.end(), [](const OpTime& a, const OpTime& b) {
      return a.self_ms > b.self_ms;
    });
    if (static_cast<int64_t>(v.size()) > top) v.resize(static_cast<size_t>(top));
    return v;
  };
  out.top_cpu_ops = ranked(cpu);
  out.top_device_ops = ranked(dev);
}

/// Where the time goes: the trainer's step (forward to the last layer + MSE, backward, AdamW
/// over the LET / LWC / ARL tensors) with the phases timed apart, then one step under Kineto.
TrainStepBreakdown profile_steps(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                 const TrainBenchOptions& opts, const torch::Device& device) {
  TrainStepBreakdown out;
  const bool bf16 = opts.precision == BenchPrecision::kBf16;
  auto ids = windows.narrow(0, 0, opts.batch).to(device);                     // [B, T]
  torch::Tensor target;                                                       // [B, T, C]
  {
    torch::NoGradGuard no_grad;
    qm.set_quantization(false);
    AutocastGuard ac(device, bf16);
    target = last_layer_output(qm, ids).to(torch::kFloat32);
    qm.set_quantization(true);
  }
  // As the trainer with its default groups: only the quantization parameters train (LET, LWC,
  // ARL), through the trainer's own optimizer.
  for (auto& p : qm.float_model()->parameters()) p.set_requires_grad(false);
  if (qm.lwc_parameters().empty()) qm.enable_lwc();
  qm.set_act_ranges_learnable(true);
  const ParamGroupOptions group{true, 1e-6, 1e-6, 0.0};
  GroupedOptimizer optimizer({qm.let_parameters(), qm.lwc_parameters(), qm.lrl_parameters()},
                             {group, group, group}, /*warmup_steps=*/0, /*total_steps=*/1);
  TrainStep info;
  optimizer.set_lr(0, info);
  auto step = [&](double* f, double* b, double* o) {
    sync(device);
    const double t0 = now_seconds();
    torch::Tensor loss;
    {
      AutocastGuard ac(device, bf16);
      auto y = last_layer_output(qm, ids);                                    // [B, T, C]
      loss = torch::mse_loss(y.to(torch::kFloat32), target);
    }
    sync(device);
    const double t1 = now_seconds();
    loss.backward();
    sync(device);
    const double t2 = now_seconds();
    optimizer.grad_norm("bench train --profile", 0);  // the trainer's one read-back per step
    optimizer.step();
    optimizer.zero_grad();
    sync(device);
    const double t3 = now_seconds();
    if (f) *f = t1 - t0;
    if (b) *b = t2 - t1;
    if (o) *o = t3 - t2;
  };
  step(nullptr, nullptr, nullptr);  // warm-up: optimizer state, autocast caches
  std::vector<double> fs, bs, os;
  for (int64_t i = 0; i < std::max<int64_t>(opts.steps, 1); ++i) {
    double f = 0, b = 0, o = 0;
    step(&f, &b, &o);
    fs.push_back(f * 1e3);
    bs.push_back(b * 1e3);
    os.push_back(o * 1e3);
  }
  out.forward_ms = median(fs);
  out.backward_ms = median(bs);
  out.optimizer_ms = median(os);

  namespace prof = torch::autograd::profiler;
  namespace impl = torch::profiler::impl;
  std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
  if (device.is_cuda()) activities.insert(impl::ActivityType::CUDA);
  try {
    const impl::ProfilerConfig config(impl::ProfilerState::KINETO);
    prof::prepareProfiler(config, activities);
    prof::enableProfiler(config, activities);
    step(nullptr, nullptr, nullptr);
    auto result = prof::disableProfiler();
    aggregate_profile(result->events(), opts.profile_top, out);
  } catch (const c10::Error& e) {
    // The phase times stand without it; say why the operator list is missing.
    out.note = std::string("Kineto profiler unavailable: ") + e.what_without_backtrace();
  }
  for (auto& p : optimizer.parameters()) p.set_requires_grad(false);
  return out;
}

}  // namespace

const char* to_string(BenchPrecision p) {
  switch (p) {
    case BenchPrecision::kFp32: return "fp32";
    case BenchPrecision::kTf32: return "tf32";
    case BenchPrecision::kBf16: return "bf16";
  }
  return "?";
}

BenchPrecision parse_bench_precision(const std::string& name, const std::string& where) {
  if (name == "fp32") return BenchPrecision::kFp32;
  if (name == "tf32") return BenchPrecision::kTf32;
  if (name == "bf16") return BenchPrecision::kBf16;
  throw make_error(where, ": unknown precision '", name, "', expected fp32, tf32 or bf16");
}

double train_step_flops(const ModelConfig& cfg, int64_t seqlen, int64_t batch) {
  const double c = static_cast<double>(cfg.hidden_size);
  const double h = static_cast<double>(cfg.num_attention_heads);
  const double kv = static_cast<double>(cfg.num_key_value_heads);
  const double d = static_cast<double>(cfg.head_dim);
  const double inter = static_cast<double>(cfg.intermediate_size);
  const double layers = static_cast<double>(cfg.num_hidden_layers);
  const double t = static_cast<double>(seqlen);
  const double b = static_cast<double>(batch);
  // Weights of one block's linear layers: q, k, v, o, then gate, up, down.
  const double per_layer = c * h * d + 2.0 * c * kv * d + h * d * c + 3.0 * c * inter;
  const double linear = 2.0 * per_layer * layers * b * t;
  // QK^T and PV: 2 * T^2 * d each per head and sequence; causal: half of them are useful.
  const double attention = layers * b * 4.0 * t * t * h * d / 2.0;
  const double forward = linear + attention;
  return 3.0 * forward;  // forward + backward (input and weight gradients: 2 * forward)
}

std::string accelerator_name(const torch::Device& device) {
#ifdef MQ_HAVE_TORCH_CUDA
  if (device.is_cuda())
    return at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index())->name;
#endif
  return device.is_cuda() ? "cuda (name unknown: built without CUDA headers)" : "cpu";
}

double peak_matmul_tflops(const std::string& device_name, BenchPrecision p) {
  auto has = [&](const char* s) { return device_name.find(s) != std::string::npos; };
  struct Peak {
    double bf16, tf32, fp32;
  };
  Peak peak{0, 0, 0};
  if (has("H200") || (has("H100") && (has("SXM") || has("HBM3")) && !has("NVL"))) {
    peak = {989.4, 494.7, 66.9};  // H100 SXM5 / H200: dense, without sparsity
  } else if (has("H100") && (has("PCIe") || has("PCIE"))) {
    peak = {756.0, 378.0, 51.2};
  } else if (has("A100")) {
    peak = {312.0, 156.0, 19.5};
  }
  switch (p) {
    case BenchPrecision::kFp32: return peak.fp32;
    case BenchPrecision::kTf32: return peak.tf32;
    case BenchPrecision::kBf16: return peak.bf16;
  }
  return 0.0;
}

TrainBenchResult bench_train(CausalLm& model, const QuantConfig& quant, const LetPairs& let,
                             const TrainBenchOptions& opts) {
  MQ_CHECK(opts.warmup >= 1, "bench train: warmup must be >= 1 (the first step's time includes "
                             "the float targets and is never timed), got ", opts.warmup);
  MQ_CHECK(opts.steps >= 1, "bench train: steps must be >= 1, got ", opts.steps);
  MQ_CHECK(opts.batch >= 1, "bench train: batch must be >= 1, got ", opts.batch);
  const ModelConfig& cfg = model->config();
  MQ_CHECK(opts.seqlen >= 1 && opts.seqlen <= cfg.max_position_embeddings, "bench train: seqlen ",
           opts.seqlen, " outside [1, ", cfg.max_position_embeddings, "] (the model's context)");
  const auto first = model->parameters().front();
  MQ_CHECK(first.scalar_type() == torch::kFloat32,
           "bench train: the model's weights must be fp32 (training keeps fp32 weights; bf16 is "
           "autocast), got ", first.scalar_type());
  const torch::Device device = first.device();
  Tf32Guard tf32(opts.precision);

  // Random windows: warm-up and timed steps, `batch` windows each.
  const int64_t total_steps = opts.warmup + opts.steps;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
  auto windows = torch::randint(cfg.vocab_size, {total_steps * opts.batch, opts.seqlen}, gen,
                                torch::kInt64);                              // [S * B, T]
  ActStats stats = collect_act_stats(model, windows.narrow(0, 0, opts.batch), opts.batch);
  QuantizedModel qm(model, QuantizedModelOptions(quant).let(let));
  qm->set_act_ranges(stats);

  TrainBenchResult r;
  r.precision = opts.precision;
  r.seqlen = opts.seqlen;
  r.batch = opts.batch;
  r.steps = opts.steps;
  r.warmup = opts.warmup;
  r.flops_per_step = train_step_flops(cfg, opts.seqlen, opts.batch);
  r.peak_tflops = peak_matmul_tflops(accelerator_name(device), opts.precision);

  sync(device);
  reset_gpu_peak(device);
  r.host_peak_reset = reset_host_peak();
  std::vector<double> stamps;  // after each optimizer step, device synchronised
  EndToEndOptions eo;
  eo.epochs = 1;
  eo.batch_size = opts.batch;
  eo.grad_accum = 1;
  eo.bf16 = opts.precision == BenchPrecision::kBf16;
  eo.recompute = opts.recompute;
  eo.cuda_graph = opts.cuda_graph;
  eo.log = [](const std::string& line) { std::cerr << line << "\n"; };
  eo.on_step = [&](const TrainStep& s) {
    sync(device);
    stamps.push_back(now_seconds());
    r.final_loss = s.loss;
  };
  train_end_to_end(*qm, windows, eo);
  MQ_CHECK(static_cast<int64_t>(stamps.size()) == total_steps, "bench train: expected ",
           total_steps, " optimizer steps from the trainer, got ", stamps.size());
  // Step i's time: from the end of step i-1 to the end of step i (i >= warmup >= 1).
  for (int64_t i = opts.warmup; i < total_steps; ++i)
    r.step_seconds.push_back(stamps[static_cast<size_t>(i)] - stamps[static_cast<size_t>(i - 1)]);
  r.median_step_seconds = median(r.step_seconds);
  r.tokens_per_second = static_cast<double>(opts.batch * opts.seqlen) / r.median_step_seconds;
  r.achieved_tflops = r.flops_per_step / r.median_step_seconds / 1e12;
  if (r.peak_tflops > 0) r.fraction_of_peak = r.achieved_tflops / r.peak_tflops;
  const auto [alloc, reserved] = gpu_peak_gib(device);
  r.peak_gpu_allocated_gib = alloc;
  r.peak_gpu_reserved_gib = reserved;
  r.peak_host_rss_gib = host_peak_gib();

  if (opts.profile) {
    r.breakdown = profile_steps(*qm, windows, opts, device);
    r.profiled = true;
  }
  model->set_hooks(nullptr);
  return r;
}

TrainReferenceResult bench_train_references(CausalLm& model, const TrainBenchOptions& opts) {
  MQ_CHECK(opts.warmup >= 1, "bench train --references: warmup must be >= 1, got ", opts.warmup);
  MQ_CHECK(opts.steps >= 1, "bench train --references: steps must be >= 1, got ", opts.steps);
  MQ_CHECK(opts.batch >= 1, "bench train --references: batch must be >= 1, got ", opts.batch);
  MQ_CHECK(model->hooks() == nullptr,
           "bench train --references: the float model still has hooks installed");
  const ModelConfig& cfg = model->config();
  MQ_CHECK(opts.seqlen >= 1 && opts.seqlen <= cfg.max_position_embeddings,
           "bench train --references: seqlen ", opts.seqlen, " outside [1, ",
           cfg.max_position_embeddings, "] (the model's context)");
  const torch::Device device = model->parameters().front().device();
  const bool bf16 = opts.precision == BenchPrecision::kBf16;
  Tf32Guard tf32(opts.precision);
  TrainReferenceResult r;
  r.precision = opts.precision;
  r.flops_per_step = train_step_flops(cfg, opts.seqlen, opts.batch);
  r.peak_tflops = peak_matmul_tflops(accelerator_name(device), opts.precision);
  auto timed = [&](const std::function<void()>& pass, std::vector<double>& seconds) {
    for (int64_t i = 0; i < opts.warmup; ++i) pass();
    for (int64_t i = 0; i < opts.steps; ++i) {
      sync(device);
      const double t0 = now_seconds();
      pass();
      sync(device);
      seconds.push_back(now_seconds() - t0);
    }
  };
  const int64_t layers = cfg.num_hidden_layers;

  // The float step: every block weight trains (their previous flags and gradients restored).
  {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(opts.seed);
    auto ids = torch::randint(cfg.vocab_size, {opts.batch, opts.seqlen}, gen, torch::kInt64)
                   .to(device);                                              // [B, T]
    auto target = torch::randn({opts.batch, opts.seqlen, cfg.hidden_size}, gen)
                      .to(device);                                           // [B, T, C] fp32
    // Every parameter's (requires_grad, grad) as found; the blocks' train, the rest (the
    // embeddings, the final norm, the classifier) is frozen.
    std::vector<torch::Tensor> all = model->parameters(), params;
    std::vector<std::pair<bool, torch::Tensor>> before;
    for (auto& p : all) {
      before.emplace_back(p.requires_grad(), p.grad());
      p.set_requires_grad(false);
    }
    for (int64_t i = 0; i < layers; ++i)
      for (auto& p : model->layer(i)->parameters()) {
        p.set_requires_grad(true);
        p.mutable_grad() = torch::Tensor();
        params.push_back(p);
      }
    auto body = [&](const torch::Tensor& in, const torch::Tensor& want) {
      torch::Tensor loss;
      {
        AutocastGuard ac(device, bf16);
        auto h = model->embed(in);                                           // [B, T, C]
        for (int64_t i = 0; i < layers; ++i) h = model->run_layer(i, h);
        loss = torch::mse_loss(h.to(torch::kFloat32), want);
      }
      loss.backward();
      return loss.detach();
    };
    std::function<void()> pass = [&] {
      body(ids, target);
      for (auto& p : params) p.mutable_grad() = torch::Tensor();
    };
    sync(device);
    reset_gpu_peak(device);
    // With cuda_graph, as the quantized step runs: one eager pass, then the forward and
    // backward captured once and replayed, the gradients zeroed in place before each replay.
    CudaGraphStep graph;
    if (opts.cuda_graph && CudaGraphStep::available(device)) {
      body(ids, target);
      for (auto& p : params) p.mutable_grad().zero_();
      std::string why;
      if (graph.capture(body, ids, target, why)) {
        r.float_step_graph = true;
        pass = [&] {
          for (auto& p : params) p.mutable_grad().zero_();
          graph.replay(ids, target);
        };
      } else {
        r.note = "float step: CUDA graph capture failed (" + why + "); timed eagerly";
        for (auto& p : params) p.mutable_grad() = torch::Tensor();
      }
    }
    timed(pass, r.float_step_seconds);
    r.float_peak_gpu_allocated_gib = gpu_peak_gib(device).first;
    for (size_t k = 0; k < all.size(); ++k) {
      all[k].set_requires_grad(before[k].first);
      all[k].mutable_grad() = before[k].second;
    }
  }
  r.float_median_seconds = median(r.float_step_seconds);

  // The matmuls alone, on random tensors of the step's shapes.
  {
    torch::NoGradGuard no_grad;
    const auto o = torch::TensorOptions().device(device).dtype(bf16 ? torch::kBFloat16
                                                                    : torch::kFloat32);
    const int64_t n = opts.batch * opts.seqlen, c = cfg.hidden_size, d = cfg.head_dim;
    const int64_t h = cfg.num_attention_heads, kv = cfg.num_key_value_heads;
    const int64_t inter = cfg.intermediate_size;
    // q, k, v, o, gate, up, down as (in, out).
    const std::vector<std::pair<int64_t, int64_t>> shapes{
        {c, h * d}, {c, kv * d}, {c, kv * d}, {h * d, c}, {c, inter}, {c, inter}, {inter, c}};
    std::vector<torch::Tensor> xs, dys, ws;  // [n, in], [n, out]; ws: [out, in] per layer
    for (const auto& [in, out] : shapes) {
      xs.push_back(torch::randn({n, in}, o));
      dys.push_back(torch::randn({n, out}, o));
    }
    for (int64_t l = 0; l < layers; ++l)
      for (const auto& [in, out] : shapes) ws.push_back(torch::randn({out, in}, o) * 0.02);
    // Attention operands after repeat_kv, as the step multiplies them: [B, H, T, D].
    auto q = torch::randn({opts.batch, h, opts.seqlen, d}, o);
    auto k = torch::randn({opts.batch, h, opts.seqlen, d}, o);
    auto v = torch::randn({opts.batch, h, opts.seqlen, d}, o);
    auto dout = torch::randn({opts.batch, h, opts.seqlen, d}, o);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    auto pass = [&] {
      for (int64_t l = 0; l < layers; ++l) {
        for (size_t j = 0; j < shapes.size(); ++j) {
          const auto& w = ws[static_cast<size_t>(l) * shapes.size() + j];  // [out, in]
          torch::mm(xs[j], w.t());   // forward        [n, out]
          torch::mm(dys[j], w);      // input gradient [n, in]
          torch::mm(dys[j].t(), xs[j]);  // weight gradient [out, in]
        }
        torch::AutoGradMode grad_on(true);
        auto qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_();
        auto vg = v.detach().requires_grad_();
        auto ctx = at::scaled_dot_product_attention(qg, kg, vg, {}, 0.0, /*is_causal=*/true,
                                                    scale);                  // [B, H, T, D]
        torch::autograd::grad({ctx}, {qg, kg, vg}, {dout});
      }
    };
    timed(pass, r.matmul_seconds);
  }
  r.matmul_median_seconds = median(r.matmul_seconds);
  return r;
}

}  // namespace mq
