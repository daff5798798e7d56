// mobilequant/cli/eval_command.cpp
// `mobilequant eval`: perplexity by the protocols the paper and its peers report
// (eval/perplexity.h): `wikitext` (lm-eval v0.3 word perplexity, what MobileQuant's tables
// show), `wikitext-gptq` (GPTQ/OmniQuant token perplexity) and `docs` (any text split into
// documents, e.g. TinyStories); and `layer-error` (eval/layer_error.h: each block's output
// error against the float model `--reference`, on the first `wikitext` windows). Prints a
// Markdown table on stdout, progress on stderr, and
// optionally writes every figure with its protocol, the model, the command line and the
// machine to a JSON file (atomically: a temporary file renamed over the target).
//
// Data files: --data FILE (every task) or --data TASK=FILE, else $MQ_DATA_DIR/<default>,
// else <repo>/../shared/data/<default>, where <default> is wikitext2/wiki.test.raw.txt for
// the WikiText tasks and layer-error, and tinystories/valid.head.txt for docs.
//
// Every option is a field of mq::EvalConfig (config/eval_config.h), resolved in this order:
// the defaults, `--config FILE.json`, the flags given on the command line, then every
// `--set key=value` in order. `--print-config` prints the result as JSON and exits.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "mobilequant/cli/commands.h"
#include "mobilequant/config/config_json.h"
#include "mobilequant/config/eval_config.h"
#include "mobilequant/core/error.h"
#include "mobilequant/eval/layer_error.h"
#include "mobilequant/eval/perplexity.h"
#include "mobilequant/eval/text_documents.h"
#include "mobilequant/transforms/quantized_checkpoint.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

/// The command line of `mobilequant eval`: the flags as given, before they meet the config file.
struct EvalArgs {
  ModelArgs model;
  std::string reference;          ///< --reference MODEL (layer-error)
  std::vector<std::string> tasks;
  std::vector<std::string> data;  ///< FILE or TASK=FILE
  int64_t max_length = 0;
  int64_t seqlen = 0;
  std::string separator = "<|endoftext|>";
  int64_t batch_size = 1;
  int64_t limit = -1;
  std::string output;
  std::string runtime = "torch";
  int64_t threads = 0;
  bool sites = false;
  std::string compare_device;
  std::string config;             ///< --config FILE.json
  std::vector<std::string> sets;  ///< --set key=value, in order
  bool print_config = false;
};

/// The data file a task reads when no --data names one, relative to the data directory.
std::string default_data_relpath(EvalTask task) {
  return task == EvalTask::kDocs ? "tinystories/valid.head.txt" : "wikitext2/wiki.test.raw.txt";
}

/// True if `name` is the name of an EvalTask.
bool is_task_name(const std::string& name) {
  for (const EvalTask t : EnumValues<EvalTask>::values()) {
    if (name == to_string(t)) return true;
  }
  return false;
}

}  // namespace

std::string resolve_eval_data(const EvalConfig& a, EvalTask task) {
  std::string any;
  for (const auto& d : a.data) {
    const size_t eq = d.find('=');
    if (eq != std::string::npos && is_task_name(d.substr(0, eq))) {
      if (d.substr(0, eq) == to_string(task)) return d.substr(eq + 1);
    } else {
      any = d;
    }
  }
  if (!any.empty()) return any;
  return (data_dir() / default_data_relpath(task)).string();
}

namespace {

/// A progress printer for stderr: "\r" updates on a terminal, a line every 30 s otherwise.
std::function<void(const ScoreProgress&)> progress_printer(const std::string& task) {
  const bool tty = isatty(fileno(stderr));
  auto last = std::make_shared<double>(-1e9);
  return [task, tty, last](const ScoreProgress& p) {
    const bool done = p.windows_done == p.windows_total;
    const double every = tty ? 0.5 : 30.0;
    if (!done && p.seconds - *last < every) return;
    *last = p.seconds;
    const double tps = p.seconds > 0 ? static_cast<double>(p.tokens_done) / p.seconds : 0.0;
    const double eta = p.windows_done > 0 ? p.seconds * static_cast<double>(p.windows_total -
                                                                            p.windows_done) /
                                                static_cast<double>(p.windows_done)
                                          : 0.0;
    std::ostringstream os;
    os << "[eval " << task << "] windows " << p.windows_done << "/" << p.windows_total
       << ", scored " << p.scored_done << ", " << std::fixed << std::setprecision(0) << tps
       << " tok/s, " << std::setprecision(1) << p.seconds << " s elapsed, ETA " << eta << " s";
    if (tty) {
      std::cerr << "\r" << os.str() << "\x1b[K" << (done ? "\n" : "") << std::flush;
    } else {
      std::cerr << os.str() << "\n";
    }
  };
}

/// A short label of the protocol for the table.
std::string protocol_label(EvalTask task, int64_t max_length, int64_t seqlen) {
  if (task == EvalTask::kWikitext) {
    return "lm-eval v0.3 rolling, max_length=" + std::to_string(max_length);
  }
  if (task == EvalTask::kWikitextGptq) {
    return "GPTQ/OmniQuant chunks, seqlen=" + std::to_string(seqlen);
  }
  if (task == EvalTask::kLayerError) {
    return "block outputs vs float, lm-eval windows of max_length=" + std::to_string(max_length);
  }
  return "BOS docs, max_length=" + std::to_string(max_length);
}

/// The EvalConfig of one command line: defaults, then --config FILE, then the flags given
/// explicitly, then every --set in order; validated.
EvalConfig resolve_eval_config(const EvalArgs& a, const CLI::App& cmd) {
  EvalConfig c;
  if (!a.config.empty()) read_config_file(a.config, c);
  const auto given = [&cmd](const char* flag) { return cmd.count(flag) > 0; };
  if (given("--model")) c.model = a.model.model;
  if (given("--tokenizer")) c.tokenizer = a.model.tokenizer;
  if (given("--reference")) c.reference = a.reference;
  if (given("--device")) c.device = a.model.device;
  if (given("--dtype")) c.dtype = a.model.dtype;
  if (given("--task")) {
    c.tasks.clear();
    for (const auto& t : a.tasks) c.tasks.push_back(parse_eval_task(t, "--task"));
  }
  if (given("--data")) c.data = a.data;
  if (given("--max-length")) c.max_length = a.max_length;
  if (given("--seqlen")) c.seqlen = a.seqlen;
  if (given("--separator")) c.separator = a.separator;
  if (given("--batch-size")) c.batch_size = a.batch_size;
  if (given("--limit")) c.limit = a.limit;
  if (given("--output")) c.output = a.output;
  if (given("--runtime")) c.runtime = parse_enum<EvalRuntime>(a.runtime, "eval: --runtime");
  if (given("--threads")) c.threads = a.threads;
  if (given("--sites")) c.sites = a.sites;
  if (given("--compare-device")) c.compare_device = a.compare_device;
  for (const auto& s : a.sets) apply_override(c, s, "--set");
  c.validate(a.config.empty() ? "eval" : "eval (--config " + a.config + ")");
  return c;
}

/// How `model` (the evaluated model or the reference) loads under the config's tokenizer,
/// device and dtype.
LoadOptions load_options(const EvalConfig& a, const std::string& model) {
  ModelArgs args;
  args.model = model;
  args.tokenizer = a.tokenizer;
  args.device = a.device;
  args.dtype = a.dtype;
  return to_load_options(args);
}

/// Windows of layer-error unless the eval `limit` says otherwise.
constexpr int64_t kLayerErrorWindows = 4;

/// A relative error for tables: 3 significant digits, scientific.
std::string sci(double v) {
  std::ostringstream os;
  os << std::scientific << std::setprecision(3) << v;
  return os.str();
}

/// layer-error on `model` against the float model a.reference, loaded here on a.device in
/// a.dtype and freed on return. Returns the task's results entry; writes its row of the main
/// table to `table` and the per-layer table to `layers`.
nlohmann::json layer_error_entry(CausalLm& model, const Tokenizer& tokenizer, const EvalConfig& a,
                                 const std::string& path, const std::string& text,
                                 int64_t max_length, std::ostream& table, std::ostream& layers) {
  MQ_CHECK(!a.reference.empty(),
           "eval: layer-error needs the float model to compare with: pass --reference MODEL");
  MQ_CHECK(!is_quantized_model_dir(a.reference), "eval: --reference '", a.reference,
           "' is a quantized model directory; expected the float model it was made from (a "
           "Hugging Face directory, a .gguf file or a llama2.c .bin)");
  const int64_t count = a.limit >= 0 ? a.limit : kLayerErrorWindows;
  const std::vector<ScoringWindow> windows =
      layer_error_windows(tokenizer, text, max_length, count);
  const LoadOptions load = load_options(a, a.reference);
  std::cerr << "[eval layer-error] reference " << a.reference << " (" << a.dtype << ", "
            << load.device.str() << ")\n";
  LoadedModel reference = load_model(a.reference, load);
  const LayerErrorResult r =
      evaluate_layer_error(model, reference.model, windows, progress_printer("layer-error"));

  const int64_t documents = windows.back().document + 1;
  std::ostringstream p;
  p << "block outputs (resid_add_2.output after its quantizer, and model.norm.output) against "
    << "the float model " << a.reference << ", both run on the inputs of the first "
    << r.windows << " lm-eval v0.3 wikitext windows (max_length=" << max_length
    << ", every position); rel_mse = sum (h - h_ref)^2 / sum h_ref^2 over every window, "
    << "cosine = mean over positions of cos(h, h_ref); fp64";
  const std::string protocol = p.str();
  const std::string label = protocol_label(EvalTask::kLayerError, max_length, 0);
  const auto sums_json = [](const LayerErrorSums& s) {
    return nlohmann::json{{"rel_mse", s.rel_mse()}, {"cosine", s.cosine()},
                          {"sq_diff", s.sq_diff}, {"sq_ref", s.sq_ref}};
  };
  nlohmann::json per_layer = nlohmann::json::array();
  layers << "\nlayer-error: each block's output against the float model " << a.reference
         << " (" << r.windows << " windows, " << r.tokens << " tokens)\n\n"
         << "| layer | rel. MSE | cosine |\n|---:|---:|---:|\n";
  for (size_t i = 0; i < r.layers.size(); ++i) {
    nlohmann::json e = sums_json(r.layers[i]);
    e["layer"] = static_cast<int64_t>(i);
    per_layer.push_back(e);
    layers << "| " << i << " | " << sci(r.layers[i].rel_mse()) << " | " << std::fixed
           << std::setprecision(6) << r.layers[i].cosine() << " |\n";
  }
  layers << "| final_norm | " << sci(r.final_norm.rel_mse()) << " | " << std::fixed
         << std::setprecision(6) << r.final_norm.cosine() << " |\n";
  const double last = r.layers.back().rel_mse();
  table << "| layer-error | " << label << " | rel_mse_last_layer | " << sci(last) << " | "
        << r.tokens << " | " << documents << " |\n";
  const nlohmann::json metric{
      {"metric", "rel_mse_last_layer"}, {"value", last}, {"protocol", protocol}};
  return {{"task", to_string(EvalTask::kLayerError)},
          {"protocol", protocol},
          {"protocol_label", label},
          {"data", path},
          {"reference", a.reference},
          {"metrics", nlohmann::json::array({metric})},
          {"windows", r.windows},
          {"tokens", r.tokens},
          {"documents", documents},
          {"max_length", max_length},
          {"seconds", r.seconds},
          {"limited", a.limit >= 0},
          {"layers", per_layer},
          {"final_norm", sums_json(r.final_norm)}};
}

}  // namespace

EvalOutcome evaluate_tasks(CausalLm& model, const Tokenizer& tokenizer, const EvalConfig& a,
                           const std::vector<std::pair<std::string, std::string>>& inputs,
                           const std::function<torch::Tensor(const torch::Tensor&)>& logits) {
  const int64_t context = model->config().max_position_embeddings;
  // Unless given (0), window lengths are 2048 capped at the model's trained context.
  const int64_t max_length = a.max_length > 0 ? a.max_length : std::min<int64_t>(2048, context);
  const int64_t seqlen = a.seqlen > 0 ? a.seqlen : std::min<int64_t>(2048, context);

  nlohmann::json results = nlohmann::json::array();
  std::ostringstream table, layer_tables;
  table << "| task | protocol | metric | value | tokens | docs |\n"
        << "|---|---|---|---:|---:|---:|\n";
  for (size_t t = 0; t < a.tasks.size(); ++t) {
    const EvalTask task_id = a.tasks[t];
    const std::string task = to_string(task_id);
    const auto& [path, text] = inputs[t];
    ScoreOptions score;
    score.batch_size = a.batch_size;
    score.progress = progress_printer(task);
    score.logits = logits;
    std::cerr << "[eval " << task << "] data " << path << "\n";
    if (task_id == EvalTask::kLayerError) {
      MQ_CHECK(!logits, "eval: layer-error runs the LibTorch model and reads its block outputs; "
               "an external model (--runtime int) has none");
      results.push_back(
          layer_error_entry(model, tokenizer, a, path, text, max_length, table, layer_tables));
      continue;
    }
    PerplexityResult r;
    if (task_id == EvalTask::kWikitext) {
      WikitextOptions o;
      o.max_length = max_length;
      o.limit_documents = a.limit;
      r = evaluate_wikitext_lm_eval(model, tokenizer, text, o, score);
    } else if (task_id == EvalTask::kWikitextGptq) {
      GptqOptions o;
      o.seqlen = seqlen;
      o.limit_windows = a.limit;
      r = evaluate_wikitext_gptq(model, tokenizer, text, o, score);
    } else {
      DocumentOptions o;
      o.separator = a.separator;
      o.max_length = max_length;
      o.limit_documents = a.limit;
      r = evaluate_documents(model, tokenizer, text, o, score);
    }
    const std::string label = protocol_label(task_id, max_length, seqlen);
    nlohmann::json metrics = nlohmann::json::array();
    for (const auto& m : r.metrics) {
      table << "| " << task << " | " << label << " | " << m.name << " | " << std::fixed
            << std::setprecision(4) << m.value << " | " << r.scored_tokens << " | "
            << r.documents << " |\n";
      metrics.push_back({{"metric", m.name}, {"value", m.value}, {"protocol", r.protocol}});
    }
    nlohmann::json entry{{"task", task},
                         {"protocol", r.protocol},
                         {"protocol_label", label},
                         {"data", path},
                         {"metrics", metrics},
                         {"loglikelihood", r.loglikelihood},
                         {"scored_tokens", r.scored_tokens},
                         {"documents", r.documents},
                         {"windows", r.windows},
                         {"seconds", r.seconds},
                         {"limited", a.limit >= 0}};
    if (task_id == EvalTask::kWikitext) {
      entry["words"] = r.words;
      entry["bytes"] = r.bytes;
      entry["max_length"] = max_length;
    } else if (task_id == EvalTask::kWikitextGptq) {
      entry["seqlen"] = seqlen;
    } else {
      entry["separator"] = a.separator;
      entry["max_length"] = max_length;
    }
    results.push_back(entry);
  }
  return {results, table.str() + layer_tables.str()};
}

namespace {

/// Runs every task of the resolved, validated `a`.
void run_eval(const EvalConfig& a) {
  // Read every data file first, so a bad path fails before the model loads.
  std::vector<std::pair<std::string, std::string>> inputs;  // (path, text) per task
  for (const EvalTask task : a.tasks) {
    const std::string path = resolve_eval_data(a, task);
    inputs.emplace_back(path, read_text_file(path, std::string("eval --task ") + to_string(task) +
                                                       " data file"));
  }

  if (a.runtime == EvalRuntime::kInt) {
    run_eval_int(a, inputs);
    return;
  }
  const LoadOptions load = load_options(a, a.model);
  std::cerr << "[eval] loading " << a.model << " (" << a.dtype << ", " << load.device.str()
            << ")\n";
  LoadedModel lm;
  LoadedQuantizedModel quantized;  // holds the simulated-quantization wrapper alive
  if (is_quantized_model_dir(a.model)) {
    quantized = load_quantized_model(a.model, load);
    quantized.model->set_weight_cache(true);  // weights are fixed while evaluating
    lm = quantized.base;
    std::cerr << "[eval] simulated quantization: " << quantized.manifest.quant.name << " ("
              << quantized.manifest.method << ")\n";
  } else {
    lm = load_model(a.model, load);
  }
  MQ_CHECK(lm.tokenizer != nullptr, "model '", a.model,
           "': no tokenizer found beside it; pass --tokenizer");
  const EvalOutcome outcome = evaluate_tasks(lm.model, *lm.tokenizer, a, inputs);
  std::cout << outcome.table << std::flush;
  const nlohmann::json& results = outcome.results;

  if (!a.output.empty()) {
    nlohmann::json out{{"model", a.model},
                       {"model_format", lm.format},
                       {"tokenizer", a.tokenizer.empty() ? "(from the model)" : a.tokenizer},
                       {"dtype", a.dtype},
                       {"quantization",
                        quantized.model.is_empty()
                            ? nlohmann::json(nullptr)
                            : nlohmann::json{{"quant", quantized.manifest.quant.name},
                                             {"method", quantized.manifest.method},
                                             {"base_model", quantized.manifest.base_model}}},
                       {"device", load.device.str()},
                       {"batch_size", a.batch_size},
                       {"command_line", command_line()},
                       {"machine", machine_info(load.device)},
                       {"finished_at", utc_now()},
                       {"config", config_to_json(a)},
                       {"results", results}};
    write_json_atomically(out, a.output);
    std::cerr << "[eval] wrote " << a.output << "\n";
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand(
      "eval",
      "Perplexity: wikitext (lm-eval v0.3 word perplexity, as MobileQuant reports), "
      "wikitext-gptq (GPTQ/OmniQuant token perplexity), docs (documents of any text file); "
      "layer-error (each block's output error against the float model --reference)");
  cmd->add_option("--config", a->config,
                  "Read the evaluation from this JSON file (configs/eval/*.json); flags given "
                  "on the command line override it")
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", a->sets,
                  "Override one config key, e.g. --set max_length=512 (repeatable, applied "
                  "last, in order)");
  cmd->add_flag("--print-config", a->print_config,
                "Print the resolved config as JSON and exit");
  add_model_args(*cmd, a->model);
  // A config file may name the model; resolve_eval_config checks that something does.
  cmd->get_option("--model")->required(false);
  cmd->add_option("--task", a->tasks,
                  "wikitext | wikitext-gptq | docs | layer-error (repeatable); layer-error: "
                  "relative MSE and cosine of every block's output against --reference on the "
                  "first 4 wikitext windows (--limit N: N windows)")
      ->check(CLI::IsMember(enum_names<EvalTask>()));
  cmd->add_option("--data", a->data,
                  "Data file for every task, or TASK=FILE for one (repeatable); default "
                  "$MQ_DATA_DIR or <repo>/../shared/data: wikitext2/wiki.test.raw.txt, "
                  "tinystories/valid.head.txt");
  cmd->add_option("--max-length", a->max_length,
                  "Window length of wikitext, docs and layer-error (default 2048, capped at "
                  "the model's context)");
  cmd->add_option("--seqlen", a->seqlen,
                  "Window length of wikitext-gptq (default 2048, capped at the "
                  "model's context)");
  cmd->add_option("--separator", a->separator, "Document separator line of docs")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->batch_size, "Windows of equal length per forward pass")
      ->capture_default_str();
  cmd->add_option("--limit", a->limit,
                  "Score only the first N documents (wikitext, docs) or windows (wikitext-gptq, "
                  "layer-error; layer-error takes 4 without --limit)");
  cmd->add_option("--reference", a->reference,
                  "layer-error: the float model to compare with (the one the evaluated model "
                  "was quantized from; loaded only for layer-error, on --device in --dtype)");
  cmd->add_option("-o,--output", a->output, "Write the results as JSON to this file");
  cmd->add_option("--runtime", a->runtime,
                  "torch (default) or int: the integer runtime on an export directory (-m "
                  "EXPORT), side by side with the export's simulated model in fp32 and in fp64")
      ->check(CLI::IsMember({"torch", "int"}));
  cmd->add_option("--threads", a->threads, "Threads of the integer runtime (0: every core)");
  cmd->add_flag("--sites", a->sites,
                "With --runtime int: on the first window, compare the codes of every activation "
                "site of every block with the fp64 simulation's, and name the first site where "
                "they differ (the [H, T, T] sites only for windows of up to 512 tokens)");
  cmd->add_option("--compare-device", a->compare_device,
                  "With --runtime int: also run the export's fp32 simulation on this device "
                  "(cuda, cuda:N; TF32 off) and report its greedy agreement with the CPU's fp32 "
                  "simulation and with the integer runtime: is the fp32 simulation one model "
                  "on every device?");
  cmd->callback([a, cmd] {
    const EvalConfig config = resolve_eval_config(*a, *cmd);
    if (a->print_config) {
      std::cout << config_to_json(config).dump(2) << std::endl;
      return;
    }
    MQ_CHECK(!config.model.empty(),
             "eval: no model; pass --model PATH, or set \"model\" in the --config file, or "
             "--set model=PATH");
    run_eval(config);
  });
}

}  // namespace mq::cli
