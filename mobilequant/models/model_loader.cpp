// mobilequant/models/model_loader.cpp
#include "mobilequant/models/model_loader.h"

#include <filesystem>

#include "mobilequant/core/error.h"

namespace mq {

namespace fs = std::filesystem;

Checkpoint read_checkpoint(const std::string& path, const std::string& tokenizer_path) {
  MQ_CHECK(fs::exists(path), "model '", path, "': no such file or directory");
  if (fs::is_directory(path)) return read_hf_checkpoint(path, tokenizer_path);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".gguf") return read_gguf_checkpoint(path, tokenizer_path);
  if (ext == ".bin") return read_llama2c_checkpoint(path, tokenizer_path);
  throw make_error("model '", path, "': unknown format (extension '", ext,
                   "'); expected a Hugging Face directory, a .gguf file or a llama2.c .bin");
}

LoadedModel build_model(const Checkpoint& ckpt, const LoadOptions& opts) {
  LoadedModel out;
  out.model = CausalLm(ckpt.config);
  out.model->load_tensors(ckpt.tensors, ckpt.source);
  out.model->to(opts.device, opts.dtype);
  out.model->eval();
  out.tokenizer = ckpt.tokenizer;
  out.source = ckpt.source;
  out.format = ckpt.format;
  return out;
}

LoadedModel load_model(const std::string& path, const LoadOptions& opts) {
  return build_model(read_checkpoint(path, opts.tokenizer_path), opts);
}

}  // namespace mq
