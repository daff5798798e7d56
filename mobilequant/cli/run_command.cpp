// mobilequant/cli/run_command.cpp
// `mobilequant run CONFIG.json [--set key=value ...]`: one experiment end to end in a run
// directory: calibrate (the method's closed-form start), train (end to end or block-wise, with
// checkpoints), fold, save the quantized model, evaluate, write results.json.
//
// The run directory (RunConfig::output):
//   config.json      the resolved config (what --resume compares against)
//   env.json         git revision, LibTorch version, device, machine, command line, start time
//   log.txt          every message of the run
//   metrics.jsonl    one line per optimizer step: layer, step, epoch, loss, grad norm, lrs, time
//   checkpoint/      the trainer's state (e2e_state.safetensors or the block-wise state)
//   calibrated_quantizers.safetensors  the quantizers after calibration, before training
//   model/           the quantized model (transforms/quantized_checkpoint.h): `eval -m`
//   results.json     written last: the run is complete when it exists
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "mobilequant/calib/calibration_data.h"
#include "mobilequant/cli/commands.h"
#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/train/blockwise_trainer.h"
#include "mobilequant/train/e2e_trainer.h"
#include "mobilequant/transforms/closed_form.h"
#include "mobilequant/transforms/quantized_checkpoint.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// "1:02:03" or "02:03".
std::string hms(double s) {
  const auto total = static_cast<int64_t>(s < 0 ? 0 : s + 0.5);
  std::ostringstream os;
  os << std::setfill('0');
  if (total >= 3600) os << total / 3600 << ":";
  os << std::setw(2) << (total / 60) % 60 << ":" << std::setw(2) << total % 60;
  return os.str();
}

/// Messages to stderr and to the run's log.txt.
/// Lines logged before the run directory exists are kept and written when it does.
class RunLog {
 public:
  void open(const fs::path& file) {
    out_.open(file, std::ios::app);
    MQ_CHECK(out_.good(), "run: cannot append to '", file.string(), "'");
    for (const auto& line : early_) out_ << line << "\n";
    out_ << std::flush;
    early_.clear();
  }
  void operator()(const std::string& line) {
    std::cerr << "[run] " << line << "\n";
    const std::string stamped = "[" + utc_now() + "] " + line;
    if (out_.is_open()) {
      out_ << stamped << "\n" << std::flush;
    } else {
      early_.push_back(stamped);
    }
  }

 private:
  std::ofstream out_;
  std::vector<std::string> early_;
};

/// metrics.jsonl: appended per step; on a resumed run the lines the checkpoint did not keep
/// (from the first step trained again on) are dropped first.
class MetricsFile {
 public:
  explicit MetricsFile(fs::path path) : path_(std::move(path)) {}
  void write(const TrainStep& t, double elapsed) {
    if (!opened_) open(t.layer, t.step);
    nlohmann::json j{{"layer", t.layer},   {"step", t.step},   {"epoch", t.epoch},
                     {"loss", t.loss},     {"grad_norm", t.grad_norm},
                     {"lr", {{"let", t.lr[0]}, {"lwc", t.lr[1]}, {"lrl", t.lr[2]}}},
                     {"tokens", t.tokens}, {"elapsed_s", elapsed}};
    out_ << j.dump() << "\n" << std::flush;
  }

 private:
  void open(int64_t layer, int64_t step) {
    std::vector<std::string> kept;
    if (fs::exists(path_)) {
      std::ifstream in(path_);
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) continue;  // a line cut by a kill
        const int64_t l = j.value("layer", int64_t{-1}), s = j.value("step", int64_t{0});
        if (l < layer || (l == layer && s < step)) kept.push_back(line);
      }
    }
    std::ofstream rewrite(path_, std::ios::trunc);
    for (const auto& line : kept) rewrite << line << "\n";
    rewrite.close();
    out_.open(path_, std::ios::app);
    MQ_CHECK(out_.good(), "run: cannot append to '", path_.string(), "'");
    opened_ = true;
  }
  fs::path path_;
  std::ofstream out_;
  bool opened_ = false;
};

/// The progress bar: step, epoch, loss, learning rate, throughput, time left. Redrawn in place
/// on a terminal (at most 4 times a second), a line every 30 s otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool quiet) : quiet_(quiet), tty_(isatty(fileno(stderr)) != 0) {}
  void update(const TrainStep& t, int64_t layers) {
    if (quiet_) return;
    const auto now = Clock::now();
    if (t.layer != layer_ || first_) {
      layer_ = t.layer;
      start_ = now;
      start_step_ = t.step;
      tokens_ = 0;
      first_ = false;
    }
    tokens_ += t.tokens;
    const bool last = t.step + 1 == t.total_steps;
    const double since = std::chrono::duration<double>(now - last_draw_).count();
    if (!last && since < (tty_ ? 0.25 : 30.0)) return;
    last_draw_ = now;
    const double s = std::chrono::duration<double>(now - start_).count();
    const int64_t done = t.step + 1 - start_step_;
    const double per_step = done > 0 ? s / static_cast<double>(done) : 0.0;
    const double left = per_step * static_cast<double>(t.total_steps - t.step - 1);
    const double frac = static_cast<double>(t.step + 1) / static_cast<double>(t.total_steps);
    std::ostringstream os;
    if (t.layer >= 0) os << "layer " << t.layer + 1 << "/" << layers << " ";
    const int width = 20;
    const int filled = static_cast<int>(frac * width);
    os << "[" << std::string(filled, '#') << std::string(width - filled, '.') << "] step "
       << t.step + 1 << "/" << t.total_steps << " epoch " << t.epoch + 1 << " loss "
       << std::scientific << std::setprecision(3) << t.loss << " lr "
       << std::setprecision(1) << std::max({t.lr[0], t.lr[1], t.lr[2]}) << std::fixed
       << std::setprecision(0) << " " << (s > 0 ? static_cast<double>(tokens_) / s : 0.0)
       << " tok/s " << hms(s) << " elapsed, " << hms(left) << " left";
    if (tty_) {
      std::cerr << "\r" << os.str() << "\x1b[K" << (last ? "\n" : "") << std::flush;
    } else {
      std::cerr << "[train] " << os.str() << "\n";
    }
  }

 private:
  bool quiet_, tty_;
  bool first_ = true;
  int64_t layer_ = -2, start_step_ = 0, tokens_ = 0;
  Clock::time_point start_ = Clock::now(), last_draw_{};
};

/// True if any enabled activation site quantizes below 16 bits.
bool has_low_bit_activations(const QuantConfig& q) {
  for (const auto& spec : q.activations)
    if (spec.enabled && spec.bits < 16) return true;
  return false;
}

/// True if any site is quantized.
bool quantizes_anything(const QuantConfig& q) {
  for (const auto& spec : q.weights)
    if (spec.enabled) return true;
  for (const auto& spec : q.activations)
    if (spec.enabled) return true;
  return false;
}

/// The eval section as the evaluator's config. layer-error's float reference is the run's
/// model, reloaded from its checkpoint (the run's own copy is transformed and folded by then).
EvalConfig to_eval_config(const RunConfig& c) {
  EvalConfig e;
  e.model = c.model;
  e.tokenizer = c.tokenizer;
  e.reference = c.model;
  e.device = c.device;
  e.tasks = c.eval.tasks;
  e.data = c.eval.data;
  e.max_length = c.eval.max_length;
  e.seqlen = c.eval.seqlen;
  e.separator = c.eval.separator;
  e.batch_size = c.eval.batch_size;
  e.limit = c.eval.limit;
  return e;
}

/// The settings both trainers' options share, from the config.
template <class Options>
void set_common_options(const TrainConfig& t, Options& o) {
  o.let = t.let;
  o.let.enabled = t.let.enabled && t.let_pairs.any();
  o.lwc = t.lwc;
  o.lrl = t.lrl;
  o.epochs = t.epochs;
  o.batch_size = t.batch_size;
  o.grad_accum = t.grad_accum;
  o.warmup_steps = t.warmup_steps;
  o.bf16 = t.precision == TrainPrecision::kBf16;
}

/// Checks that need no model: files exist, the method suits the preset. Throws mq::Error.
void check_before_loading(const RunConfig& c, const QuantConfig& quant, const std::string& calib) {
  MQ_CHECK(!c.model.empty(), "run: model: not set (give \"model\" in the config or --set model=PATH)");
  MQ_CHECK(fs::exists(c.model), "run: model: '", c.model, "' does not exist");
  if (!c.tokenizer.empty())
    MQ_CHECK(fs::exists(c.tokenizer), "run: tokenizer: '", c.tokenizer, "' does not exist");
  MQ_CHECK(fs::is_regular_file(calib), "run: calib.data: '", calib, "' is not a file");
  const EvalConfig e = to_eval_config(c);
  for (const EvalTask t : e.tasks) {
    const std::string path = resolve_eval_data(e, t);
    MQ_CHECK(fs::is_regular_file(path), "run: eval.data for task ", to_string(t), ": '", path,
             "' is not a file");
  }
  const TrainConfig& t = c.train;
  if (t.trainer == TrainerKind::kNone) return;
  MQ_CHECK(quantizes_anything(quant), "run: method '", c.method, "' trains (trainer ",
           to_string(t.trainer), "), but preset '", quant.name,
           "' quantizes nothing; use method fp or rtn for the float model");
  MQ_CHECK(!t.lrl.enabled || has_low_bit_activations(quant), "run: method '", c.method,
           "' learns activation ranges (train.lrl.enabled), but preset '", quant.name,
           "' keeps every activation at 16 bits or in float; set train.lrl.enabled=false or use "
           "a preset with 8-bit activations");
  bool any_weight = false;
  for (const auto& spec : quant.weights) any_weight = any_weight || spec.enabled;
  MQ_CHECK(!t.lwc.enabled || any_weight, "run: method '", c.method,
           "' learns weight clipping (train.lwc.enabled), but preset '", quant.name,
           "' quantizes no weight; set train.lwc.enabled=false");
}

/// Prepares the run directory: refuses to reuse another run's, compares configs on resume.
void prepare_run_dir(const fs::path& dir, const nlohmann::json& config, const RunFlags& flags) {
  const fs::path cfg = dir / "config.json";
  if (fs::exists(dir) && flags.force) remove_tree(dir.string());
  if (fs::exists(cfg)) {
    MQ_CHECK(flags.resume, "run: directory '", dir.string(), "' already holds a run",
             fs::exists(dir / "results.json") ? " (complete)" : "",
             "; pass --resume to continue it or --force to start again");
    const nlohmann::json old = read_json_file(cfg.string());
    const auto diff = differing_keys(old, config);
    MQ_CHECK(diff.empty(), "run: --resume: '", dir.string(),
             "' holds a run of another config; keys that differ: ", format_key_list(diff));
  } else if (fs::exists(dir)) {
    MQ_CHECK(fs::is_directory(dir) && fs::is_empty(dir), "run: output '", dir.string(),
             "' exists and is not a run directory; choose another output");
  }
  fs::create_directories(dir);
  if (!fs::exists(cfg)) write_json_atomically(config, cfg.string());
}

/// Peak resident set size of this process in GiB.
double peak_rss_gib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

}  // namespace

void check_run_config(const RunConfig& c) {
  const QuantConfig quant = resolve_quant(c.quant, c.quant_overrides, "quant_overrides");
  check_before_loading(c, quant, c.calib.data.empty() ? default_calib_data() : c.calib.data);
}

nlohmann::json run_experiment(const RunConfig& c, const RunFlags& flags) {
  const auto t_start = Clock::now();
  const QuantConfig quant = resolve_quant(c.quant, c.quant_overrides, "quant_overrides");
  const std::string calib = c.calib.data.empty() ? default_calib_data() : c.calib.data;
  check_before_loading(c, quant, calib);

  RunLog log;
  const bool resuming = flags.resume && fs::exists(fs::path(c.output) / "checkpoint");
  log(std::string(resuming ? "resuming" : "starting") + " run " + c.output + ": " + c.method +
      " / " + quant.name + " on " + c.model);
  ModelArgs model_args;
  model_args.model = c.model;
  model_args.tokenizer = c.tokenizer;
  model_args.device = c.device;
  const LoadOptions load = to_load_options(model_args);

  // Every file is read before the model is loaded, so that a bad path fails early.
  const std::string text = read_text_file(calib, "run: calib.data");
  const EvalConfig eval = to_eval_config(c);
  std::vector<std::pair<std::string, std::string>> eval_inputs;
  for (const EvalTask task : eval.tasks) {
    const std::string path = resolve_eval_data(eval, task);
    eval_inputs.emplace_back(path, read_text_file(path, std::string("run: eval.data (") +
                                                            to_string(task) + ")"));
  }

  log("loading " + c.model + " (" + load.device.str() + ")");
  LoadedModel lm = load_quantizable_model(c.model, load, quant, "quant " + c.quant);
  const ModelConfig& mcfg = lm.model->config();
  const CalibrationOptions copts =
      calibration_options(c.calib.samples, c.calib.seqlen, c.calib.seed, c.calib.separator, mcfg);
  const auto ids = calibration_token_ids(*lm.tokenizer, text, copts);
  const int64_t n_ids = static_cast<int64_t>(ids.size());
  MQ_CHECK(n_ids - copts.seqlen >= copts.num_samples, "run: calib.data '", calib, "' gives ",
           n_ids, " tokens: only ", std::max<int64_t>(0, n_ids - copts.seqlen),
           " distinct windows of ", copts.seqlen, " tokens, fewer than the ", copts.num_samples,
           " calib.samples asked; use more text, fewer samples or shorter windows");
  if (n_ids < copts.num_samples * copts.seqlen)
    log("note: " + std::to_string(copts.num_samples) + " windows of " +
        std::to_string(copts.seqlen) + " tokens overlap (the text has " + std::to_string(n_ids) +
        " tokens)");
  const torch::Tensor windows = calibration_windows(ids, copts, calib);  // [N, T]

  // Every check passed: the run directory.
  const fs::path dir = c.output;
  const nlohmann::json config = config_to_json(c);
  prepare_run_dir(dir, config, flags);
  log.open(dir / "log.txt");
  write_json_atomically(nlohmann::json{{"git_revision", git_revision()},
                                       {"libtorch", TORCH_VERSION},
                                       {"device", load.device.str()},
                                       {"machine", machine_info(load.device)},
                                       {"command_line", command_line()},
                                       {"started_at", utc_now()},
                                       {"resumed", resuming}},
                        (dir / (resuming ? "env.resumed.json" : "env.json")).string());
  if (load.device.is_cuda()) at::globalContext().setAllowTF32CuBLAS(c.train.tf32);

  // The closed-form start (skipped for the float model).
  nlohmann::json train_json = nullptr;
  QuantizedModel qm{nullptr};
  const bool quantized = quantizes_anything(quant);
  if (quantized) {
    ClosedFormOptions cf;
    cf.method = c.init;
    cf.alpha = c.alpha;
    cf.batch_size = c.calib.batch_size;
    cf.stats_cache_dir = c.calib.stats_cache;
    cf.stats_cache_key = calibration_cache_key(c.model, calib, copts, load.device);
    cf.log = [&log](const std::string& line) { log(line); };
    if (c.train.trainer != TrainerKind::kNone && c.train.let.enabled) cf.let = c.train.let_pairs;
    log("calibrating " + std::to_string(copts.num_samples) + " windows of " +
        std::to_string(copts.seqlen) + " tokens (" + to_string(c.init) + ")");
    qm = quantize_closed_form(lm.model, quant, windows, cf);
    // The calibrated start, before any training: what `scripts/report.py plots` compares the
    // learned ranges with. Calibration is deterministic, so a resumed run keeps the first file.
    const fs::path calibrated = dir / "calibrated_quantizers.safetensors";
    if (!fs::exists(calibrated)) {
      write_safetensors(calibrated.string(), qm->quant_state(),
                        {{"source", std::string("mobilequant run: quantizers after calibration (") +
                                        to_string(c.init) + "), before training"}});
    }

    const TrainConfig& t = c.train;
    const fs::path ckpt_dir = dir / "checkpoint";
    MetricsFile metrics(dir / "metrics.jsonl");
    ProgressBar bar(flags.quiet);
    const auto t_train = Clock::now();
    const int64_t layers = mcfg.num_hidden_layers;
    auto on_step = [&](const TrainStep& s) {
      metrics.write(s, seconds_since(t_train));
      bar.update(s, layers);
    };
    if (t.trainer == TrainerKind::kEndToEnd) {
      EndToEndOptions o;
      set_common_options(t, o);
      o.checkpoint_dir = ckpt_dir.string();
      o.resume = flags.resume;
      o.on_step = on_step;
      o.log = [&log](const std::string& line) { log(line); };
      o.loss = t.loss;
      o.recompute = t.recompute;
      o.cuda_graph = t.cuda_graph;
      o.targets_on_device = t.targets_on_device;
      o.checkpoint_every = t.checkpoint_every;
      log("training end to end: " + std::to_string(t.epochs) + " epochs x " +
          std::to_string(copts.num_samples / (t.batch_size * t.grad_accum)) + " steps");
      const EndToEndResult r = train_end_to_end(*qm, windows, o);
      train_json = {{"trainer", "end-to-end"},
                    {"steps", r.steps},
                    {"resumed_from_step", r.resumed_from},
                    {"first_epoch_loss", r.first_epoch_loss},
                    {"last_epoch_loss", r.last_epoch_loss},
                    {"seconds", seconds_since(t_train)}};
    } else if (t.trainer == TrainerKind::kBlockwise) {
      BlockwiseOptions o;
      set_common_options(t, o);
      o.checkpoint_dir = ckpt_dir.string();
      o.resume = flags.resume;
      o.on_step = on_step;
      o.log = [&log](const std::string& line) { log(line); };
      o.inputs_on_device = t.targets_on_device;
      o.on_layer = [&log](int64_t layer, double first, double last) {
        std::ostringstream os;
        os << "layer " << layer << " done: loss " << std::scientific << std::setprecision(4)
           << first << " -> " << last;
        log(os.str());
      };
      log("training block-wise: " + std::to_string(layers) + " layers x " +
          std::to_string(t.epochs) + " epochs");
      const BlockwiseResult r = train_blockwise(*qm, windows, o);
      train_json = {{"trainer", "block-wise"},
                    {"steps", r.steps},
                    {"layers", r.layers},
                    {"resumed_layers", r.resumed_layers},
                    {"first_epoch_loss", r.first_epoch_loss},
                    {"last_epoch_loss", r.last_epoch_loss},
                    {"seconds", seconds_since(t_train)}};
    }

    const QuantizedManifest manifest = make_manifest(c.model, c.tokenizer, c.method, config);
    save_quantized_model((dir / "model").string(), *qm, manifest);  // folds
    log("wrote the quantized model to " + (dir / "model").string());
    qm->set_weight_cache(true);
  }

  nlohmann::json eval_json = nlohmann::json::array();
  std::string table;
  if (!eval.tasks.empty()) {
    log("evaluating " + std::string(quantized ? "the simulated-quantized model" : "the float model"));
    torch::NoGradGuard no_grad;
    const EvalOutcome outcome = evaluate_tasks(lm.model, *lm.tokenizer, eval, eval_inputs);
    eval_json = outcome.results;
    table = outcome.table;
  }

  nlohmann::json results{{"format", "mobilequant-run-results"},
                         {"run_dir", fs::absolute(dir).string()},
                         {"model", c.model},
                         {"quant", quant.name},
                         {"method", c.method},
                         {"description", c.description},
                         {"git_revision", git_revision()},
                         {"command_line", command_line()},
                         {"device", load.device.str()},
                         {"finished_at", utc_now()},
                         {"seconds", seconds_since(t_start)},
                         {"peak_host_rss_gib", peak_rss_gib()},
                         {"train", train_json},
                         {"eval", eval_json},
                         {"model_dir", quantized ? fs::absolute(dir / "model").string() : ""},
                         {"config", config}};
  write_json_atomically(results, (dir / "results.json").string());
  log("done in " + hms(seconds_since(t_start)) + "; results in " + (dir / "results.json").string());
  if (!flags.quiet) std::cout << table << std::flush;
  return results;
}

namespace {

/// The command line of `mobilequant run`.
struct RunArgs {
  std::string config;
  std::vector<std::string> sets;
  RunFlags flags;
  bool print_config = false;
  bool list_methods = false;
};

/// runs/MODEL-QUANT-METHOD when no output is given.
void default_output(RunConfig& c) {
  if (!c.output.empty()) return;
  fs::path m(c.model);
  std::string stem = m.has_stem() ? m.stem().string() : "model";
  if (stem.empty() || stem == ".") stem = m.parent_path().filename().string();
  c.output = (fs::path("runs") / (stem + "-" + fs::path(c.quant).stem().string() + "-" +
                                  fs::path(c.method).stem().string()))
                 .string();
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand(
      "run",
      "One experiment from a config: calibrate, train (end to end or block-wise), fold, save "
      "and evaluate, in a run directory with config, log, metrics.jsonl, checkpoints and "
      "results.json");
  cmd->add_option("config", a->config,
                  "Run config (JSON: model, quant, method, calib, train, eval, output); see "
                  "configs/runs/ and configs/README.md");
  cmd->add_option("--set", a->sets,
                  "Override any field: key=value, sections with dots (train.epochs=3, "
                  "calib.samples=32, train.lrl.lr=1e-7), lists as JSON "
                  "('eval.tasks=[\"wikitext\",\"layer-error\"]'); repeatable, applied last");
  cmd->add_flag("--resume", a->flags.resume,
                "Continue the run in its directory from its last checkpoint (same config only)");
  cmd->add_flag("--force", a->flags.force, "Delete an existing run directory and start again");
  cmd->add_flag("--quiet", a->flags.quiet, "No progress bar and no table on stdout");
  cmd->add_flag("--print-config", a->print_config,
                "Print the resolved config and the per-site quantization table, then exit");
  cmd->add_flag("--list-methods", a->list_methods, "List the method configs, then exit");
  cmd->callback([a]() {
    if (a->list_methods) {
      for (const auto& [name, description] : list_methods(methods_dir()))
        std::cout << std::left << std::setw(22) << name << " " << description << "\n";
      return;
    }
    MQ_CHECK(!a->config.empty() || !a->sets.empty(),
             "run: give a config file (e.g. configs/runs/quickstart-smollm2.json) or --set "
             "model=... ; see `mobilequant run --help`");
    MQ_CHECK(!(a->flags.resume && a->flags.force), "run: --resume and --force exclude each other");
    RunConfig c = resolve_run_config(a->config, a->sets, methods_dir());
    default_output(c);
    if (a->print_config) {
      std::cout << config_to_json(c).dump(2) << "\n"
                << format_quant_table(resolve_quant(c.quant, c.quant_overrides, "quant_overrides"));
      return;
    }
    run_experiment(c, a->flags);
  });
}

}  // namespace mq::cli
