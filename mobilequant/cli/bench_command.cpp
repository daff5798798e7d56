// mobilequant/cli/bench_command.cpp
// `mobilequant bench forward`: tokens per second of our forward pass at several
// sequence lengths and, in the same run, of transformers' forward on the same weights
// (written to a temporary Hugging Face directory), threads, dtype and device; prints
// a Markdown table with the ratio (ours / transformers; above 1 means faster).
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
}

}  // namespace mq::cli
