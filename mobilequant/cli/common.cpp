// mobilequant/cli/common.cpp: the model options every command shares.
#include "mobilequant/cli/commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "mobilequant/config/quant_config.h"
#include "mobilequant/core/error.h"

namespace mq::cli {

namespace fs = std::filesystem;

/// The repository root: $MQ_SOURCE_DIR, else the path compiled in.
fs::path source_dir() {
  if (const char* env = std::getenv("MQ_SOURCE_DIR")) return env;
  return MQ_SOURCE_DIR;
}

/// This process's command line, from /proc/self/cmdline (Linux), arguments space-joined.
std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out;
  for (char c : raw) out += c == '\0' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

/// Host name, CPU model, threads and accelerator of this machine, for the JSON record.
nlohmann::json machine_info(const torch::Device& device) {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  std::string cpu;
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return {{"hostname", host},
          {"cpu", cpu},
          {"cpu_threads", torch::get_num_threads()},
          {"device", device.str()},
          {"cuda_available", torch::cuda::is_available()},
          {"cuda_devices", torch::cuda::is_available() ? torch::cuda::device_count() : 0},
          {"libtorch", TORCH_VERSION}};
}

/// Current UTC time as ISO 8601.
std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// Writes `j` to `path` through a temporary file in the same directory and a rename.
void write_json_atomically(const nlohmann::json& j, const std::string& path) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const fs::path tmp = target.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MQ_CHECK(out.good(), "--output '", path, "': cannot write the temporary file '", tmp.string(),
             "'");
    out << j.dump(2) << "\n";
    out.close();
    MQ_CHECK(!out.fail(), "--output '", path, "': write to '", tmp.string(), "' failed");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp);
    throw make_error("--output '", path, "': cannot rename '", tmp.string(), "' into place: ",
                     ec.message());
  }
}


fs::path data_dir() {
  if (const char* env = std::getenv("MQ_DATA_DIR")) return env;
  if (const char* env = std::getenv("MQ_SHARED_DIR")) return fs::path(env) / "data";
  return source_dir().parent_path() / "shared" / "data";
}

std::string presets_dir() { return (source_dir() / "configs" / "quant").string(); }
std::string methods_dir() { return (source_dir() / "configs" / "methods").string(); }

std::string git_revision() {
  // A copy of the tree without its history (the GPU machine) says which commit it is here.
  if (const char* env = std::getenv("MQ_GIT_REVISION")) return env;
  const std::string cmd = "git -C '" + source_dir().string() + "' rev-parse HEAD 2>/dev/null";
  std::string out;
  if (FILE* pipe = ::popen(cmd.c_str(), "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof(buf), pipe) != nullptr) out += buf;
    ::pclose(pipe);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out.empty() ? "unknown" : out;
}


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

namespace mq::cli {

namespace {

/// A file's identity for cache keys: absolute path, size and modification time (for a
/// directory, those of its config and weights).
std::string file_identity(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec);
  std::ostringstream os;
  os << abs.string();
  if (fs::is_regular_file(abs, ec)) {
    os << "#" << fs::file_size(abs, ec) << "#"
       << fs::last_write_time(abs, ec).time_since_epoch().count();
  } else if (fs::is_directory(abs, ec)) {
    for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"}) {
      const fs::path p = abs / f;
      if (fs::exists(p, ec))
        os << "#" << f << ":" << fs::file_size(p, ec) << ":"
           << fs::last_write_time(p, ec).time_since_epoch().count();
    }
  }
  return os.str();
}

}  // namespace

std::string default_calib_data() {
  return (data_dir() / "wikitext2" / "wiki.valid.tokens.txt").string();
}

QuantConfig resolve_quant(const std::string& preset, const std::vector<std::string>& overrides,
                          const std::string& where) {
  QuantConfig quant = load_quant_config(preset, presets_dir());
  for (const auto& o : overrides) apply_quant_override(quant, o, where);
  return quant;
}

LoadedModel load_quantizable_model(const std::string& model, const LoadOptions& load,
                                   const QuantConfig& quant, const std::string& where) {
  LoadedModel lm = load_model(model, load);
  MQ_CHECK(lm.tokenizer != nullptr, "model '", model,
           "': no tokenizer found beside it; give one (--tokenizer, or \"tokenizer\" in a "
           "config)");
  const ModelConfig& m = lm.model->config();
  quant.validate_for_model(m.hidden_size, m.intermediate_size, m.num_attention_heads * m.head_dim,
                           where);
  return lm;
}

CalibrationOptions calibration_options(int64_t samples, int64_t seqlen, int64_t seed,
                                       const std::string& separator, const ModelConfig& model) {
  CalibrationOptions o;
  o.num_samples = samples;
  o.seqlen = seqlen > 0 ? seqlen : std::min<int64_t>(2048, model.max_position_embeddings);
  o.seed = static_cast<uint64_t>(seed);
  o.separator = separator;
  return o;
}

std::string calibration_cache_key(const std::string& model, const std::string& calib,
                                  const CalibrationOptions& opts, const torch::Device& device) {
  std::ostringstream key;
  key << file_identity(model) << "|" << file_identity(calib) << "|sep=" << opts.separator
      << "|n=" << opts.num_samples << "|T=" << opts.seqlen << "|seed=" << opts.seed
      << "|device=" << (device.is_cuda() ? "cuda" : "cpu");
  return key.str();
}

QuantizedManifest make_manifest(const std::string& model, const std::string& tokenizer,
                                const std::string& method, const nlohmann::json& settings) {
  QuantizedManifest m;
  m.base_model = fs::absolute(model).string();
  m.tokenizer_source = tokenizer.empty() ? m.base_model : fs::absolute(tokenizer).string();
  m.method = method;
  m.created_by = command_line();
  m.git_revision = git_revision();
  m.settings = settings;
  return m;
}

}  // namespace mq::cli
