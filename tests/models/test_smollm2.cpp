// tests/models/test_smollm2.cpp
// SmolLM2-135M-Instruct (GGUF v3, Q4_1/Q8_0/F32; llama architecture, GPT-2 byte-level BPE
// with the "smollm" pre-tokenizer) against its Python references
// (tests/oracle/smollm2_oracle.py):
//   (a) every tensor GgufReader dequantizes equals gguf-py's `gguf.quants.dequantize` bitwise;
//   (b) BpeTokenizer's ids equal transformers' AutoTokenizer(dir, gguf_file=name) on Unicode,
//       digits, whitespace runs, contractions and chat-template strings;
//   (c) read_gguf_checkpoint + build_model (= mq::load_model) give logits equal to
//       transformers' AutoModelForCausalLM(dir,
//       gguf_file=name, float32) within kLogitAtol.
// The model comes from scripts/fetch_smollm2.sh; every case skips without it.
#include <ATen/Parallel.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mobilequant/io/bpe_tokenizer.h"
#include "mobilequant/io/gguf_reader.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/core/file_util.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

constexpr double kLogitAtol = 1e-3;  // fp32 vs fp32, different kernels and summation orders
constexpr const char* kModelName = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model path, or "" when it has not been fetched.
std::string model_path() {
  const fs::path p = mq::test::models_dir() / kModelName;
  return fs::is_regular_file(p) ? p.string() : "";
}

/// Runs the oracle in `mode` into `out`; returns "" on success, else the command and its log.
std::string run_oracle(const std::string& mode, const std::string& model, const fs::path& out) {
  const auto oracle = mq::test::source_dir() / "tests" / "oracle" / "smollm2_oracle.py";
  const std::string cmd = mq::test::python().string() + " " + oracle.string() + " " + mode +
                          " " + model + " " + out.string() + " > " + (out / "oracle.log").string() +
                          " 2>&1";
  if (std::system(cmd.c_str()) == 0) return "";
  std::ifstream log(out / "oracle.log");
  std::stringstream ss;
  ss << log.rdbuf();
  return cmd + "\n" + ss.str();
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::vector<int64_t> parse_ids(std::istream& is) {
  std::vector<int64_t> ids;
  int64_t id = 0;
  while (is >> id) ids.push_back(id);
  return ids;
}

/// Reads `count` float32 values from `path` starting at float `offset` into a tensor of `shape`.
torch::Tensor read_floats(const fs::path& path, int64_t offset, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, torch::kFloat32);
  std::ifstream in(path, std::ios::binary);
  in.seekg(offset * 4);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), t.numel() * 4);
  REQUIRE(in.good());
  return t;
}

/// Runs the enclosing scope's torch ops on `n` intra-op threads, then restores the count: on
/// a shared machine OpenMP's spinning workers make this small model's forward 10x slower.
class IntraOpThreads {
 public:
  explicit IntraOpThreads(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~IntraOpThreads() { at::set_num_threads(saved_); }
  IntraOpThreads(const IntraOpThreads&) = delete;
  IntraOpThreads& operator=(const IntraOpThreads&) = delete;

 private:
  int saved_;
};

}  // namespace

#define MQ_REQUIRE_SMOLLM2(path)                                                              \
  const std::string path = model_path();                                                      \
  if (path.empty())                                                                           \
    MQ_SKIP(kModelName << " not found in " << mq::test::models_dir()                         \
                       << "; run scripts/fetch_smollm2.sh");                                  \
  if (!fs::exists(mq::test::python()))                                                        \
  MQ_SKIP("no Python oracle at " << mq::test::python() << " (run scripts/setup.sh)")

TEST_CASE("smollm2: every GGUF tensor dequantizes bitwise like gguf-py", "[model]") {
  MQ_REQUIRE_SMOLLM2(path);
  auto dir = mq::test::scratch_dir("smollm2_tensors");
  const std::string err = run_oracle("tensors", path, dir);
  if (!err.empty()) FAIL("oracle failed: " << err);

  const auto t0 = std::chrono::steady_clock::now();
  mq::GgufReader reader(path);
  const mq::TensorMap ours = reader.all_tensors();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("dequantized " << ours.size() << " tensors in " << seconds << " s");

  std::ifstream index(dir / "tensors.txt");
  std::string line;
  size_t checked = 0;
  while (std::getline(index, line)) {
    std::istringstream is(line);
    std::string name;
    int64_t offset = 0, ndims = 0;
    is >> name >> offset >> ndims;
    std::vector<int64_t> shape(ndims);
    for (auto& d : shape) is >> d;
    INFO("tensor " << name << " ("
                   << mq::ggml_type_traits(static_cast<uint32_t>(reader.tensor_info(name).type))->name
                   << ")");
    REQUIRE(ours.count(name) == 1);
    const torch::Tensor& got = ours.at(name);
    auto want = read_floats(dir / "tensors.bin", offset, shape);
    REQUIRE(got.sizes() == want.sizes());
    const auto mismatches =
        (got.view(torch::kInt32) != want.view(torch::kInt32)).sum().item<int64_t>();
    INFO(mq::test::describe_max_diff(got, want));
    REQUIRE(mismatches == 0);
    ++checked;
  }
  CHECK(checked == ours.size());
  CHECK(checked == 272);
  mq::remove_tree(dir.string());
}

TEST_CASE("smollm2: BPE token ids equal transformers' tokenizer from the same GGUF", "[model]") {
  MQ_REQUIRE_SMOLLM2(path);
  auto dir = mq::test::scratch_dir("smollm2_tokens");
  const std::string err = run_oracle("tokens", path, dir);
  if (!err.empty()) FAIL("oracle failed: " << err);

  const mq::Checkpoint ckpt = mq::read_gguf_checkpoint(path, "");
  REQUIRE(ckpt.tokenizer != nullptr);
  const mq::Tokenizer& tok = *ckpt.tokenizer;
  CHECK(tok.vocab_size() == 49152);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK_FALSE(tok.adds_bos());

  std::ifstream in(dir / "tokens.txt");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    const std::string text = from_hex(line.substr(0, tab));
    std::istringstream ids_in(line.substr(tab + 1));
    const std::vector<int64_t> want = parse_ids(ids_in);
    INFO("text (" << text.size() << " bytes): \"" << text.substr(0, 200) << "\"");
    const std::vector<int64_t> got = tok.encode(text);
    if (got != want) {  // name the first difference rather than printing whole id lists
      size_t i = 0;
      while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
      FAIL_CHECK("ids differ at position " << i << " of " << got.size() << " (ours) / "
                 << want.size() << " (transformers)");
    }
    // Decoding drops control tokens only; everything else round-trips.
    if (text.find("<|") == std::string::npos) CHECK(tok.decode(want) == text);
    ++checked;
  }
  CHECK(checked >= 19);
  mq::remove_tree(dir.string());
}

TEST_CASE("smollm2: fp32 logits match transformers' GGUF model", "[model]") {
  MQ_REQUIRE_SMOLLM2(path);
  auto dir = mq::test::scratch_dir("smollm2_logits");
  IntraOpThreads one_thread(1);

  auto t0 = std::chrono::steady_clock::now();
  const mq::Checkpoint ckpt = mq::read_gguf_checkpoint(path, "");
  auto t1 = std::chrono::steady_clock::now();
  mq::LoadedModel lm = mq::build_model(ckpt);
  auto t2 = std::chrono::steady_clock::now();
  const mq::ModelConfig& cfg = lm.model->config();
  CHECK(cfg.arch == mq::Arch::kLlama);
  CHECK(cfg.vocab_size == 49152);
  CHECK(cfg.num_hidden_layers == 30);
  CHECK(cfg.hidden_size == 576);
  CHECK(cfg.intermediate_size == 1536);
  CHECK(cfg.num_attention_heads == 9);
  CHECK(cfg.num_key_value_heads == 3);
  CHECK(cfg.head_dim == 64);
  CHECK(cfg.rope_theta == 100000.0);
  CHECK(cfg.norm_eps == static_cast<double>(1e-5f));
  CHECK(cfg.tie_word_embeddings);
  CHECK(lm.format == "gguf");
  REQUIRE(lm.tokenizer != nullptr);

  // Prompts tokenized by our tokenizer (checked against transformers' in the case above).
  const std::vector<std::string> prompts{
      "The capital of France is",
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
      "def fibonacci(n):\n    if n < 2:\n        return n",
  };
  std::vector<std::vector<int64_t>> ids;
  {
    std::ofstream out(dir / "ids.txt");
    for (const auto& p : prompts) {
      ids.push_back(lm.tokenizer->encode(p));
      for (int64_t id : ids.back()) out << id << ' ';
      out << '\n';
    }
  }
  const std::string err = run_oracle("logits", path, dir);
  if (!err.empty()) FAIL("oracle failed: " << err);

  torch::NoGradGuard no_grad;
  const auto t3 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < prompts.size(); ++k) {
    const auto n = static_cast<int64_t>(ids[k].size());
    auto want = read_floats(dir / ("logits_" + std::to_string(k) + ".bin"), 0,
                            {n, cfg.vocab_size});                     // [T, V]
    auto input = torch::tensor(ids[k], torch::kInt64).unsqueeze(0);  // [1, T]
    auto got = lm.model->forward(input)[0];                           // [T, V]
    INFO("prompt " << k << " (" << n << " tokens)");
    REQUIRE_ALLCLOSE(got, want, kLogitAtol);
    CHECK(torch::equal(got.argmax(-1), want.argmax(-1)));
  }
  auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  WARN("read_gguf_checkpoint " << seconds(t0, t1) << " s, build_model " << seconds(t1, t2)
                               << " s, forward of " << prompts.size() << " prompts "
                               << seconds(t3, std::chrono::steady_clock::now()) << " s");
  mq::remove_tree(dir.string());
}
