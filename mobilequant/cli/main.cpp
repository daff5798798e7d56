// mobilequant/cli/main.cpp
// The `mobilequant` executable: subcommands for evaluating, generating with and
// benchmarking models. The only place that catches mq::Error: it prints the
// message and exits non-zero.
#include <CLI/CLI.hpp>

#include <iostream>

#include "mobilequant/cli/commands.h"
#include "mobilequant/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "mobilequant: quantize small language models for integer-only phone NPUs (MobileQuant, "
      "EMNLP 2024).\nModels: Hugging Face directories (llama, gemma, stablelm), GGUF v3 files, "
      "llama2.c .bin checkpoints."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mobilequant 0.1.0");
  mq::cli::add_quantize_command(app);
  mq::cli::add_eval_command(app);
  mq::cli::add_generate_command(app);
  mq::cli::add_bench_command(app);
  mq::cli::add_info_command(app);
  mq::cli::add_run_command(app);
  mq::cli::add_sweep_command(app);
  mq::cli::add_export_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mq::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
