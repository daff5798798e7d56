// mobilequant/train/blockwise_trainer.cpp
#include "mobilequant/train/blockwise_trainer.h"

#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "mobilequant/core/error.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/train/autocast_guard.h"
#include "mobilequant/train/denormal_guard.h"

namespace mq {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "blockwise_state.safetensors";
constexpr const char* kStateFormat = "mobilequant.blockwise.v1";

/// The file holding block i's folded weights.
std::string layer_path(const std::string& dir, int64_t i) {
  return (fs::path(dir) / ("blockwise_layer_" + std::to_string(i) + ".safetensors")).string();
}

/// "8x24" for windows [8, 24]: checked on resume (a checkpoint of other windows is an error).
std::string shape_text(const torch::Tensor& t) {
  std::string out;
  for (int64_t d = 0; d < t.dim(); ++d) out += (d ? "x" : "") + std::to_string(t.size(d));
  return out;
}

/// Block i's parameters under Hugging Face names ("model.layers.3.mlp.up_proj.weight").
TensorMap layer_tensors(CausalLmImpl& model, int64_t i) {
  TensorMap out;
  const std::string prefix = "model.layers." + std::to_string(i) + ".";
  for (const auto& p : model.layer(i)->named_parameters()) out[prefix + p.key()] = p.value().detach();
  return out;
}

/// Copies a layer_tensors() map back into block i, checking every name and shape.
void load_layer_tensors(CausalLmImpl& model, int64_t i, const TensorMap& tensors,
                        const std::string& source) {
  torch::NoGradGuard no_grad;
  const std::string prefix = "model.layers." + std::to_string(i) + ".";
  std::set<std::string> used;
  for (auto& p : model.layer(i)->named_parameters()) {
    const std::string name = prefix + p.key();
    auto it = tensors.find(name);
    MQ_CHECK(it != tensors.end(), source, ": tensor '", name, "' not found (expected shape ",
             p.value().sizes(), ")");
    MQ_CHECK(it->second.sizes() == p.value().sizes(), source, ": tensor '", name, "' has shape ",
             it->second.sizes(), ", expected ", p.value().sizes());
    p.value().copy_(it->second);
    used.insert(name);
  }
  for (const auto& kv : tensors)
    MQ_CHECK(used.count(kv.first) != 0, source, ": unexpected tensor '", kv.first,
             "' (not a parameter of block ", i, ")");
}

/// An integer metadata value of a checkpoint; `source` and `key` name it in errors.
int64_t meta_int(const std::map<std::string, std::string>& meta, const std::string& key,
                 const std::string& source) {
  auto it = meta.find(key);
  MQ_CHECK(it != meta.end(), source, ": metadata '", key, "' missing (not a block-wise checkpoint)");
  try {
    size_t used = 0;
    const int64_t v = std::stoll(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  throw make_error(source, ": metadata '", key, "' = '", it->second, "', expected an integer");
}

/// A string metadata value of a checkpoint.
std::string meta_str(const std::map<std::string, std::string>& meta, const std::string& key,
                     const std::string& source) {
  auto it = meta.find(key);
  MQ_CHECK(it != meta.end(), source, ": metadata '", key, "' missing (not a block-wise checkpoint)");
  return it->second;
}

/// What the trainer knows about its last checkpoint, for error messages.
std::string describe_checkpoint(const std::string& path, int64_t layers_done) {
  if (path.empty()) return "none";
  return "'" + path + "' after " + std::to_string(layers_done) + " block(s)";
}

/// The first parameter group among `params` with a non-finite value ("" when all are finite).
std::string non_finite_group(const std::array<std::vector<torch::Tensor>, kNumParamGroups>& params) {
  for (int g = 0; g < kNumParamGroups; ++g) {
    for (const auto& p : params[static_cast<size_t>(g)])
      if (!torch::isfinite(p.detach()).all().item<bool>())
        return to_string(static_cast<ParamGroup>(g));
  }
  return "";
}

}  // namespace

std::string blockwise_checkpoint_path(const std::string& checkpoint_dir) {
  return (fs::path(checkpoint_dir) / kStateFile).string();
}

BlockwiseResult train_blockwise(QuantizedModelImpl& qm, const torch::Tensor& windows,
                                const BlockwiseOptions& opts) {
  DenormalGuard no_denormals;  // see train/denormal_guard.h
  MQ_CHECK(windows.dim() == 2 && windows.scalar_type() == torch::kInt64,
           "train_blockwise: windows must be [N, T] int64, got ", windows.sizes(), " ",
           windows.scalar_type());
  const int64_t n = windows.size(0);
  MQ_CHECK(opts.epochs >= 1, "train_blockwise: epochs: got ", opts.epochs, ", expected >= 1");
  MQ_CHECK(opts.batch_size >= 1 && opts.grad_accum >= 1, "train_blockwise: batch_size ",
           opts.batch_size, " and grad_accum ", opts.grad_accum, " must both be >= 1");
  MQ_CHECK(n >= 1 && n % (opts.batch_size * opts.grad_accum) == 0, "train_blockwise: batch_size ",
           opts.batch_size, " x grad_accum ", opts.grad_accum, " does not divide the ", n,
           " windows");
  MQ_CHECK(opts.stop_after_layers >= -1, "train_blockwise: stop_after_layers: got ",
           opts.stop_after_layers, ", expected -1 or >= 0");
  MQ_CHECK(!opts.resume || !opts.checkpoint_dir.empty(),
           "train_blockwise: resume needs a checkpoint_dir");
  CausalLm model = qm.float_model();
  const int64_t num_layers = model->config().num_hidden_layers;
  const auto device = model->parameters().front().device();
  for (auto& p : qm.parameters()) p.set_requires_grad(false);  // the float weights included
  qm.set_weight_cache(false);
  auto log = [&](const std::string& line) {
    if (opts.log) opts.log(line);
  };
  auto store = [&](const torch::Tensor& t) { return opts.inputs_on_device ? t : t.cpu(); };

  const int64_t batches = n / opts.batch_size;
  const int64_t steps_per_epoch = batches / opts.grad_accum;
  const int64_t total = opts.epochs * steps_per_epoch;  // optimizer steps per block

  // Block i applied to every cached input (no gradient), quantization on or off.
  auto propagate = [&](int64_t i, const std::vector<torch::Tensor>& in, bool quant) {
    torch::NoGradGuard no_grad;
    AutocastGuard autocast(device, opts.bf16);
    qm.set_quantization(quant);
    std::vector<torch::Tensor> out;  // per batch: [B, T, C]
    for (const auto& x : in) out.push_back(store(model->run_layer(i, x.to(device))));
    qm.set_quantization(true);
    return out;
  };

  // Inputs of block 0: the embeddings through the model-level embed site, float and quantized.
  std::vector<torch::Tensor> fp_in, quant_in;  // per batch: [B, T, C]
  {
    torch::NoGradGuard no_grad;
    AutocastGuard autocast(device, opts.bf16);
    for (const bool quant : {false, true}) {
      qm.set_quantization(quant);
      for (int64_t b = 0; b < batches; ++b) {
        auto ids = windows.narrow(0, b * opts.batch_size, opts.batch_size).to(device);
        (quant ? quant_in : fp_in).push_back(store(model->embed(ids)));
      }
    }
    qm.set_quantization(true);
  }

  BlockwiseResult result;
  std::string last_checkpoint;  // "" until one is written or read
  const std::string state_path =
      opts.checkpoint_dir.empty() ? "" : blockwise_checkpoint_path(opts.checkpoint_dir);
  if (opts.resume && fs::exists(state_path)) {
    const auto header = read_safetensors_header(state_path);
    const auto& meta = header.metadata;
    MQ_CHECK(meta_str(meta, "format", state_path) == kStateFormat, state_path, ": format '",
             meta_str(meta, "format", state_path), "', expected '", kStateFormat, "'");
    const int64_t ckpt_layers = meta_int(meta, "num_layers", state_path);
    MQ_CHECK(ckpt_layers == num_layers, state_path, ": written for a model with ", ckpt_layers,
             " blocks, this model has ", num_layers);
    const std::string quant_name = meta_str(meta, "quant_config", state_path);
    MQ_CHECK(quant_name == qm.quant_config().name, state_path, ": written with quant config '",
             quant_name, "', this model has '", qm.quant_config().name, "'");
    const std::string shape = meta_str(meta, "windows", state_path);
    MQ_CHECK(shape == shape_text(windows), state_path, ": written for windows ", shape,
             ", these are ", shape_text(windows));
    const int64_t done = meta_int(meta, "layers_done", state_path);
    MQ_CHECK(done >= 1 && done <= num_layers, state_path, ": layers_done ", done,
             ", expected 1..", num_layers);
    // The float inputs through the original float blocks (the caller's fresh model), then
    // the finished blocks' folded weights and the quantization state, then the quantized
    // inputs through the folded blocks: exactly what the uninterrupted run holds.
    for (int64_t i = 0; i < done; ++i) fp_in = propagate(i, fp_in, /*quant=*/false);
    for (int64_t i = 0; i < done; ++i) {
      const std::string path = layer_path(opts.checkpoint_dir, i);
      load_layer_tensors(*model, i, read_safetensors(path, /*keep_dtype=*/true), path);
      qm.disable_lwc(i);  // folded: the clipping is in the weights
    }
    qm.load_quant_state(read_safetensors(state_path, /*keep_dtype=*/true), state_path);
    for (int64_t i = 0; i < done; ++i) quant_in = propagate(i, quant_in, /*quant=*/true);
    result.layers = result.resumed_layers = done;
    last_checkpoint = describe_checkpoint(state_path, done);
    log("block-wise: resumed after " + std::to_string(done) + " of " +
        std::to_string(num_layers) + " blocks from " + state_path);
  }

  for (int64_t i = result.layers; i < num_layers; ++i) {
    if (opts.stop_after_layers >= 0 && result.layers >= opts.stop_after_layers) break;
    // Targets: the float block (quantization off, transforms at their initial value) on the
    // float-propagated inputs; they are also the next block's float inputs.
    fp_in = propagate(i, fp_in, /*quant=*/false);
    const std::vector<torch::Tensor>& target = fp_in;

    if (opts.lwc.enabled && qm.lwc_parameters(i).empty()) qm.enable_lwc(i, kLwcInit);
    const std::array<std::vector<torch::Tensor>, kNumParamGroups> params = {
        {qm.let_parameters(i), qm.lwc_parameters(i), qm.lrl_parameters(i)}};
    GroupedOptimizer optimizer(params, {{opts.let, opts.lwc, opts.lrl}}, opts.warmup_steps, total);
    optimizer.set_namer([&qm](const torch::Tensor& p) { return qm.parameter_name(p); });
    const std::string where = "train_blockwise: block " + std::to_string(i) +
                              " (last checkpoint: " +
                              (last_checkpoint.empty() ? "none" : last_checkpoint) + ")";
    log("block-wise: block " + std::to_string(i) + " of " + std::to_string(num_layers) + ", " +
        std::to_string(total) + " steps");

    double first_loss = 0.0, last_loss = 0.0;
    int64_t step = 0;
    for (int64_t epoch = 0; epoch < opts.epochs; ++epoch) {
      double epoch_loss = 0.0;
      for (int64_t s = 0; s < steps_per_epoch; ++s, ++step) {
        TrainStep info;
        info.layer = i;
        info.step = step;
        info.total_steps = total;
        info.epoch = epoch;
        optimizer.set_lr(step, info);
        optimizer.zero_grad();
        auto loss_sum = torch::zeros({}, torch::dtype(torch::kFloat64).device(device));
        for (int64_t a = 0; a < opts.grad_accum; ++a) {
          const size_t b = static_cast<size_t>(s * opts.grad_accum + a);
          auto x = quant_in[b].to(device);                                   // [B, T, C]
          torch::Tensor out;                                                 // [B, T, C]
          {
            AutocastGuard autocast(device, opts.bf16);
            out = model->run_layer(i, x);
          }
          auto loss = torch::mse_loss(out.to(torch::kFloat32),
                                      target[b].to(device, torch::kFloat32));
          (opts.grad_accum == 1 ? loss : loss / static_cast<double>(opts.grad_accum)).backward();
          loss_sum = loss_sum + loss.detach().to(torch::kFloat64);
          info.tokens += x.size(0) * x.size(1);
        }
        info.loss = loss_sum.item<double>() / static_cast<double>(opts.grad_accum);
        if (!std::isfinite(info.loss)) {
          const std::string group = non_finite_group(params);
          throw make_error(where, ": non-finite loss ", info.loss, " at step ", step, " (epoch ",
                           epoch, ")",
                           group.empty() ? std::string("; every parameter group is finite")
                                         : "; parameter group '" + group +
                                               "' holds a non-finite value",
                           "; block ", i, "'s parameters are those after step ", step - 1);
        }
        info.grad_norm = optimizer.grad_norm(where, step);
        optimizer.step();
        epoch_loss += info.loss;
        if (opts.on_step) opts.on_step(info);
      }
      epoch_loss /= static_cast<double>(steps_per_epoch);
      if (epoch == 0) first_loss = epoch_loss;
      last_loss = epoch_loss;
    }
    for (const auto& group : params)
      for (auto p : group) p.set_requires_grad(false);
    result.steps += step;
    result.first_epoch_loss.push_back(first_loss);
    result.last_epoch_loss.push_back(last_loss);

    qm.fold_layer(i);
    result.layers = i + 1;
    if (!opts.checkpoint_dir.empty()) {
      fs::create_directories(opts.checkpoint_dir);
      write_safetensors(layer_path(opts.checkpoint_dir, i), layer_tensors(*model, i),
                        {{"format", "mobilequant.blockwise_layer.v1"},
                         {"layer", std::to_string(i)}});
      write_safetensors(state_path, qm.quant_state(),
                        {{"format", kStateFormat},
                         {"layers_done", std::to_string(i + 1)},
                         {"num_layers", std::to_string(num_layers)},
                         {"quant_config", qm.quant_config().name},
                         {"windows", shape_text(windows)}});
      last_checkpoint = describe_checkpoint(state_path, i + 1);
    }
    log("block-wise: block " + std::to_string(i) + " loss " + std::to_string(first_loss) +
        " -> " + std::to_string(last_loss));
    if (opts.on_layer) opts.on_layer(i, first_loss, last_loss);
    // The next block's quantized inputs: this block quantized and folded, no gradient.
    const bool stopping = opts.stop_after_layers >= 0 && result.layers >= opts.stop_after_layers;
    if (i + 1 < num_layers && !stopping) quant_in = propagate(i, quant_in, /*quant=*/true);
  }
  qm.invalidate_weight_cache();
  return result;
}

}  // namespace mq
