// mobilequant/cli/generate_command.cpp: `mobilequant generate`, greedy decoding from a prompt.
#include <iostream>

#include "mobilequant/cli/commands.h"
#include "mobilequant/core/error.h"
#include "mobilequant/models/generation.h"

namespace mq::cli {

void add_generate_command(CLI::App& app) {
  struct Args {
    ModelArgs model;
    std::string prompt;
    int64_t max_new_tokens = 64;
    bool no_bos = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("generate", "Greedy (temperature 0) generation from a prompt");
  add_model_args(*cmd, args->model);
  cmd->add_option("-p,--prompt", args->prompt, "Prompt text (default: empty, i.e. BOS alone)");
  cmd->add_option("-n,--max-new-tokens", args->max_new_tokens, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--no-bos", args->no_bos, "Do not prepend BOS to the prompt");
  cmd->callback([args] {
    auto loaded = load_model(args->model.model, to_load_options(args->model));
    MQ_CHECK(loaded.tokenizer != nullptr, "model '", loaded.source,
             "' carries no tokenizer; pass --tokenizer");
    std::vector<int64_t> prompt;
    if (!args->no_bos && loaded.tokenizer->bos_id() >= 0) prompt.push_back(loaded.tokenizer->bos_id());
    for (int64_t id : loaded.tokenizer->encode(args->prompt)) prompt.push_back(id);
    auto out = generate_greedy(loaded.model, prompt, args->max_new_tokens,
                               loaded.tokenizer->eos_id());
    std::vector<int64_t> all(prompt.begin(), prompt.end());
    all.insert(all.end(), out.begin(), out.end());
    std::cout << loaded.tokenizer->decode(all) << std::endl;
  });
}

}  // namespace mq::cli
