// mobilequant/cli/common.cpp: the model options every command shares.
#include "mobilequant/cli/commands.h"
#include "mobilequant/core/error.h"

namespace mq::cli {

void add_model_args(CLI::App& cmd, ModelArgs& args) {
  cmd.add_option("-m,--model", args.model,
                 "Model: a Hugging Face directory, a .gguf file or a llama2.c .bin")
      ->required();
  cmd.add_option("--tokenizer", args.tokenizer,
                 "Tokenizer file overriding the one found beside the model "
                 "(SentencePiece .model or llama2.c tokenizer.bin)");
  cmd.add_option("--device", args.device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd.add_option("--dtype", args.dtype, "Parameter dtype: fp32, bf16 or fp16")
      ->capture_default_str();
}

torch::Device parse_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    MQ_CHECK(torch::cuda::is_available(), "--device ", name,
             ": CUDA is not available in this build or on this machine (LibTorch ",
             TORCH_VERSION, "); use --device cpu");
    return torch::Device(name);
  }
  throw make_error("--device: got '", name, "', expected one of [cpu, cuda, cuda:N]");
}

torch::Dtype parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return torch::kFloat32;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  if (name == "fp16" || name == "float16") return torch::kFloat16;
  throw make_error("--dtype: got '", name, "', expected one of [fp32, bf16, fp16]");
}

LoadOptions to_load_options(const ModelArgs& args) {
  LoadOptions opts;
  opts.tokenizer_path = args.tokenizer;
  opts.device = parse_device(args.device);
  opts.dtype = parse_dtype(args.dtype);
  return opts;
}

}  // namespace mq::cli
