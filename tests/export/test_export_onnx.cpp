// tests/export/test_export_onnx.cpp
// The ONNX QDQ export (mobilequant/export/onnx_qdq.h, docs/onnx.md):
//   (a) [unit]  the protobuf writer's bytes against hand-computed wire bytes; what a QDQ graph
//               cannot express; the opset choice.
//   (b) [model] stories260K at W8A8 and W4A8 (LET scales and LWC bounds randomised and
//               folded, learned offsets pushed off-integer), exported, run by ONNX Runtime
//               with graph optimizations off (tests/oracle/onnx_logits.py), compared with the
//               simulated model whose offsets are the exported (rounded) ones.
//   (c) [heavy] SmolLM2-135M-Instruct at W8A8 and W4A8 on WikiText prompts, against the
//               simulation's fp64 noise floor (the criteria are at that test).
//
// Tolerance (the argument of docs/onnx.md). Both sides compute the same fp32 graph; only the
// order of sums (MatMul, ReduceMean, Softmax) and the last-ulp of exp/sigmoid/cos differ,
// ~1e-7 relative. Each Q/DQ pair snaps both sides to the same code unless the fp32 value lies
// within those few ulps of a rounding boundary (x/s = k + 1/2), so the float noise does not
// accumulate across layers: a position without a flipped code differs only by the noise of
// the float tail (final RMSNorm and lm_head, V = 512 sums of C = 64 terms): below
// kFpNoise = 1e-4 here. A flipped code moves one element by one step s of its site; the
// simulated quantization itself moves every element of every site by up to s/2 from the float
// model, so a flip's effect on the logits is bounded by the quantization error of the model:
//   max |logit_onnx - logit_sim| <= max |logit_sim - logit_float|          (kFlipBound: 1x)
// and flips are rare events (a boundary hit has probability ~ulp/s per element):
//   at least 90% of positions agree to kFpNoise, the argmax agrees at >= 95% of them, and
//   mean |logit_onnx - logit_sim| <= 1e-3 * mean |logit_sim - logit_float|     (kMeanRatio).
// Measured (ORT 1.23.2, 337 positions): W8A8 max 1.8e-4, mean 3.6e-7, 99.7% within 1e-4,
// argmax 100%; W4A8 max 1.6e-4, mean 4.2e-7, 99.7%, 100%; W4A8-sym max 7.6e-2 (one flipped
// code), mean 3.2e-5, 99.4%, 100% (sim - float: max 4.2 / 7.0 / 9.0).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "mobilequant/calib/act_stats.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/core/error.h"
#include "mobilequant/core/file_util.h"
#include "mobilequant/export/encoding_table.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/onnx_proto.h"
#include "mobilequant/export/onnx_qdq.h"
#include "mobilequant/io/safetensors_reader.h"
#include "mobilequant/io/tokenizer.h"
#include "mobilequant/models/model_loader.h"
#include "mobilequant/transforms/quantized_model.h"
#include "tests/export/export_fixture.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;

namespace {

/// Largest |Δlogit| of a position where no code flipped (fp32 noise of the float tail).
constexpr double kFpNoise = 1e-4;
/// Fraction of positions that must agree to kFpNoise (no flipped code upstream).
constexpr double kMinExactPositions = 0.90;
/// Fraction of positions whose argmax must agree.
constexpr double kMinArgmaxAgreement = 0.95;
/// max|onnx - sim| may reach this multiple of max|sim - float| (one flip of step s vs the
/// quantization error of up to s/2 on every element of every site).
constexpr double kFlipBound = 1.0;
/// mean|onnx - sim| may reach this fraction of mean|sim - float| (flips are rare events).
constexpr double kMeanRatio = 1e-3;
/// Exit status of onnx_logits.py when a Python package is missing.
constexpr int kOracleMissingPackage = 3;

/// The bytes as a string (for comparing wire bytes).
std::string bytes(std::initializer_list<int> b) {
  std::string out;
  for (const int x : b) out.push_back(static_cast<char>(x));
  return out;
}

/// Hex of a byte string, for failure messages.
std::string hex(const std::string& s) {
  std::ostringstream os;
  for (const char c : s) {
    static const char* digits = "0123456789abcdef";
    const auto u = static_cast<unsigned char>(c);
    os << digits[u >> 4] << digits[u & 15] << ' ';
  }
  return os.str();
}

#define REQUIRE_BYTES(got, want)                                   \
  do {                                                             \
    INFO("got  " << hex(got) << "\nwant " << hex(want));           \
    REQUIRE((got) == (want));                                      \
  } while (0)

mq::QuantConfig preset(const std::string& name) {
  return mq::load_quant_config(name, (mq::test::source_dir() / "configs" / "quant").string());
}

}  // namespace

// ---------------------------------------------------------------------------- (a) unit

TEST_CASE("onnx proto: varints are base-128, negative int64 as 10 bytes", "[unit]") {
  REQUIRE_BYTES(mq::onnx::encode_varint(0), bytes({0x00}));
  REQUIRE_BYTES(mq::onnx::encode_varint(1), bytes({0x01}));
  REQUIRE_BYTES(mq::onnx::encode_varint(127), bytes({0x7f}));
  REQUIRE_BYTES(mq::onnx::encode_varint(128), bytes({0x80, 0x01}));
  REQUIRE_BYTES(mq::onnx::encode_varint(300), bytes({0xac, 0x02}));
  REQUIRE_BYTES(mq::onnx::encode_varint(static_cast<uint64_t>(int64_t{-1})),
                bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}));
}

TEST_CASE("onnx proto: TensorProto, AttributeProto, NodeProto bytes", "[unit]") {
  mq::onnx::TensorProto t;
  t.name = "w";
  t.data_type = mq::onnx::DataType::kUint8;
  t.dims = {2};
  t.raw_data = bytes({0x01, 0x02});
  // dims(1) varint 2; data_type(2) varint 2; name(8) len 1 "w"; raw_data(9) len 2.
  REQUIRE_BYTES(t.encode(), bytes({0x08, 0x02, 0x10, 0x02, 0x42, 0x01, 'w', 0x4a, 0x02, 0x01, 0x02}));

  // name(1) "axis"; i(3) = -1 (10-byte varint); type(20) = INT(2): key 20<<3 = 0xa0 0x01.
  REQUIRE_BYTES(mq::onnx::attr_int("axis", -1).encode(),
                bytes({0x0a, 0x04, 'a', 'x', 'i', 's', 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                       0xff, 0xff, 0xff, 0x01, 0xa0, 0x01, 0x02}));
  // f(2) fixed32 1.0f = 00 00 80 3f; type FLOAT(1).
  REQUIRE_BYTES(mq::onnx::attr_float("a", 1.0f).encode(),
                bytes({0x0a, 0x01, 'a', 0x15, 0x00, 0x00, 0x80, 0x3f, 0xa0, 0x01, 0x01}));
  // ints(8) unpacked: 0, 2, 1; type INTS(7).
  REQUIRE_BYTES(mq::onnx::attr_ints("p", {0, 2, 1}).encode(),
                bytes({0x0a, 0x01, 'p', 0x40, 0x00, 0x40, 0x02, 0x40, 0x01, 0xa0, 0x01, 0x07}));

  mq::onnx::NodeProto n;
  n.inputs = {"x"};
  n.outputs = {"y"};
  n.name = "n";
  n.op_type = "Neg";
  // input(1) "x"; output(2) "y"; name(3) "n"; op_type(4) "Neg".
  REQUIRE_BYTES(n.encode(), bytes({0x0a, 0x01, 'x', 0x12, 0x01, 'y', 0x1a, 0x01, 'n', 0x22, 0x03,
                                   'N', 'e', 'g'}));
}

TEST_CASE("onnx proto: ValueInfoProto with a symbolic dimension, ModelProto", "[unit]") {
  mq::onnx::ValueInfoProto v;
  v.name = "i";
  v.elem_type = mq::onnx::DataType::kInt64;
  v.shape = {mq::onnx::Dimension{1, ""}, mq::onnx::Dimension{0, "T"}};
  // Dimension{dim_value(1)=1} = 08 01; Dimension{dim_param(2)="T"} = 12 01 54;
  // TensorShapeProto{dim(1) x2} = 0a 02 08 01 0a 03 12 01 54 (9 bytes);
  // TypeProto.Tensor{elem_type(1)=7, shape(2)} = 08 07 12 09 ... (13 bytes);
  // TypeProto{tensor_type(1)} = 0a 0d ... (15 bytes); ValueInfo{name(1), type(2) len 0x0f}.
  REQUIRE_BYTES(v.encode(), bytes({0x0a, 0x01, 'i', 0x12, 0x0f, 0x0a, 0x0d, 0x08, 0x07, 0x12,
                                   0x09, 0x0a, 0x02, 0x08, 0x01, 0x0a, 0x03, 0x12, 0x01, 'T'}));

  mq::onnx::ModelProto m;
  m.ir_version = 10;
  m.opset_imports = {mq::onnx::OperatorSetId{"", 21}};
  m.graph.name = "g";
  // ir_version(1)=10; graph(7){name(2)="g"}; opset_import(8){domain(1)="", version(2)=21}.
  REQUIRE_BYTES(m.encode(), bytes({0x08, 0x0a, 0x3a, 0x03, 0x12, 0x01, 'g', 0x42, 0x04, 0x0a,
                                   0x00, 0x10, 0x15}));
}

TEST_CASE("onnx proto: integer packing, 4-bit two per byte low nibble first", "[unit]") {
  using mq::onnx::DataType;
  REQUIRE_BYTES(mq::onnx::pack_integers({1, 2, 15}, DataType::kUint4), bytes({0x21, 0x0f}));
  REQUIRE_BYTES(mq::onnx::pack_integers({-1, -8, 7}, DataType::kInt4), bytes({0x8f, 0x07}));
  REQUIRE_BYTES(mq::onnx::pack_integers({258, 65535}, DataType::kUint16),
                bytes({0x02, 0x01, 0xff, 0xff}));
  REQUIRE_BYTES(mq::onnx::pack_integers({-2}, DataType::kInt32), bytes({0xfe, 0xff, 0xff, 0xff}));
  REQUIRE_THROWS_WITH(mq::onnx::pack_integers({16}, DataType::kUint4),
                      Catch::Contains("value[0] = 16") && Catch::Contains("uint4 [0, 15]"));
}

TEST_CASE("onnx export: what a QDQ graph cannot express is refused by site", "[unit]") {
  auto q = preset("w4a8");
  REQUIRE_NOTHROW(mq::check_onnx_expressible(q));
  auto grouped = q;
  mq::apply_quant_override(grouped, R"(weights.mlp.w2={"granularity": "per_group", "group_size": 32})",
                           "test");
  REQUIRE_THROWS_WITH(mq::check_onnx_expressible(grouped),
                      Catch::Contains("mlp.w2") && Catch::Contains("per_group(32)"));
  auto per_channel = q;
  mq::apply_quant_override(per_channel, "activations.mlp.w1.output.granularity=per_channel", "test");
  REQUIRE_THROWS_WITH(mq::check_onnx_expressible(per_channel),
                      Catch::Contains("mlp.w1.output") && Catch::Contains("per_channel"));
  auto six = q;
  mq::apply_quant_override(six, "activations.self_attn.qk_bmm.input.bits=6", "test");
  REQUIRE_THROWS_WITH(mq::check_onnx_expressible(six),
                      Catch::Contains("self_attn.qk_bmm.input") && Catch::Contains("6-bit"));
  // A disabled site is never checked.
  auto off = grouped;
  mq::apply_quant_override(off, "weights.mlp.w2.enabled=false", "test");
  REQUIRE_NOTHROW(mq::check_onnx_expressible(off));
}

TEST_CASE("onnx export: opset 13 for all-8-bit configs, 21 with 16-bit or 4-bit", "[unit]") {
  REQUIRE(mq::onnx_opset_for(preset("w8a8")) == 21);  // 16-bit softmax/norm sites
  REQUIRE(mq::onnx_opset_for(preset("w4a8")) == 21);
  auto all8 = preset("full-w8a8");
  mq::apply_quant_override(all8, "weights.all.bits=8", "test");
  REQUIRE(mq::onnx_opset_for(all8) == 13);
  REQUIRE(mq::onnx_opset_for(preset("fp")) == 13);
}

TEST_CASE("onnx export: only the LLaMA family is built", "[unit]") {
  mq::ModelConfig cfg;
  cfg.arch = mq::Arch::kLlama;
  cfg.hidden_size = 8;
  cfg.num_attention_heads = 2;
  cfg.num_key_value_heads = 1;
  cfg.head_dim = 4;
  REQUIRE_NOTHROW(mq::check_onnx_model(cfg));
  auto gemma = cfg;
  gemma.arch = mq::Arch::kGemma;
  gemma.norm = mq::NormKind::kRmsOnePlus;
  REQUIRE_THROWS_WITH(mq::check_onnx_model(gemma), Catch::Contains("architecture 'gemma'"));
  auto partial = cfg;
  partial.partial_rotary_factor = 0.5;
  REQUIRE_THROWS_WITH(mq::check_onnx_model(partial), Catch::Contains("partial rotary"));
  auto gelu = cfg;
  gelu.hidden_act = mq::Activation::kGeluTanh;
  REQUIRE_THROWS_WITH(mq::check_onnx_model(gelu), Catch::Contains("SiLU"));
}

// ---------------------------------------------------------------------------- (b) model

namespace {

/// Writes qm's ONNX QDQ model and `prompts` under `root`, runs tests/oracle/onnx_logits.py on
/// them and returns its tensors (logits.<k> [T_k, V]); empty (after MQ_SKIP's message) when a
/// Python package is missing.
mq::TensorMap run_onnx_runtime(mq::QuantizedModelImpl& qm, const mq::EncodingTable& table,
                               const std::vector<std::vector<int64_t>>& prompts,
                               const fs::path& root, const std::string& label) {
  mq::OnnxOptions opts;
  opts.producer_version = "test";
  const std::string model_bytes = mq::onnx_qdq_model_bytes(qm, table, opts);
  fs::create_directories(root / "onnx");
  mq::write_file_atomically((root / mq::kOnnxModelFile).string(), model_bytes);
  std::cout << "  " << label << ": opset " << mq::onnx_opset_for(qm.quant_config(), table)
            << ", " << model_bytes.size() << " bytes, "
            << table.ranges_excluding_zero.size() << " ranges excluding 0" << std::endl;
  {
    std::ofstream ids(root / "ids.txt");
    for (const auto& p : prompts) {
      for (size_t t = 0; t < p.size(); ++t) ids << (t ? " " : "") << p[t];
      ids << "\n";
    }
  }
  const auto script = mq::test::source_dir() / "tests" / "oracle" / "onnx_logits.py";
  const std::string cmd = "'" + mq::test::python().string() + "' '" + script.string() + "' '" +
                          (root / mq::kOnnxModelFile).string() + "' '" + (root / "ids.txt").string() +
                          "' '" + (root / "logits.safetensors").string() + "' > '" +
                          (root / "oracle.log").string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::stringstream log;
  log << std::ifstream(root / "oracle.log").rdbuf();
  if (WIFEXITED(status) && WEXITSTATUS(status) == kOracleMissingPackage) {
    [&] { MQ_SKIP("onnx_logits.py: " << log.str()); }();
    return {};
  }
  if (status != 0) FAIL("oracle failed: " << cmd << "\n" << log.str());
  return mq::read_safetensors((root / "logits.safetensors").string(), true);
}

/// Exports `preset` of stories260K, runs ONNX Runtime on `prompts`, compares with the sim.
void check_stories_preset(const fs::path& bin, const std::string& preset_name,
                          const std::vector<std::vector<int64_t>>& prompts) {
  INFO("preset " << preset_name);
  auto subject = mq::test::make_deployed_subject(bin.string(), preset(preset_name), 11);
  mq::QuantizedModel qm = subject.qm;
  const fs::path root = mq::test::scratch_dir("onnx_" + preset_name);
  const auto oracle =
      run_onnx_runtime(*qm, subject.table, prompts, root, "stories260K " + preset_name);
  if (oracle.empty()) return;

  torch::NoGradGuard no_grad;
  int64_t positions = 0, exact = 0, argmax_same = 0;
  double max_onnx = 0.0, max_quant = 0.0, sum_onnx = 0.0, sum_quant = 0.0;
  for (size_t k = 0; k < prompts.size(); ++k) {
    const auto ids = torch::tensor(prompts[k], torch::kInt64).unsqueeze(0);    // [1, T]
    qm->set_quantization(true);
    const torch::Tensor sim = qm->forward(ids)[0];                             // [T, V]
    qm->set_quantization(false);
    const torch::Tensor flt = qm->forward(ids)[0];                             // [T, V]
    qm->set_quantization(true);
    const torch::Tensor got = oracle.at("logits." + std::to_string(k));        // [T, V]
    REQUIRE(got.sizes() == sim.sizes());
    const auto d_onnx = (got.to(torch::kFloat64) - sim.to(torch::kFloat64)).abs();  // [T, V]
    const auto d_quant = (sim.to(torch::kFloat64) - flt.to(torch::kFloat64)).abs();  // [T, V]
    const auto per_pos = std::get<0>(d_onnx.max(-1));                         // [T]
    positions += per_pos.numel();
    exact += (per_pos <= kFpNoise).sum().item<int64_t>();
    argmax_same += (got.argmax(-1) == sim.argmax(-1)).sum().item<int64_t>();
    max_onnx = std::max(max_onnx, d_onnx.max().item<double>());
    max_quant = std::max(max_quant, d_quant.max().item<double>());
    sum_onnx += d_onnx.mean().item<double>() * static_cast<double>(per_pos.numel());
    sum_quant += d_quant.mean().item<double>() * static_cast<double>(per_pos.numel());
  }
  const double exact_frac = static_cast<double>(exact) / static_cast<double>(positions);
  const double argmax_frac = static_cast<double>(argmax_same) / static_cast<double>(positions);
  std::cout << "  stories260K " << preset_name << " ORT vs sim over " << positions
            << " positions: max|d| " << max_onnx << " (bound: max|sim - float| " << max_quant
            << "), mean|d| " << sum_onnx / static_cast<double>(positions) << " (sim - float "
            << sum_quant / static_cast<double>(positions) << "), positions within " << kFpNoise
            << ": " << exact_frac << ", argmax agreement " << argmax_frac << std::endl;
  CHECK(exact_frac >= kMinExactPositions);
  CHECK(argmax_frac >= kMinArgmaxAgreement);
  CHECK(max_onnx <= kFlipBound * max_quant);
  CHECK(sum_onnx <= kMeanRatio * sum_quant);
  mq::remove_tree(root.string());
}

}  // namespace

TEST_CASE("onnx export: stories260K W8A8, W4A8, W4A8-sym in ONNX Runtime give the sim's logits",
          "[model]") {
  const auto bin = mq::test::shared_dir() / "models" / "stories260K" / "stories260K.bin";
  if (!fs::exists(bin)) MQ_SKIP("no stories260K at " << bin.string());
  const fs::path py = mq::test::python();
  if (py.has_parent_path() && !fs::exists(py)) MQ_SKIP("no Python oracle at " << py.string());
  // Token-id prompts (vocab 512): BOS alone, short, medium, long.
  auto gen = at::detail::createCPUGenerator(3);
  std::vector<std::vector<int64_t>> prompts = {{1}};
  for (const int64_t len : {7, 33, 96, 200}) {
    const auto r = torch::randint(3, 512, {len}, gen);
    std::vector<int64_t> p = {1};
    for (int64_t t = 0; t < len - 1; ++t) p.push_back(r[t].item<int64_t>());
    prompts.push_back(p);
  }
  for (const std::string preset_name : {"w8a8", "w4a8", "w4a8-sym"})
    check_stories_preset(bin, preset_name, prompts);
}

// ---------------------------------------------------------------------------- (c) heavy

// SmolLM2-135M-Instruct, issue 5's recorded ONNX Runtime check (its output is kept in
// results/2026-11-22-integer/ort-smollm2/). The stories260K criteria above assume that a
// flipped code is rare; over SmolLM2's 30 layers of 576 channels it is not (the simulation in
// fp64 already disagrees with itself in fp32 on many argmaxes: results/2026-11-22-integer), so
// here the noise floor is measured, as `eval --runtime int` does: the same simulation in fp64.
// ONNX Runtime must be no further from the fp32 simulation than that, with the integer
// runtime's margins:
//   mean|onnx - sim32| <= max(kFloorFactor * mean|sim64 - sim32|, kQuantShare * mean|sim32 - float|)
//   argmax(onnx) = argmax(sim32) at >= (fraction for sim64) - kArgmaxSlack of the positions.
namespace {

constexpr double kFloorFactor = 2.0;    // twice the fp64 simulation's distance
constexpr double kQuantShare = 0.01;    // or 1% of the quantization error
constexpr double kArgmaxSlack = 0.02;   // 2% of positions

/// Token ids of `n` prompts of `len` tokens cut from the start of a text file.
std::vector<std::vector<int64_t>> text_prompts(const mq::Tokenizer& tok, const fs::path& file,
                                               int64_t n, int64_t len) {
  std::stringstream text;
  text << std::ifstream(file).rdbuf();
  const std::string head = text.str().substr(0, 200000);
  const std::vector<int64_t> ids = tok.encode(head);  // [N_ids]
  REQUIRE(static_cast<int64_t>(ids.size()) >= n * len);
  std::vector<std::vector<int64_t>> out;
  for (int64_t k = 0; k < n; ++k)
    out.emplace_back(ids.begin() + k * len, ids.begin() + (k + 1) * len);
  return out;
}

}  // namespace

TEST_CASE("onnx export: SmolLM2-135M-Instruct W8A8 and W4A8 in ONNX Runtime, within the sim's "
          "fp64 noise floor", "[heavy]") {
  const auto gguf = mq::test::models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(gguf)) MQ_SKIP("no SmolLM2-135M-Instruct at " << gguf.string());
  const auto text = mq::test::shared_dir() / "data" / "wikitext2" / "wiki.test.raw.txt";
  if (!fs::exists(text)) MQ_SKIP("no WikiText-2 test text at " << text.string());
  const fs::path py = mq::test::python();
  if (py.has_parent_path() && !fs::exists(py)) MQ_SKIP("no Python oracle at " << py.string());
  for (const std::string preset_name : {"w8a8", "w4a8"}) {
    INFO("preset " << preset_name);
    auto subject = mq::test::make_deployed_subject(gguf.string(), preset(preset_name), 11);
    mq::QuantizedModel qm = subject.qm;
    const auto prompts = text_prompts(*subject.lm.tokenizer, text, 4, 128);
    const fs::path root = mq::test::scratch_dir("onnx_smollm2_" + preset_name);
    const auto oracle =
        run_onnx_runtime(*qm, subject.table, prompts, root, "SmolLM2 " + preset_name);
    if (oracle.empty()) return;
    torch::NoGradGuard no_grad;
    int64_t positions = 0, argmax_onnx = 0, argmax_64 = 0;
    double sum_onnx = 0.0, sum_64 = 0.0, sum_quant = 0.0, max_onnx = 0.0, max_64 = 0.0;
    for (size_t k = 0; k < prompts.size(); ++k) {
      const auto ids = torch::tensor(prompts[k], torch::kInt64).unsqueeze(0);  // [1, T]
      qm->set_quantization(false);
      const torch::Tensor flt = qm->forward(ids)[0].to(torch::kFloat64);      // [T, V]
      qm->set_quantization(true);
      const torch::Tensor sim = qm->forward(ids)[0];                          // [T, V] fp32
      qm->to(torch::kFloat64);
      qm->invalidate_weight_cache();
      const torch::Tensor sim64 = qm->forward(ids)[0];                        // [T, V] fp64
      qm->to(torch::kFloat32);
      qm->invalidate_weight_cache();
      const torch::Tensor got = oracle.at("logits." + std::to_string(k));     // [T, V]
      REQUIRE(got.sizes() == sim.sizes());
      const auto s32 = sim.to(torch::kFloat64);                               // [T, V]
      const auto d_onnx = (got.to(torch::kFloat64) - s32).abs();              // [T, V]
      const auto d_64 = (sim64 - s32).abs();                                  // [T, V]
      const double n = static_cast<double>(sim.size(0));
      positions += sim.size(0);
      argmax_onnx += (got.argmax(-1) == sim.argmax(-1)).sum().item<int64_t>();
      argmax_64 += (sim64.argmax(-1) == sim.argmax(-1)).sum().item<int64_t>();
      sum_onnx += d_onnx.mean().item<double>() * n;
      sum_64 += d_64.mean().item<double>() * n;
      sum_quant += (s32 - flt).abs().mean().item<double>() * n;
      max_onnx = std::max(max_onnx, d_onnx.max().item<double>());
      max_64 = std::max(max_64, d_64.max().item<double>());
    }
    const double p = static_cast<double>(positions);
    std::cout << "  SmolLM2 " << preset_name << " over " << positions << " positions: ORT vs sim "
              << "mean|d| " << sum_onnx / p << " max " << max_onnx << ", argmax " << argmax_onnx / p
              << "; sim fp64 vs fp32 mean|d| " << sum_64 / p << " max " << max_64 << ", argmax "
              << argmax_64 / p << "; sim vs float mean|d| " << sum_quant / p << std::endl;
    CHECK(sum_onnx <= std::max(kFloorFactor * sum_64, kQuantShare * sum_quant));
    CHECK(static_cast<double>(argmax_onnx) >= static_cast<double>(argmax_64) - kArgmaxSlack * p);
    mq::remove_tree(root.string());
  }
}
