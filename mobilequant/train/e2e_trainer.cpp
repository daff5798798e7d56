// mobilequant/train/e2e_trainer.cpp
#include "mobilequant/train/e2e_trainer.h"

#include <cmath>
#include <filesystem>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/train/autocast_guard.h"
#include "mobilequant/train/denormal_guard.h"
#include "mobilequant/train/cuda_graph_step.h"
#include "mobilequant/train/recompute.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOptimizerPrefix = "optimizer.";  // GroupedOptimizer::state()
constexpr const char* kStateKey = "__state__";          // [steps, first loss, epoch loss sum]

/// Where the run stands, as a checkpoint holds it.
struct Progress {
  int64_t steps_done = 0;
  double first_epoch_loss = 0.0;
  double epoch_loss_sum = 0.0;  // of the epoch in progress
};

void save_checkpoint(const std::string& path, QuantizedModelImpl& qm,
                     const GroupedOptimizer& optimizer, const Progress& p) {
  TensorMap tensors = qm.quant_state();
  for (auto& [name, t] : optimizer.state()) tensors[name] = t;
  tensors[kStateKey] = torch::tensor({static_cast<double>(p.steps_done), p.first_epoch_loss,
                                      p.epoch_loss_sum},
                                     torch::kFloat64);                       // [3]
  write_safetensors(path, tensors, {{"format", "mobilequant-e2e-checkpoint"}});
}

}  // namespace

torch::Tensor last_layer_output(QuantizedModelImpl& qm, const torch::Tensor& ids) {
  CausalLm model = qm.float_model();
  const int64_t last = model->config().num_hidden_layers - 1;
  auto h = model->embed(ids);                                                // [B, T, C]
  for (int64_t i = 0; i < last; ++i) h = model->run_layer(i, h);
  // The block's output unless its residual add is fake-quantized: then the float sum, seen
  // by an observer in the last block only (an observer sends a block down the composed path).
  if (!qm.quantization() || !qm.quant_config().act(ActSite::kResidAdd2Out).enabled)
    return model->run_layer(last, h);                                        // [B, T, C]
  torch::Tensor out;
  qm.set_observer([&](int64_t layer, ActSite site, const torch::Tensor& x) {
    if (layer == last && site == ActSite::kResidAdd2Out) out = x;
  });
  model->run_layer(last, h);
  qm.set_observer(nullptr);
  MQ_CHECK(out.defined(), "train: the last decoder layer's output was not observed");
  return out;                                                                // [B, T, C]
}

std::string e2e_checkpoint_path(const std::string& checkpoint_dir) {
  return (fs::path(checkpoint_dir) / "e2e_state.safetensors").string();
}

EndToEndResult train_end_to_end(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const EndToEndOptions& opts) {
  DenormalGuard no_denormals;  // see train/denormal_guard.h
  MQ_CHECK(windows.dim() == 2 && windows.scalar_type() == torch::kInt64,
           "train: windows must be [N, T] int64, got ", windows.sizes(), " ",
           windows.scalar_type());
  const int64_t n = windows.size(0);
  MQ_CHECK(opts.batch_size >= 1 && opts.grad_accum >= 1 &&
               n % (opts.batch_size * opts.grad_accum) == 0,
           "train: batch_size ", opts.batch_size, " x grad_accum ", opts.grad_accum,
           " does not divide the ", n, " windows");
  MQ_CHECK(opts.epochs >= 1, "train: epochs: got ", opts.epochs, ", expected >= 1");
  MQ_CHECK(!opts.recompute || opts.loss == TrainLoss::kMse, "train: recompute: only with the ",
           "mse loss (got ", to_string(opts.loss), ")");
  MQ_CHECK(!opts.recompute || !qm.quant_config().act(ActSite::kResidAdd2Out).enabled,
           "train: recompute: the block output site resid_add_2.output must not be quantized "
           "(the MSE target is taken before it)");
  const auto say = [&](const std::string& line) {
    if (opts.log) opts.log(line);
  };
  CausalLm model = qm.float_model();
  const auto device = model->parameters().front().device();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  qm.set_weight_cache(false);

  // Targets: the float model (quantization off, transforms at their initial values) on every
  // micro-batch, before any checkpoint is loaded, so that a resumed run sees the same targets.
  const int64_t micro = n / opts.batch_size;
  const int64_t steps_per_epoch = micro / opts.grad_accum;
  const int64_t total = opts.epochs * steps_per_epoch;
  std::vector<torch::Tensor> targets;  // per micro-batch: [B, T, C]
  if (opts.loss != TrainLoss::kLm) {
    say("computing the float model's last-layer outputs on " + std::to_string(n) + " windows");
    torch::NoGradGuard no_grad;
    AutocastGuard autocast(device, opts.bf16);
    qm.set_quantization(false);
    for (int64_t b = 0; b < micro; ++b) {
      auto ids = windows.narrow(0, b * opts.batch_size, opts.batch_size).to(device);
      auto y = last_layer_output(qm, ids);
      targets.push_back(opts.targets_on_device ? y : y.cpu());
    }
    qm.set_quantization(true);
  }

  if (opts.lwc.enabled && qm.lwc_parameters().empty()) qm.enable_lwc();
  Progress progress;
  const std::string ckpt = opts.checkpoint_dir.empty() ? "" : e2e_checkpoint_path(opts.checkpoint_dir);
  TensorMap optimizer_state;  // when resuming
  bool loaded = false;
  if (opts.resume && !ckpt.empty() && fs::exists(ckpt)) {
    TensorMap state = read_safetensors(ckpt, /*keep_dtype=*/true);
    loaded = true;
    auto take = [&](const char* key) {
      auto it = state.find(key);
      MQ_CHECK(it != state.end(), ckpt, ": tensor '", key, "' missing (not a training checkpoint?)");
      auto t = it->second;
      state.erase(it);
      return t;
    };
    const auto s = take(kStateKey);
    for (auto it = state.begin(); it != state.end();) {
      if (it->first.rfind(kOptimizerPrefix, 0) == 0) {
        optimizer_state.insert(*it);
        it = state.erase(it);
      } else {
        ++it;
      }
    }
    MQ_CHECK(s.numel() == 3 && s.scalar_type() == torch::kFloat64, ckpt, ": ", kStateKey,
             " must be 3 float64 values, got ", s.sizes(), " ", s.scalar_type());
    progress.steps_done = static_cast<int64_t>(s[0].item<double>());
    progress.first_epoch_loss = s[1].item<double>();
    progress.epoch_loss_sum = s[2].item<double>();
    MQ_CHECK(progress.steps_done >= 0 && progress.steps_done <= total, ckpt, ": holds ",
             progress.steps_done, " steps, but this run has ", total,
             " (a checkpoint of another configuration?)");
    qm.load_quant_state(state, ckpt);
  }
  qm.set_act_ranges_learnable(opts.lrl.enabled);
  GroupedOptimizer optimizer({opts.let.enabled ? qm.let_parameters() : std::vector<torch::Tensor>{},
                              qm.lwc_parameters(), qm.lrl_parameters()},
                             {opts.let, opts.lwc, opts.lrl}, opts.warmup_steps, total);
  optimizer.set_namer([&qm](const torch::Tensor& p) { return qm.parameter_name(p); });
  if (!opts.let.enabled)
    for (auto& p : qm.let_parameters()) p.set_requires_grad(false);
  EndToEndResult result;
  if (loaded) {
    optimizer.load_state(optimizer_state, ckpt);
    result.resumed_from = progress.steps_done;
    say("resumed from " + ckpt + " after step " + std::to_string(progress.steps_done) + " of " +
        std::to_string(total));
  }
  std::string last_checkpoint =
      result.resumed_from > 0 ? ckpt + " (after step " + std::to_string(result.resumed_from) + ")"
                              : "none written";

  // With recompute, the block function must outlive each backward pass that calls it.
  const LayerFunction block = [&model](int64_t i, const torch::Tensor& h) {
    return model->run_layer(i, h);                                           // [B, T, C]
  };
  // CUDA graph: eager first step (warms up the allocator, cuBLAS and autograd's device
  // threads), then one captured micro-batch replayed (train/cuda_graph_step.h).
  const bool use_graph = opts.cuda_graph && opts.loss == TrainLoss::kMse &&
                         CudaGraphStep::available(device);
  if (opts.cuda_graph && !use_graph && opts.log)
    opts.log("[train] cuda_graph: not used (needs a CUDA device and the mse loss)");
  const int64_t first_step = progress.steps_done;
  CudaGraphStep graph;
  bool graph_failed = false;
  // The quantized model's last-layer output [B, T, C] for ids [B, T] (the MSE loss's input).
  const auto student_output = [&](const torch::Tensor& ids) {
    if (!opts.recompute) return last_layer_output(qm, ids);
    // Block by block, each recomputed in the backward pass: the last block's output is what
    // last_layer_output gives (its residual add is not quantized; checked above).
    torch::Tensor out = model->embed(ids);                                   // [B, T, C]
    for (int64_t i = 0; i < model->config().num_hidden_layers; ++i)
      out = recompute_in_backward(block, i, out, opts.bf16);
    return out;
  };
  const auto mse_body = [&](const torch::Tensor& ids, const torch::Tensor& target) {
    torch::Tensor loss;
    {
      AutocastGuard autocast(device, opts.bf16);
      loss = torch::mse_loss(student_output(ids).to(torch::kFloat32), target.to(torch::kFloat32));
    }
    (opts.grad_accum > 1 ? loss / static_cast<double>(opts.grad_accum) : loss).backward();
    return loss.detach();
  };
  for (int64_t step = progress.steps_done; step < total; ++step) {
    const int64_t epoch = step / steps_per_epoch;
    const int64_t in_epoch = step % steps_per_epoch;
    if (in_epoch == 0) progress.epoch_loss_sum = 0.0;
    TrainStep info;
    info.step = step;
    info.total_steps = total;
    info.epoch = epoch;
    optimizer.set_lr(step, info);
    const bool graph_step = use_graph && !graph_failed && step > first_step;
    if (graph_step) {
      optimizer.zero_grad_in_place();  // the graph accumulates into these tensors
    } else {
      optimizer.zero_grad();
    }
    const std::string where = "train: step " + std::to_string(step) + " (epoch " +
                              std::to_string(epoch) + "; last good checkpoint: " +
                              last_checkpoint + ")";
    double loss_sum = 0.0;
    for (int64_t a = 0; a < opts.grad_accum; ++a) {
      const int64_t b = in_epoch * opts.grad_accum + a;  // micro-batch
      auto ids = windows.narrow(0, b * opts.batch_size, opts.batch_size).to(device);  // [B, T]
      if (graph_step && !graph_failed) {
        const auto target = targets[static_cast<size_t>(b)].to(device);
        if (!graph.captured()) {
          std::string why;
          if (!graph.capture(mse_body, ids, target, why)) {
            graph_failed = true;
            if (opts.log) opts.log("[train] cuda_graph: capture failed (" + why + "); running eagerly");
          } else if (opts.log) {
            opts.log("[train] cuda_graph: micro-batch captured at step " + std::to_string(step + 1) +
                     "; replaying it from now on");
          }
        }
        if (graph.captured()) {
          const double value = graph.replay(ids, target).item<double>();
          MQ_CHECK(std::isfinite(value), where, ": non-finite loss ", value, " in micro-batch ", b);
          loss_sum += value;
          continue;
        }
      }
      torch::Tensor loss;
      {
        AutocastGuard autocast(device, opts.bf16);
        if (opts.loss == TrainLoss::kMse) {
          loss = torch::mse_loss(student_output(ids).to(torch::kFloat32),
                                 targets[static_cast<size_t>(b)].to(device, torch::kFloat32));
        } else {
          auto logits = qm.forward(ids).to(torch::kFloat32);                 // [B, T, V]
          if (opts.loss == TrainLoss::kLm) {
            const int64_t v = logits.size(-1);
            loss = torch::cross_entropy_loss(
                logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v}),
                ids.narrow(1, 1, ids.size(1) - 1).reshape({-1}));
          } else {
            torch::Tensor teacher;                                           // [B, T, V]
            {
              torch::NoGradGuard no_grad;
              const auto h = targets[static_cast<size_t>(b)].to(device);
              teacher = torch::log_softmax(
                  model->logits(model->model->norm(h)).to(torch::kFloat32), -1);
            }
            const auto student = torch::log_softmax(logits, -1);             // [B, T, V]
            loss = (teacher.exp() * (teacher - student)).sum(-1).mean();
          }
        }
      }
      const double value = loss.item<double>();
      MQ_CHECK(std::isfinite(value), where, ": non-finite loss ", value, " in micro-batch ", b);
      (opts.grad_accum > 1 ? loss / static_cast<double>(opts.grad_accum) : loss).backward();
      loss_sum += value;
    }
    info.loss = loss_sum / static_cast<double>(opts.grad_accum);
    info.grad_norm = optimizer.grad_norm(where, step);
    info.tokens = opts.batch_size * opts.grad_accum * windows.size(1);
    optimizer.step();
    progress.epoch_loss_sum += info.loss;
    progress.steps_done = step + 1;
    const bool epoch_end = in_epoch + 1 == steps_per_epoch;
    if (epoch_end && epoch == 0)
      progress.first_epoch_loss = progress.epoch_loss_sum / static_cast<double>(steps_per_epoch);
    if (opts.on_step) opts.on_step(info);
    if (!ckpt.empty() &&
        (epoch_end || (opts.checkpoint_every > 0 && progress.steps_done % opts.checkpoint_every == 0))) {
      fs::create_directories(opts.checkpoint_dir);
      save_checkpoint(ckpt, qm, optimizer, progress);
      last_checkpoint = ckpt + " (after step " + std::to_string(progress.steps_done) + ")";
      if (opts.on_checkpoint) opts.on_checkpoint(ckpt, progress.steps_done);
    }
  }
  result.steps = total;
  result.first_epoch_loss = progress.first_epoch_loss;
  result.last_epoch_loss = progress.epoch_loss_sum / static_cast<double>(steps_per_epoch);
  for (auto& p : qm.parameters()) p.set_requires_grad(false);
  return result;
}

}  // namespace mq
