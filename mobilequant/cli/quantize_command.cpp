// mobilequant/cli/quantize_command.cpp
// `mobilequant quantize`: the closed-form methods (RTN, SmoothQuant-Static, SmoothQuant-Edge;
// transforms/closed_form.h) on any model we load, with a quantization preset from
// configs/quant/ (or a JSON file), calibrated on windows of a text file drawn as the reference
// draws them. Writes a quantized model directory (transforms/quantized_checkpoint.h) that
// `mobilequant eval` evaluates with simulated quantization, on the CPU or CUDA.
//
// Every option is a field of mq::QuantizeConfig (config/quantize_config.h), resolved in this
// order: defaults, `--config FILE.json`, flags given, then every `--set key=value`.
// `--print-config` prints the resolved config and the per-site quantization table and exits.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "mobilequant/calib/calibration_data.h"
#include "mobilequant/cli/commands.h"
#include "mobilequant/config/config_json.h"
#include "mobilequant/config/quantize_config.h"
#include "mobilequant/core/error.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/transforms/closed_form.h"
#include "mobilequant/transforms/quantized_checkpoint.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

/// The command line of `mobilequant quantize`, before it meets the config file.
struct QuantizeArgs {
  QuantizeConfig flags;
  std::string config;             ///< --config FILE.json
  std::vector<std::string> sets;  ///< --set key=value, in order
  bool print_config = false;
};

/// Progress of a calibration pass on stderr.
CalibrationProgress calibration_printer() {
  const bool tty = isatty(fileno(stderr));
  const auto start = std::chrono::steady_clock::now();
  auto last = std::make_shared<double>(-1e9);
  return [tty, start, last](int64_t done, int64_t total) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bool finished = done == total;
    if (!finished && s - *last < (tty ? 0.5 : 30.0)) return;
    *last = s;
    const double eta = done > 0 ? s * static_cast<double>(total - done) / done : 0.0;
    std::ostringstream os;
    os << "[quantize] calibration windows " << done << "/" << total << ", " << std::fixed
       << std::setprecision(1) << s << " s elapsed, ETA " << eta << " s";
    if (tty) {
      std::cerr << "\r" << os.str() << "\x1b[K" << (finished ? "\n" : "") << std::flush;
    } else {
      std::cerr << os.str() << "\n";
    }
  };
}

QuantizeConfig resolve_quantize_config(const QuantizeArgs& a, const CLI::App& cmd) {
  QuantizeConfig c;
  if (!a.config.empty()) read_config_file(a.config, c);
  const auto given = [&cmd](const char* flag) { return cmd.count(flag) > 0; };
  const QuantizeConfig& f = a.flags;
  if (given("--model")) c.model = f.model;
  if (given("--tokenizer")) c.tokenizer = f.tokenizer;
  if (given("--quant")) c.quant = f.quant;
  if (given("--quant-set")) c.quant_overrides = f.quant_overrides;
  if (given("--method")) c.method = f.method;
  if (given("--alpha")) c.alpha = f.alpha;
  if (given("--calib")) c.calib_data = f.calib_data;
  if (given("--calib-separator")) c.calib_separator = f.calib_separator;
  if (given("--samples")) c.calib_samples = f.calib_samples;
  if (given("--seqlen")) c.calib_seqlen = f.calib_seqlen;
  if (given("--seed")) c.seed = f.seed;
  if (given("--batch-size")) c.batch_size = f.batch_size;
  if (given("--device")) c.device = f.device;
  if (given("--stats-cache")) c.stats_cache = f.stats_cache;
  if (given("--output")) c.output = f.output;
  for (const auto& s : a.sets) apply_override(c, s, "--set");
  if (c.calib_data.empty()) c.calib_data = default_calib_data();
  c.validate(a.config.empty() ? "quantize" : "quantize (--config " + a.config + ")");
  return c;
}

/// The preset of `c` with its per-site overrides applied.
QuantConfig quant_of(const QuantizeConfig& c) {
  return resolve_quant(c.quant, c.quant_overrides, "--quant-set");
}

void run_quantize(const QuantizeConfig& c) {
  const QuantConfig quant = quant_of(c);
  const std::string text = read_text_file(c.calib_data, "quantize --calib data file");

  ModelArgs model_args;
  model_args.model = c.model;
  model_args.tokenizer = c.tokenizer;
  model_args.device = c.device;
  const LoadOptions load = to_load_options(model_args);
  std::cerr << "[quantize] loading " << c.model << " (" << load.device.str() << ")\n";
  LoadedModel lm = load_quantizable_model(c.model, load, quant, "--quant " + c.quant);
  const CalibrationOptions copts = calibration_options(c.calib_samples, c.calib_seqlen, c.seed,
                                                       c.calib_separator, lm.model->config());
  const auto ids = calibration_token_ids(*lm.tokenizer, text, copts);
  const torch::Tensor windows = calibration_windows(ids, copts, c.calib_data);  // [N, T]
  std::cerr << "[quantize] " << quant.name << " / " << to_string(c.method) << ": "
            << copts.num_samples << " windows of " << copts.seqlen << " tokens from "
            << c.calib_data << " (" << ids.size() << " tokens, seed " << c.seed << ")\n";

  ClosedFormOptions opts;
  opts.method = c.method;
  opts.alpha = c.alpha;
  opts.batch_size = c.batch_size;
  opts.progress = calibration_printer();
  opts.stats_cache_dir = c.stats_cache;
  opts.stats_cache_key = calibration_cache_key(c.model, c.calib_data, copts, load.device);
  opts.log = [](const std::string& line) { std::cerr << "[quantize] " << line << "\n"; };
  const auto start = std::chrono::steady_clock::now();
  QuantizedModel qm = quantize_closed_form(lm.model, quant, windows, opts);

  const QuantizedManifest manifest =
      make_manifest(c.model, c.tokenizer, to_string(c.method), config_to_json(c));
  save_quantized_model(c.output, *qm, manifest);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << "[quantize] done in " << std::fixed << std::setprecision(1) << seconds << " s\n";
  std::cout << "wrote " << c.output << " (" << quant.name << ", " << to_string(c.method)
            << ")\nevaluate with: mobilequant eval --model " << c.output << "\n";
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand(
      "quantize",
      "Closed-form quantization (rtn, smoothquant-static, smoothquant-edge) with a preset of "
      "configs/quant/; writes a quantized model directory that `eval` evaluates");
  cmd->add_option("--config", a->config, "Read the settings from this JSON file; flags override");
  cmd->add_option("--model,-m", a->flags.model,
                  "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin");
  cmd->add_option("--tokenizer", a->flags.tokenizer, "Tokenizer overriding the model's");
  cmd->add_option("--device", a->flags.device, "cpu, cuda or cuda:N")->default_val("cpu");
  cmd->add_option("--quant,-q", a->flags.quant,
                  "Preset (w8a8, w4a8, w4a8-sym, w8a16, w4a16, full-w8a8, fp) or a JSON file")
      ->default_val("w8a8");
  cmd->add_option("--quant-set", a->flags.quant_overrides,
                  "Change one site of the preset: weights|activations.SITE|all.FIELD=VALUE, e.g. "
                  "activations.self_attn.qk_bmm.output.bits=8 (repeatable)");
  cmd->add_option("--method", a->flags.method,
                  "rtn, smoothquant-static or smoothquant-edge")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, QuantMethod>{{"rtn", QuantMethod::kRtn},
                                             {"smoothquant-static", QuantMethod::kSmoothQuantStatic},
                                             {"smoothquant-edge", QuantMethod::kSmoothQuantEdge}},
          CLI::ignore_case))
      ->default_str("rtn");
  cmd->add_option("--alpha", a->flags.alpha, "SmoothQuant migration strength (0.5; 0.6 for StableLM)")
      ->default_val(0.5);
  cmd->add_option("--calib", a->flags.calib_data,
                  "Calibration text (default: ../shared/data/wikitext2/wiki.valid.tokens.txt)");
  cmd->add_option("--calib-separator", a->flags.calib_separator,
                  "Line that ends a document in the calibration text (e.g. '<|endoftext|>')");
  cmd->add_option("--samples,-n", a->flags.calib_samples, "Calibration windows")->default_val(128);
  cmd->add_option("--seqlen", a->flags.calib_seqlen,
                  "Calibration window length (default: 2048 capped at the model's context)");
  cmd->add_option("--seed", a->flags.seed, "Seed of the window offsets")->default_val(1337);
  cmd->add_option("--batch-size", a->flags.batch_size, "Windows per forward pass")->default_val(1);
  cmd->add_option("--stats-cache", a->flags.stats_cache,
                  "Keep calibration statistics in this directory and reuse them");
  cmd->add_option("--output,-o", a->flags.output, "Quantized model directory to write");
  cmd->add_option("--set", a->sets, "Override any field: key=value (repeatable)");
  cmd->add_flag("--print-config", a->print_config,
                "Print the resolved settings and the per-site quantization table, then exit");
  cmd->callback([a, cmd]() {
    const QuantizeConfig c = resolve_quantize_config(*a, *cmd);
    if (a->print_config) {
      std::cout << config_to_json(c).dump(2) << "\n"
                << format_quant_table(quant_of(c));
      return;
    }
    MQ_CHECK(!c.model.empty(), "quantize: --model is required");
    MQ_CHECK(!c.output.empty(), "quantize: --output is required");
    run_quantize(c);
  });
}

}  // namespace mq::cli
