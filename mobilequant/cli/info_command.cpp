// mobilequant/cli/info_command.cpp: `mobilequant info`, what a checkpoint holds.
#include <iostream>

#include "mobilequant/cli/commands.h"

namespace mq::cli {

void add_info_command(CLI::App& app) {
  auto args = std::make_shared<ModelArgs>();
  auto* cmd = app.add_subcommand("info", "Print a checkpoint's format, hyperparameters and tensors");
  cmd->add_option("-m,--model", args->model, "HF directory, .gguf or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "Tokenizer override");
  cmd->callback([args] {
    auto ckpt = read_checkpoint(args->model, args->tokenizer);
    const auto& c = ckpt.config;
    int64_t params = 0;
    for (const auto& kv : ckpt.tensors) params += kv.second.numel();
    std::cout << "| field | value |\n|---|---|\n"
              << "| source | " << ckpt.source << " |\n| format | " << ckpt.format << " |\n"
              << "| arch | " << to_string(c.arch) << " |\n| parameters | " << params << " |\n"
              << "| layers | " << c.num_hidden_layers << " |\n| hidden | " << c.hidden_size
              << " |\n| intermediate | " << c.intermediate_size << " |\n| heads / kv heads | "
              << c.num_attention_heads << " / " << c.num_key_value_heads << " |\n| head_dim | "
              << c.head_dim << " |\n| vocab | " << c.vocab_size << " |\n| rope_theta | "
              << c.rope_theta << " |\n| rotary dims | " << c.rotary_dim() << " |\n| norm eps | "
              << c.norm_eps << " |\n| activation | " << to_string(c.hidden_act)
              << " |\n| tied classifier | " << (c.tie_word_embeddings ? "yes" : "no")
              << " |\n| tokenizer | "
              << (ckpt.tokenizer ? std::to_string(ckpt.tokenizer->vocab_size()) + " ids" : "none")
              << " |\n";
  });
}

}  // namespace mq::cli
