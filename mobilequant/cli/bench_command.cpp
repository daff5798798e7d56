// mobilequant/cli/bench_command.cpp
// `mobilequant bench forward`: tokens per second of our forward pass at several
// sequence lengths and, in the same run, of transformers' forward on the same weights
// (written to a temporary Hugging Face directory), threads, dtype and device; prints
// a Markdown table with the ratio (ours / transformers; above 1 means faster).
// `mobilequant bench quant`: the simulated-quantized forward against the float forward.
// `mobilequant bench train`: the end-to-end training step (bench/train_bench.h), of a model
// given by path or by shape with random weights, one row per precision.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unistd.h>

#include "mobilequant/bench/forward_bench.h"
#include "mobilequant/bench/train_bench.h"
#include "mobilequant/calib/act_stats.h"
#include "mobilequant/cli/commands.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/models/hf_export.h"
#include "mobilequant/transforms/quantized_model.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

struct BenchArgs {
  ModelArgs model;
  std::vector<std::string> quant{"w8a8"};  ///< bench quant: presets to simulate
  std::vector<int64_t> seqlens{128, 512, 2048};
  int64_t batch = 1, warmup = 2, reps = 5, threads = 0;
  bool no_transformers = false;
  std::string python;
  std::string output;
};

/// The Python with transformers: --python, $MQ_PYTHON, <repo>/.venv/bin/python, python3.
std::string find_python(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("MQ_PYTHON")) return env;
  const auto venv = fs::path(source_dir()) / ".venv" / "bin" / "python";
  return fs::exists(venv) ? venv.string() : "python3";
}

/// Runs `cmd`, returns its stdout; throws with the command on a non-zero exit.
std::string run_capture(const std::string& cmd) {
  FILE* pipe = popen(cmd.c_str(), "r");
  MQ_CHECK(pipe != nullptr, "bench: cannot start '", cmd, "'");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  const int rc = pclose(pipe);
  MQ_CHECK(rc == 0, "bench: '", cmd, "' exited with status ", rc,
           " (use --no-transformers to skip the comparison)");
  return out;
}

std::string join(const std::vector<int64_t>& v) {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  return os.str();
}

void run_bench_forward(const BenchArgs& a) {
  if (a.threads > 0) torch::set_num_threads(static_cast<int>(a.threads));
  const auto opts = to_load_options(a.model);
  std::cerr << "[bench] loading " << a.model.model << "\n";
  auto ckpt = read_checkpoint(a.model.model, a.model.tokenizer);
  auto loaded = build_model(ckpt, opts);

  ForwardBenchOptions bo;
  bo.seqlens = a.seqlens;
  bo.batch = a.batch;
  bo.warmup = a.warmup;
  bo.reps = a.reps;
  std::cerr << "[bench] mobilequant forward, " << torch::get_num_threads() << " threads\n";
  auto ours = bench_forward(loaded.model, bo);

  nlohmann::json hf;
  if (!a.no_transformers) {
    const auto dir = fs::temp_directory_path() / ("mq_bench_" + std::to_string(::getpid()));
    write_hf_directory(dir.string(), ckpt.config, ckpt.tensors);
    ckpt.tensors.clear();
    std::ostringstream cmd;
    cmd << "'" << find_python(a.python) << "' '" << source_dir().string()
        << "/eval/reference/hf_bench.py' --model '" << dir.string() << "' --seqlens "
        << join(a.seqlens) << " --batch " << a.batch << " --warmup " << a.warmup << " --reps "
        << a.reps << " --threads " << torch::get_num_threads() << " --dtype " << a.model.dtype
        << " --device " << opts.device.str();
    std::cerr << "[bench] transformers forward: " << cmd.str() << "\n";
    const std::string out = run_capture(cmd.str());
    remove_tree(dir.string());
    hf = nlohmann::json::parse(out.substr(out.find('{')));
  }

  std::cout << "\n| seqlen | batch | mobilequant tok/s | transformers tok/s | ratio |\n"
            << "|---:|---:|---:|---:|---:|\n";
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < ours.size(); ++i) {
    std::cout << "| " << ours[i].seqlen << " | " << a.batch << " | " << std::fixed
              << std::setprecision(1) << ours[i].tokens_per_second << " | ";
    nlohmann::json row{{"seqlen", ours[i].seqlen},
                       {"mobilequant_tokens_per_second", ours[i].tokens_per_second},
                       {"mobilequant_median_seconds", ours[i].median_seconds}};
    if (!hf.is_null()) {
      const double theirs = hf["results"][i]["tokens_per_second"].get<double>();
      std::cout << theirs << " | " << std::setprecision(2) << ours[i].tokens_per_second / theirs
                << " |\n";
      row["transformers_tokens_per_second"] = theirs;
      row["ratio"] = ours[i].tokens_per_second / theirs;
    } else {
      std::cout << "- | - |\n";
    }
    rows.push_back(row);
  }
  std::cout << "\nmodel " << a.model.model << ", device " << opts.device.str() << ", dtype "
            << a.model.dtype << ", threads " << torch::get_num_threads() << ", median of "
            << a.reps << " after " << a.warmup << " warm-ups; LibTorch " << TORCH_VERSION;
  if (!hf.is_null())
    std::cout << "; transformers " << hf["transformers"].get<std::string>() << " on torch "
              << hf["torch"].get<std::string>();
  std::cout << "\n";
  if (!a.output.empty()) {
    nlohmann::json j{{"model", a.model.model},      {"device", opts.device.str()},
                     {"dtype", a.model.dtype},      {"threads", torch::get_num_threads()},
                     {"batch", a.batch},            {"reps", a.reps},
                     {"libtorch", TORCH_VERSION},   {"results", rows}};
    if (!hf.is_null()) j["transformers"] = hf["transformers"];
    write_json_atomically(j, a.output);
  }
}

/// `bench quant`: the float forward and the simulated-quantized forward of each preset, in
/// one run on one device, as medians and ratios (simulated time / float time).
void run_bench_quant(const BenchArgs& a) {
  if (a.threads > 0) torch::set_num_threads(static_cast<int>(a.threads));
  const auto opts = to_load_options(a.model);
  std::cerr << "[bench] loading " << a.model.model << "\n";
  auto loaded = load_model(a.model.model, opts);
  CausalLm model = loaded.model;
  ForwardBenchOptions bo;
  bo.seqlens = a.seqlens;
  bo.batch = a.batch;
  bo.warmup = a.warmup;
  bo.reps = a.reps;
  std::cerr << "[bench] float forward\n";
  const auto fp = bench_forward(model, bo);
  struct Row {
    std::string label;
    std::vector<ForwardBenchResult> r;
  };
  std::vector<Row> rows;
  const std::string presets = presets_dir();
  {
    // The explicit path alone (hooks installed, nothing quantized): what the attention costs
    // without SDPA, apart from fake quantization.
    QuantizedModel probe(model, QuantizedModelOptions(load_quant_config("fp", presets)));
    probe->set_observer([](int64_t, ActSite, const torch::Tensor&) {});
    std::cerr << "[bench] explicit path, quantization off\n";
    rows.push_back({"explicit path, quantization off", bench_forward(model, bo)});
  }
  model->set_hooks(nullptr);
  for (const auto& name : a.quant) {
    const QuantConfig q = load_quant_config(name, presets);
    // Ranges from one random batch: the speed does not depend on their values.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
    const int64_t t = *std::max_element(a.seqlens.begin(), a.seqlens.end());
    auto ids = torch::randint(model->config().vocab_size, {1, t}, gen, torch::kInt64);  // [1, T]
    ActStats stats = collect_act_stats(model, ids, 1);
    QuantizedModel qm(model, QuantizedModelOptions(q));
    qm->set_act_ranges(stats);
    std::cerr << "[bench] " << q.name << " simulated forward, weights re-quantized per call\n";
    rows.push_back({q.name + " (weights re-quantized per forward)", bench_forward(model, bo)});
    qm->set_weight_cache(true);
    std::cerr << "[bench] " << q.name << " simulated forward, cached weights\n";
    rows.push_back({q.name + " (cached fake-quantized weights)", bench_forward(model, bo)});
    qm->set_weight_cache(false);
  }
  model->set_hooks(nullptr);
  std::cout << "\n| forward | seqlen | batch | median ms | tok/s | time / float |\n"
            << "|---|---:|---:|---:|---:|---:|\n";
  nlohmann::json out = nlohmann::json::array();
  auto print = [&](const std::string& label, const std::vector<ForwardBenchResult>& r) {
    for (size_t i = 0; i < r.size(); ++i) {
      const double ratio = r[i].median_seconds / fp[i].median_seconds;
      std::cout << "| " << label << " | " << r[i].seqlen << " | " << a.batch << " | " << std::fixed
                << std::setprecision(2) << r[i].median_seconds * 1e3 << " | "
                << std::setprecision(0) << r[i].tokens_per_second << " | " << std::setprecision(2)
                << ratio << " |\n";
      out.push_back({{"forward", label},
                     {"seqlen", r[i].seqlen},
                     {"median_seconds", r[i].median_seconds},
                     {"tokens_per_second", r[i].tokens_per_second},
                     {"time_over_float", ratio}});
    }
  };
  print("float", fp);
  for (const auto& row : rows) print(row.label, row.r);
  std::cout << "\nmodel " << a.model.model << ", device " << opts.device.str() << ", dtype "
            << a.model.dtype << ", threads " << torch::get_num_threads() << ", median of "
            << a.reps << " after " << a.warmup << " warm-ups; LibTorch " << TORCH_VERSION << "\n";
  if (!a.output.empty()) {
    write_json_atomically({{"model", a.model.model},
                           {"device", opts.device.str()},
                           {"dtype", a.model.dtype},
                           {"threads", torch::get_num_threads()},
                           {"batch", a.batch},
                           {"reps", a.reps},
                           {"libtorch", TORCH_VERSION},
                           {"command_line", command_line()},
                           {"machine", machine_info(opts.device)},
                           {"results", out}},
                          a.output);
  }
}

/// `bench train` options: the model by path or by shape, the trainer's inputs and the rows.
struct TrainArgs {
  std::string model;  ///< -m: a checkpoint ("": a random model of --shape and the shape flags)
  std::string shape;  ///< preset: smollm2-135m, tinyllama-1.1b
  int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, intermediate = 0, vocab = 0;
  uint64_t seed = 0;
  std::string quant = "w8a8";
  std::vector<std::string> let{"all"};
  int64_t seqlen = 2048, batch = 1, steps = 5, warmup = 2, threads = 0, profile_top = 15;
  std::vector<std::string> precisions{"fp32", "tf32", "bf16"};
  std::string device = "cpu";
  bool profile = false;
  bool recompute = false;
  bool cuda_graph = false;
  bool references = false;
  std::string output;
};

/// The shape presets of `--shape` (the models' Hugging Face config.json values).
ModelConfig shape_preset(const std::string& name) {
  ModelConfig c;
  c.arch = Arch::kLlama;
  if (name == "smollm2-135m") {
    c.hidden_size = 576, c.num_hidden_layers = 30, c.num_attention_heads = 9;
    c.num_key_value_heads = 3, c.intermediate_size = 1536, c.vocab_size = 49152;
    c.max_position_embeddings = 8192, c.rope_theta = 100000.0, c.tie_word_embeddings = true;
    c.bos_token_id = 1, c.eos_token_id = 2;
  } else if (name == "tinyllama-1.1b") {
    c.hidden_size = 2048, c.num_hidden_layers = 22, c.num_attention_heads = 32;
    c.num_key_value_heads = 4, c.intermediate_size = 5632, c.vocab_size = 32000;
    c.max_position_embeddings = 2048, c.rope_theta = 10000.0, c.tie_word_embeddings = false;
  } else if (!name.empty()) {
    throw make_error("--shape: unknown preset '", name,
                     "', expected smollm2-135m or tinyllama-1.1b");
  }
  return c;
}

/// LetPairs from "all", "none" or a list of pair names (qkv, fc1, fc2, out, qkt).
LetPairs parse_let(const std::vector<std::string>& names) {
  LetPairs p{false, false, false, false, false};
  for (const auto& n : names) {
    if (n == "all") p = LetPairs{};
    else if (n == "none") p = LetPairs{false, false, false, false, false};
    else if (n == "qkv") p.qkv = true;
    else if (n == "fc1") p.fc1 = true;
    else if (n == "fc2") p.fc2 = true;
    else if (n == "out") p.out = true;
    else if (n == "qkt") p.qkt = true;
    else
      throw make_error("--let: unknown pair '", n,
                       "', expected all, none or a list of qkv, fc1, fc2, out, qkt");
  }
  return p;
}

std::string let_string(const LetPairs& p) {
  std::string s;
  for (auto [on, name] : {std::pair{p.qkv, "qkv"}, std::pair{p.fc1, "fc1"},
                          std::pair{p.fc2, "fc2"}, std::pair{p.out, "out"},
                          std::pair{p.qkt, "qkt"}})
    if (on) s += (s.empty() ? "" : ",") + std::string(name);
  return s.empty() ? "none" : s;
}

/// A model of the asked shape with random N(0, 0.02) weights (transformers' initializer_range)
/// and unit norms, fp32 on `device`.
CausalLm random_model(const TrainArgs& a, const torch::Device& device, std::string& label) {
  ModelConfig c = shape_preset(a.shape);
  if (a.hidden) c.hidden_size = a.hidden;
  if (a.layers) c.num_hidden_layers = a.layers;
  if (a.heads) c.num_attention_heads = a.heads;
  if (a.kv_heads) c.num_key_value_heads = a.kv_heads;
  if (a.intermediate) c.intermediate_size = a.intermediate;
  if (a.vocab) c.vocab_size = a.vocab;
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  MQ_CHECK(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 &&
               c.intermediate_size > 0 && c.vocab_size > 0,
           "bench train: no model: give -m PATH, or --shape, or all of --hidden, --layers, "
           "--heads, --intermediate and --vocab (got hidden ", c.hidden_size, ", layers ",
           c.num_hidden_layers, ", heads ", c.num_attention_heads, ", intermediate ",
           c.intermediate_size, ", vocab ", c.vocab_size, ")");
  MQ_CHECK(c.hidden_size % c.num_attention_heads == 0, "bench train: --hidden ", c.hidden_size,
           " is not a multiple of --heads ", c.num_attention_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.max_position_embeddings = std::max(c.max_position_embeddings, a.seqlen);
  c.validate("bench train shape");
  torch::manual_seed(a.seed);
  CausalLm model(c);
  model->to(device, torch::kFloat32);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.dim() >= 2) p.normal_(0.0, 0.02);  // linear and embedding weights
      else p.fill_(1.0);                      // norm weights (no biases in these shapes)
    }
  }
  std::ostringstream os;
  os << (a.shape.empty() ? "random" : a.shape) << " shape (hidden " << c.hidden_size
     << ", layers " << c.num_hidden_layers << ", heads " << c.num_attention_heads << "/"
     << c.num_key_value_heads << ", intermediate " << c.intermediate_size << ", vocab "
     << c.vocab_size << "), random weights, seed " << a.seed;
  label = os.str();
  return model;
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

/// `bench train`: the end-to-end training step, one row per precision.
void run_bench_train(const TrainArgs& a) {
  if (a.threads > 0) torch::set_num_threads(static_cast<int>(a.threads));
  const torch::Device device = parse_device(a.device);
  std::vector<BenchPrecision> precisions;
  for (const auto& p : a.precisions) precisions.push_back(parse_bench_precision(p, "--precision"));
  const LetPairs let = parse_let(a.let);
  const QuantConfig quant = load_quant_config(a.quant, presets_dir());

  std::string label;
  CausalLm model{nullptr};
  if (!a.model.empty()) {
    MQ_CHECK(a.shape.empty() && !a.hidden && !a.layers && !a.heads && !a.kv_heads &&
                 !a.intermediate && !a.vocab,
             "bench train: -m ", a.model, " and --shape/--hidden/... both given; give one");
    std::cerr << "[bench] loading " << a.model << "\n";
    LoadOptions lo;
    lo.device = device;
    lo.dtype = torch::kFloat32;
    model = load_model(a.model, lo).model;
    label = a.model;
  } else {
    model = random_model(a, device, label);
  }
  const ModelConfig& cfg = model->config();
  const std::string dev_name = accelerator_name(device);

  TrainBenchOptions bo;
  bo.seqlen = a.seqlen;
  bo.batch = a.batch;
  bo.steps = a.steps;
  bo.warmup = a.warmup;
  bo.seed = a.seed;
  bo.profile = a.profile;
  bo.profile_top = a.profile_top;
  bo.recompute = a.recompute;
  bo.cuda_graph = a.cuda_graph;
  MQ_CHECK(!(a.recompute && a.profile), "bench train: --profile times the phases of a step "
           "without recompute; run --recompute and --profile apart");
  std::vector<TrainBenchResult> rows;
  std::vector<TrainReferenceResult> refs;  // with --references, one per row
  for (BenchPrecision p : precisions) {
    bo.precision = p;
    std::cerr << "[bench] end-to-end training step, " << to_string(p) << ", seqlen " << a.seqlen
              << ", batch " << a.batch << ": " << a.warmup << " warm-up + " << a.steps
              << " timed steps\n";
    rows.push_back(bench_train(model, quant, let, bo));
    if (a.references) {
      std::cerr << "[bench] references, " << to_string(p) << ": the float model's forward + "
                << "backward without quantizers, then the matmuls alone\n";
      refs.push_back(bench_train_references(model, bo));
    }
  }

  auto gib = [](double v) { return v < 0 ? std::string("n/a") : fixed(v, 2); };
  std::cout << "\n| precision | tokens/s | ms/step (median) | peak GPU GiB (alloc / reserved) "
               "| peak host RSS GiB | matmul TFLOP/s | % of peak |\n"
            << "|---|---:|---:|---:|---:|---:|---:|\n";
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rows) {
    std::cout << "| " << to_string(r.precision) << " | " << fixed(r.tokens_per_second, 0) << " | "
              << fixed(r.median_step_seconds * 1e3, 1) << " | "
              << (r.peak_gpu_allocated_gib < 0
                      ? std::string("n/a")
                      : gib(r.peak_gpu_allocated_gib) + " / " + gib(r.peak_gpu_reserved_gib))
              << " | " << fixed(r.peak_host_rss_gib, 2) << (r.host_peak_reset ? "" : " (since start)")
              << " | " << fixed(r.achieved_tflops, r.achieved_tflops < 1 ? 4 : 1) << " | "
              << (r.fraction_of_peak < 0 ? std::string("n/a")
                                         : fixed(100.0 * r.fraction_of_peak, 1) + "% of " +
                                               fixed(r.peak_tflops, 1))
              << " |\n";
    nlohmann::json row{{"precision", to_string(r.precision)},
                       {"tokens_per_second", r.tokens_per_second},
                       {"median_step_seconds", r.median_step_seconds},
                       {"step_seconds", r.step_seconds},
                       {"flops_per_step", r.flops_per_step},
                       {"achieved_tflops", r.achieved_tflops},
                       {"peak_tflops", r.peak_tflops > 0 ? nlohmann::json(r.peak_tflops)
                                                         : nlohmann::json(nullptr)},
                       {"fraction_of_peak", r.fraction_of_peak >= 0
                                                ? nlohmann::json(r.fraction_of_peak)
                                                : nlohmann::json(nullptr)},
                       {"peak_gpu_allocated_gib", r.peak_gpu_allocated_gib >= 0
                                                      ? nlohmann::json(r.peak_gpu_allocated_gib)
                                                      : nlohmann::json(nullptr)},
                       {"peak_gpu_reserved_gib", r.peak_gpu_reserved_gib >= 0
                                                     ? nlohmann::json(r.peak_gpu_reserved_gib)
                                                     : nlohmann::json(nullptr)},
                       {"peak_host_rss_gib", r.peak_host_rss_gib},
                       {"host_peak_reset", r.host_peak_reset},
                       {"final_loss", r.final_loss}};
    if (r.profiled) {
      const auto& b = r.breakdown;
      auto ops = [](const std::vector<OpTime>& v) {
        nlohmann::json j = nlohmann::json::array();
        for (const auto& o : v) j.push_back({{"name", o.name}, {"ms", o.self_ms}, {"calls", o.calls}});
        return j;
      };
      row["profile"] = {{"forward_ms", b.forward_ms},
                        {"backward_ms", b.backward_ms},
                        {"optimizer_ms", b.optimizer_ms},
                        {"cpu_self_total_ms", b.cpu_total_ms},
                        {"device_kernel_total_ms", b.device_total_ms},
                        {"top_cpu_ops", ops(b.top_cpu_ops)},
                        {"top_device_kernels", ops(b.top_device_ops)},
                        {"note", b.note}};
    }
    out.push_back(row);
  }
  for (size_t i = 0; i < refs.size(); ++i) {
    const auto& f = refs[i];
    auto frac = [&](double seconds) {
      return f.peak_tflops > 0 ? nlohmann::json(f.flops_per_step / seconds / 1e12 / f.peak_tflops)
                               : nlohmann::json(nullptr);
    };
    out[i]["references"] = {
        {"float_step",
         {{"what", "the float model's forward to the last layer + MSE and backward, no hooks "
                   "(SDPA causal attention), every block weight's gradient, no optimizer step"},
          {"cuda_graph", f.float_step_graph},
          {"note", f.note},
          {"median_step_seconds", f.float_median_seconds},
          {"step_seconds", f.float_step_seconds},
          {"achieved_tflops", f.flops_per_step / f.float_median_seconds / 1e12},
          {"fraction_of_peak", frac(f.float_median_seconds)},
          {"peak_gpu_allocated_gib", f.float_peak_gpu_allocated_gib >= 0
                                         ? nlohmann::json(f.float_peak_gpu_allocated_gib)
                                         : nlohmann::json(nullptr)}}},
        {"matmuls_alone",
         {{"what", "per block: the 7 linears' forward, input and weight gradients as mm, and SDPA "
                   "causal attention forward + backward, on random tensors"},
          {"median_seconds", f.matmul_median_seconds},
          {"seconds", f.matmul_seconds},
          {"achieved_tflops", f.flops_per_step / f.matmul_median_seconds / 1e12},
          {"fraction_of_peak", frac(f.matmul_median_seconds)}}}};
  }
  const double gflop = rows.empty() ? 0.0 : rows.front().flops_per_step / 1e9;
  std::cout << "\nmodel " << label << "; quant " << quant.name << ", LET " << let_string(let)
            << "; seqlen " << a.seqlen << ", batch " << a.batch
            << (a.recompute ? ", blocks recomputed in the backward pass" : "")
            << (a.cuda_graph ? ", micro-batch replayed as a CUDA graph" : "") << "; median of "
            << a.steps
            << " steps after " << a.warmup << " warm-up; device " << device.str() << " ("
            << dev_name << "), threads " << torch::get_num_threads() << "; "
            << fixed(gflop, 1) << " GFLOP/step (matmuls: 3 x forward to the last layer, causal "
            << "attention counted half); LibTorch " << TORCH_VERSION << "\n";

  if (!refs.empty()) {
    std::cout << "\n### References: the same matmul FLOPs without the quantizers\n\n"
              << "| precision | what | ms (median) | matmul TFLOP/s | % of peak | quantized step "
                 "/ this |\n|---|---|---:|---:|---:|---:|\n";
    for (size_t i = 0; i < refs.size(); ++i) {
      const auto& f = refs[i];
      const double q = rows[i].median_step_seconds;
      const std::string float_step = std::string("float forward + backward, no quantizers ") +
                                     "(SDPA attention)" + (f.float_step_graph ? ", CUDA graph" : "");
      for (const auto& [what, sec] :
           {std::pair<std::string, double>{"quantized end-to-end step (above)", q},
            {float_step, f.float_median_seconds},
            {"matmuls alone (mm, SDPA attention)", f.matmul_median_seconds}}) {
        const double tf = f.flops_per_step / sec / 1e12;
        std::cout << "| " << to_string(f.precision) << " | " << what << " | "
                  << fixed(sec * 1e3, 1) << " | " << fixed(tf, tf < 1 ? 4 : 1) << " | "
                  << (f.peak_tflops > 0 ? fixed(100.0 * tf / f.peak_tflops, 1) + "%"
                                        : std::string("n/a"))
                  << " | " << fixed(q / sec, 2) << " |\n";
      }
      if (!f.note.empty()) std::cout << "\n" << f.note << "\n";
    }
  }

  for (const auto& r : rows) {
    if (!r.profiled) continue;
    const auto& b = r.breakdown;
    const double phases = b.forward_ms + b.backward_ms + b.optimizer_ms;
    std::cout << "\n### Where the time goes: " << to_string(r.precision)
              << "\n\n| phase | ms (median, device synchronised per phase) | share |\n"
              << "|---|---:|---:|\n";
    for (auto [name, ms] : {std::pair{"forward (to last layer) + MSE", b.forward_ms},
                            std::pair{"backward", b.backward_ms},
                            std::pair{"grad norm + AdamW step + zero_grad", b.optimizer_ms}})
      std::cout << "| " << name << " | " << fixed(ms, 2) << " | "
                << fixed(phases > 0 ? 100.0 * ms / phases : 0.0, 1) << "% |\n";
    std::cout << "| sum of phases | " << fixed(phases, 2) << " | |\n"
              << "| trainer's step (median above) | " << fixed(r.median_step_seconds * 1e3, 2)
              << " | |\n";
    if (!b.note.empty()) {
      std::cout << "\n" << b.note << "\n";
      continue;
    }
    auto table = [](const char* title, const std::vector<OpTime>& v, double total) {
      if (v.empty()) return;
      std::cout << "\n| " << title << " | ms | % | calls |\n|---|---:|---:|---:|\n";
      for (const auto& o : v) {
        std::string name = o.name;
        if (name.size() > 90) name = name.substr(0, 87) + "...";
        for (auto& ch : name)
          if (ch == '|') ch = '/';
        std::cout << "| `" << name << "` | " << fixed(o.self_ms, 2) << " | "
                  << fixed(total > 0 ? 100.0 * o.self_ms / total : 0.0, 1) << " | " << o.calls
                  << " |\n";
      }
      std::cout << "| total | " << fixed(total, 2) << " | | |\n";
    };
    table("CPU op (self time, one profiled step)", b.top_cpu_ops, b.cpu_total_ms);
    table("device kernel (one profiled step)", b.top_device_ops, b.device_total_ms);
  }

  if (!a.output.empty()) {
    nlohmann::json shape{{"hidden_size", cfg.hidden_size},
                         {"num_hidden_layers", cfg.num_hidden_layers},
                         {"num_attention_heads", cfg.num_attention_heads},
                         {"num_key_value_heads", cfg.num_key_value_heads},
                         {"head_dim", cfg.head_dim},
                         {"intermediate_size", cfg.intermediate_size},
                         {"vocab_size", cfg.vocab_size}};
    write_json_atomically({{"model", label},
                           {"shape", shape},
                           {"quant", quant.name},
                           {"let", let_string(let)},
                           {"seqlen", a.seqlen},
                           {"recompute", a.recompute},
                           {"cuda_graph", a.cuda_graph},
                           {"batch", a.batch},
                           {"steps", a.steps},
                           {"warmup", a.warmup},
                           {"seed", a.seed},
                           {"device", device.str()},
                           {"device_name", dev_name},
                           {"threads", torch::get_num_threads()},
                           {"flops_formula",
                            "3 * (2 * linear_params_of_layers * tokens + layers * batch * 4 * "
                            "T^2 * heads * head_dim / 2); no lm_head"},
                           {"libtorch", TORCH_VERSION},
                           {"command_line", command_line()},
                           {"git_revision", git_revision()},
                           {"utc", utc_now()},
                           {"machine", machine_info(device)},
                           {"results", out}},
                          a.output);
  }
}

/// The model and timing options every bench subcommand takes.
void add_timing_args(CLI::App& cmd, BenchArgs& a) {
  add_model_args(cmd, a.model);
  cmd.add_option("--seqlens", a.seqlens, "Sequence lengths")->delimiter(',')->capture_default_str();
  cmd.add_option("--batch", a.batch, "Sequences per forward")->capture_default_str();
  cmd.add_option("--warmup", a.warmup, "Untimed runs per length")->capture_default_str();
  cmd.add_option("--reps", a.reps, "Timed runs per length (median)")->capture_default_str();
  cmd.add_option("--threads", a.threads, "CPU threads (0: LibTorch default)")
      ->capture_default_str();
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Speed measurements (medians; printed, never tested)");
  bench->require_subcommand(1);
  auto args = std::make_shared<BenchArgs>();
  auto* fwd = bench->add_subcommand(
      "forward", "Forward-pass tokens/s at several sequence lengths, against transformers");
  add_timing_args(*fwd, *args);
  fwd->add_flag("--no-transformers", args->no_transformers, "Skip the transformers comparison");
  fwd->add_option("--python", args->python,
                  "Python with transformers (default: $MQ_PYTHON, .venv/bin/python, python3)");
  fwd->add_option("-o,--output", args->output, "Also write the figures as JSON");
  fwd->callback([args] { run_bench_forward(*args); });

  auto qargs = std::make_shared<BenchArgs>();
  auto* quant = bench->add_subcommand(
      "quant", "Simulated-quantization forward time against the float forward, in one run");
  add_timing_args(*quant, *qargs);
  quant->add_option("--quant,-q", qargs->quant, "Presets to simulate (configs/quant/)")
      ->delimiter(',')
      ->capture_default_str();
  quant->add_option("-o,--output", qargs->output, "Also write the figures as JSON");
  quant->callback([qargs] { run_bench_quant(*qargs); });

  auto targs = std::make_shared<TrainArgs>();
  auto* train = bench->add_subcommand(
      "train", "End-to-end training step: tokens/s, ms/step, peak memory, matrix throughput");
  train->add_option("-m,--model", targs->model,
                    "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin "
                    "(else a random model by --shape and the shape flags)");
  train->add_option("--shape", targs->shape, "Shape preset: smollm2-135m, tinyllama-1.1b");
  train->add_option("--hidden", targs->hidden, "Hidden size (overrides the preset)");
  train->add_option("--layers", targs->layers, "Decoder layers (overrides the preset)");
  train->add_option("--heads", targs->heads, "Query heads (overrides the preset)");
  train->add_option("--kv-heads", targs->kv_heads, "Key/value heads (default: --heads)");
  train->add_option("--intermediate", targs->intermediate, "MLP width (overrides the preset)");
  train->add_option("--vocab", targs->vocab, "Vocabulary size (overrides the preset)");
  train->add_option("--seed", targs->seed, "Seed of the random weights, ids and ranges")
      ->capture_default_str();
  train->add_option("--quant,-q", targs->quant, "Quantization preset (configs/quant/) or file")
      ->capture_default_str();
  train->add_option("--let", targs->let, "LET pairs: all, none or qkv,fc1,fc2,out,qkt")
      ->delimiter(',')
      ->capture_default_str();
  train->add_option("--seqlen", targs->seqlen, "Tokens per window")->capture_default_str();
  train->add_option("--batch", targs->batch, "Windows per step")->capture_default_str();
  train->add_option("--steps", targs->steps, "Timed optimizer steps (median)")
      ->capture_default_str();
  train->add_option("--warmup", targs->warmup, "Untimed optimizer steps first (>= 1)")
      ->capture_default_str();
  train->add_option("--precision", targs->precisions, "Rows: fp32, tf32, bf16 (comma list)")
      ->delimiter(',')
      ->capture_default_str();
  train->add_option("--device", targs->device, "cpu, cuda or cuda:N")->capture_default_str();
  train->add_option("--threads", targs->threads, "CPU threads (0: LibTorch default)")
      ->capture_default_str();
  train->add_flag("--profile", targs->profile,
                  "Also time forward / backward / optimizer apart and list the top operators");
  train->add_option("--profile-top", targs->profile_top, "Operators listed by --profile")
      ->capture_default_str();
  train->add_flag("--recompute", targs->recompute,
                  "Recompute each block in the backward pass (activation checkpointing)");
  train->add_flag("--cuda-graph", targs->cuda_graph,
                  "Capture one micro-batch as a CUDA graph after the first step and replay it");
  train->add_flag("--references", targs->references,
                  "Also time, per precision, the float model's forward + backward without "
                  "quantizers and the step's matmuls alone (what % of peak is read against)");
  train->add_option("-o,--output", targs->output, "Also write the figures as JSON");
  train->callback([targs] { run_bench_train(*targs); });

  add_bench_int_subcommand(*bench);
}

}  // namespace mq::cli
