// tests/io/test_gguf_reader.cpp
// GgufReader on small GGUF files written by the tiny writer below: every metadata value type
// and its typed getters, alignment, every dequantizable tensor type against values computed
// by hand (dyadic scales, so every product is exact), and every malformed-file case on its
// message; a tiny llama file through read_gguf_checkpoint (HF names, config, q/k un-permute,
// the GPT-2 BPE tokenizer). One [model] case checks every block type bit for bit against gguf-py's dequantizer
// on random blocks (tests/oracle/smollm2_oracle.py random-types).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mobilequant/core/error.h"
#include "mobilequant/io/bpe_tokenizer.h"
#include "mobilequant/io/gguf_reader.h"
#include "mobilequant/models/model_loader.h"
#include "tests/support/test_support.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

// fp16 bit patterns of the dyadic scales used below.
constexpr uint16_t kHalfHalf = 0x3800;      // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;   // 0.25
constexpr uint16_t kHalfMinusTwo = 0xC000;  // -2.0
constexpr uint16_t kHalfOnePointFive = 0x3E00;  // 1.5

/// Removes a scratch directory when the test case (or section run) ends, pass or fail.
struct RemoveOnExit {
  fs::path dir;
  ~RemoveOnExit() {
    try {
      mq::remove_tree(dir.string());
    } catch (const mq::Error&) {  // a destructor must not throw; the temp dir stays behind
    }
  }
};

/// Little-endian byte sink.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.append(raw, sizeof(T));
    return *this;
  }
  Bytes& str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
    return *this;
  }
};

/// One tensor of a test file: ggml dims, type number and stored bytes.
struct TestTensor {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  std::string data;
  int64_t offset_override = -1;  // write this offset instead of the computed one
};

/// A tiny GGUF writer: metadata entries are pre-serialized (key, type, value) blobs.
struct TestGguf {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::vector<std::string> kvs;
  std::vector<TestTensor> tensors;
  uint64_t alignment = 32;  // must match general.alignment when that key is added

  template <typename T>
  void kv(const std::string& key, mq::GgufType type, T value) {
    Bytes e;
    e.str(key).put<uint32_t>(static_cast<uint32_t>(type)).put<T>(value);
    kvs.push_back(e.b);
  }
  void kv_string(const std::string& key, const std::string& value) {
    Bytes e;
    e.str(key).put<uint32_t>(static_cast<uint32_t>(mq::GgufType::kString)).str(value);
    kvs.push_back(e.b);
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& values) {
    Bytes e;
    e.str(key).put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(values.size());
    for (const auto& v : values) e.str(v);
    kvs.push_back(e.b);
  }
  template <typename T>
  void kv_array(const std::string& key, mq::GgufType elem, const std::vector<T>& values) {
    Bytes e;
    e.str(key).put<uint32_t>(9).put<uint32_t>(static_cast<uint32_t>(elem)).put<uint64_t>(values.size());
    for (const auto& v : values) e.put<T>(v);
    kvs.push_back(e.b);
  }

  std::string serialize() const {
    Bytes out;
    out.b += magic;
    out.put<uint32_t>(version).put<uint64_t>(tensors.size()).put<uint64_t>(kvs.size());
    for (const auto& e : kvs) out.b += e;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors) {
      out.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t n : t.ne) out.put<uint64_t>(n);
      out.put<uint32_t>(t.type);
      const uint64_t off = t.offset_override >= 0 ? static_cast<uint64_t>(t.offset_override) : offset;
      out.put<uint64_t>(off);
      offsets.push_back(off);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    while (out.b.size() % alignment != 0) out.b += '\0';
    const size_t data_start = out.b.size();
    for (size_t k = 0; k < tensors.size(); ++k) {
      if (tensors[k].offset_override >= 0) continue;
      out.b.resize(std::max(out.b.size(), data_start + offsets[k]), '\0');
      out.b += tensors[k].data;
    }
    while (out.b.size() % alignment != 0) out.b += '\0';
    return out.b;
  }
};

std::string write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  return path.string();
}

/// A valid file with one metadata key and one F32 tensor 'w' [2, 4] (= 0..7).
TestGguf small_file() {
  TestGguf g;
  g.kv_string("general.architecture", "llama");
  Bytes d;
  for (int k = 0; k < 8; ++k) d.put<float>(static_cast<float>(k));
  g.tensors.push_back({"w", {4, 2}, 0, d.b});
  return g;
}

void put_half(Bytes& b, uint16_t h) { b.put<uint16_t>(h); }

// Deterministic small quants for element e of a test block.
int quant4(int e) { return (e * 7 + 3) % 16; }
int quant5(int e) { return (e * 11 + 5) % 32; }
int quant6(int e) { return (e * 13 + 7) % 64; }
int quant8(int e) { return (e * 37 + 11) % 256 - 128; }

// Packs 32 4-bit quants as ggml's 16 bytes: element j in the low nibble of byte j (j < 16),
// element j + 16 in its high nibble.
void pack_nibbles32(Bytes& b, const int* q) {
  for (int j = 0; j < 16; ++j) b.put<uint8_t>(static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4)));
}

// The fifth bits of 32 quants as a little-endian u32 (bit j = element j).
uint32_t fifth_bits(const int* q) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  return qh;
}

// Packs 8 six-bit scales and 8 six-bit mins the way Q4_K/Q5_K store them in 12 bytes.
void pack_k_scales(Bytes& b, const int* sc, const int* mn) {
  uint8_t s[12] = {};
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  for (uint8_t v : s) b.put<uint8_t>(v);
}

// Builds one block of `type` and the values it must dequantize to.
void make_block(mq::GgmlType type, Bytes& b, std::vector<float>& expect) {
  using T = mq::GgmlType;
  switch (type) {
    case T::kQ4_0: {
      int q[32];
      for (int e = 0; e < 32; ++e) q[e] = quant4(e);
      put_half(b, kHalfHalf);
      pack_nibbles32(b, q);
      for (int e = 0; e < 32; ++e) expect.push_back(0.5f * static_cast<float>(q[e] - 8));
      break;
    }
    case T::kQ4_1: {
      int q[32];
      for (int e = 0; e < 32; ++e) q[e] = quant4(e);
      put_half(b, kHalfHalf);
      put_half(b, kHalfMinusTwo);
      pack_nibbles32(b, q);
      for (int e = 0; e < 32; ++e) expect.push_back(0.5f * static_cast<float>(q[e]) - 2.0f);
      break;
    }
    case T::kQ5_0:
    case T::kQ5_1: {
      int q[32];
      for (int e = 0; e < 32; ++e) q[e] = quant5(e);
      put_half(b, kHalfQuarter);
      if (type == T::kQ5_1) put_half(b, kHalfOnePointFive);
      b.put<uint32_t>(fifth_bits(q));
      pack_nibbles32(b, q);
      for (int e = 0; e < 32; ++e) {
        expect.push_back(type == T::kQ5_0 ? 0.25f * static_cast<float>(q[e] - 16)
                                          : 0.25f * static_cast<float>(q[e]) + 1.5f);
      }
      break;
    }
    case T::kQ8_0: {
      put_half(b, kHalfQuarter);
      for (int e = 0; e < 32; ++e) b.put<int8_t>(static_cast<int8_t>(quant8(e)));
      for (int e = 0; e < 32; ++e) expect.push_back(0.25f * static_cast<float>(quant8(e)));
      break;
    }
    case T::kQ4_K:
    case T::kQ5_K: {
      // 8 sub-blocks of 32; sub-block j: value = 0.5*sc[j]*q - 0.25*mn[j]; scales use all 6 bits.
      const int sc[8] = {1, 63, 17, 40, 33, 2, 58, 9};
      const int mn[8] = {0, 5, 63, 48, 16, 31, 1, 60};
      const bool five = type == T::kQ5_K;
      int q[256];
      for (int e = 0; e < 256; ++e) q[e] = five ? quant5(e) : quant4(e);
      put_half(b, kHalfHalf);
      put_half(b, kHalfQuarter);
      pack_k_scales(b, sc, mn);
      if (five) {  // qh[l] bit j = fifth bit of element 32j + l
        for (int l = 0; l < 32; ++l) {
          uint8_t h = 0;
          for (int j = 0; j < 8; ++j) h |= static_cast<uint8_t>(((q[32 * j + l] >> 4) & 1) << j);
          b.put<uint8_t>(h);
        }
      }
      // 4 chunks of 32 bytes: chunk c holds sub-block 2c (low nibbles) and 2c+1 (high).
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          b.put<uint8_t>(static_cast<uint8_t>((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4)));
        }
      }
      for (int e = 0; e < 256; ++e) {
        const int j = e / 32;
        expect.push_back(0.5f * static_cast<float>(sc[j]) * static_cast<float>(q[e]) -
                         0.25f * static_cast<float>(mn[j]));
      }
      break;
    }
    case T::kQ6_K: {
      // Element e = 128h + 32g + l with g = 2k + c takes nibble k of ql[64h + 32c + l] and bits
      // 2g..2g+1 of qh[32h + l]; value = 0.5 * scale[e/16] * (q - 32).
      int q[256];
      for (int e = 0; e < 256; ++e) q[e] = quant6(e);
      uint8_t ql[128] = {}, qh[64] = {};
      for (int e = 0; e < 256; ++e) {
        const int h = e / 128, g = (e % 128) / 32, l = e % 32, k = g / 2, c = g % 2;
        ql[64 * h + 32 * c + l] |= static_cast<uint8_t>((q[e] & 15) << (4 * k));
        qh[32 * h + l] |= static_cast<uint8_t>(((q[e] >> 4) & 3) << (2 * g));
      }
      const int8_t scales[16] = {1, -1, 2, -3, 5, -8, 13, -21, 34, -55, 89, -128, 127, 0, 7, -7};
      for (uint8_t v : ql) b.put<uint8_t>(v);
      for (uint8_t v : qh) b.put<uint8_t>(v);
      for (int8_t s : scales) b.put<int8_t>(s);
      put_half(b, kHalfHalf);
      for (int e = 0; e < 256; ++e) {
        expect.push_back(0.5f * static_cast<float>(scales[e / 16]) * static_cast<float>(q[e] - 32));
      }
      break;
    }
    default:
      FAIL("no block builder for this type");
  }
}

}  // namespace

TEST_CASE("gguf: every metadata value type and the typed getters", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_meta");
  RemoveOnExit cleanup{dir};
  using G = mq::GgufType;
  TestGguf g;
  g.kv<uint8_t>("t.u8", G::kUint8, 200);
  g.kv<int8_t>("t.i8", G::kInt8, -100);
  g.kv<uint16_t>("t.u16", G::kUint16, 60000);
  g.kv<int16_t>("t.i16", G::kInt16, -30000);
  g.kv<uint32_t>("t.u32", G::kUint32, 4000000000u);
  g.kv<int32_t>("t.i32", G::kInt32, -2000000000);
  g.kv<float>("t.f32", G::kFloat32, 1e-5f);
  g.kv<uint8_t>("t.bool", G::kBool, 1);
  g.kv_string("t.str", "héllo");
  g.kv<uint64_t>("t.u64", G::kUint64, 1ull << 40);
  g.kv<int64_t>("t.i64", G::kInt64, -(1ll << 40));
  g.kv<double>("t.f64", G::kFloat64, 0.1);
  g.kv_strings("t.strs", {"a", "", "<|im_start|>", "Ġthe"});
  g.kv_array<int32_t>("t.i32s", G::kInt32, {1, -2, 3});
  g.kv_array<uint8_t>("t.u8s", G::kUint8, {7, 255});
  g.kv_array<float>("t.f32s", G::kFloat32, {0.5f, -1.25f});
  g.kv_array<uint8_t>("t.bools", G::kBool, {1, 0});
  {  // array of arrays: [[1, 2], []] of uint16
    Bytes e;
    e.str("t.nested").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(2);
    e.put<uint32_t>(2).put<uint64_t>(2).put<uint16_t>(1).put<uint16_t>(2);
    e.put<uint32_t>(2).put<uint64_t>(0);
    g.kvs.push_back(e.b);
  }
  const auto path = write_file(dir / "meta.gguf", g.serialize());
  mq::GgufReader r(path);

  CHECK(r.version() == 3);
  CHECK(r.alignment() == 32);
  CHECK(r.keys().size() == 18);
  CHECK(r.keys().front() == "t.u8");
  CHECK(r.get_int("t.u8") == 200);
  CHECK(r.get_int("t.i8") == -100);
  CHECK(r.get_int("t.u16") == 60000);
  CHECK(r.get_int("t.i16") == -30000);
  CHECK(r.get_int("t.u32") == 4000000000ll);
  CHECK(r.get_int("t.i32") == -2000000000);
  CHECK(r.get_float("t.f32") == static_cast<double>(1e-5f));
  CHECK(r.get_bool("t.bool"));
  CHECK(r.get_string("t.str") == "héllo");
  CHECK(r.get_int("t.u64") == (1ll << 40));
  CHECK(r.get_int("t.i64") == -(1ll << 40));
  CHECK(r.get_float("t.f64") == 0.1);
  CHECK(r.get_float("t.u8") == 200.0);
  CHECK(r.get_string_array("t.strs") == std::vector<std::string>{"a", "", "<|im_start|>", "Ġthe"});
  CHECK(r.get_int_array("t.i32s") == std::vector<int64_t>{1, -2, 3});
  CHECK(r.get_int_array("t.u8s") == std::vector<int64_t>{7, 255});
  CHECK(r.get_float_array("t.f32s") == std::vector<double>{0.5, -1.25});
  CHECK(r.value("t.bools").us == std::vector<uint64_t>{1, 0});
  const auto& nested = r.value("t.nested");
  REQUIRE(nested.nested.size() == 2);
  CHECK(nested.type_name() == "array[array]");
  CHECK(nested.nested[0].us == std::vector<uint64_t>{1, 2});
  CHECK(nested.nested[1].array_size() == 0);
  CHECK(r.get_int("absent", 7) == 7);
  CHECK(r.get_string("absent", "x") == "x");
  CHECK(r.tensor_infos().empty());

  REQUIRE_THROWS_WITH(r.get_string("t.u32"),
                      Contains("'t.u32'") && Contains("type uint32") && Contains("expected string"));
  REQUIRE_THROWS_WITH(r.get_int("t.str"),
                      Contains("'t.str'") && Contains("type string") && Contains("an integer"));
  REQUIRE_THROWS_WITH(r.get_bool("t.u8"), Contains("'t.u8'") && Contains("expected bool"));
  REQUIRE_THROWS_WITH(r.get_string_array("t.i32s"),
                      Contains("array[int32]") && Contains("expected array[string]"));
  REQUIRE_THROWS_WITH(r.get_int("t.str", 3), Contains("'t.str'"));  // present, wrong type
  REQUIRE_THROWS_WITH(r.get_int("no.such.key"), Contains("missing metadata key 'no.such.key'") &&
                                                    Contains("meta.gguf"));
  REQUIRE_THROWS_WITH(r.tensor("nope"), Contains("no tensor named 'nope'"));
}

TEST_CASE("gguf: tensor shapes are ne reversed, data honours general.alignment", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_align");
  RemoveOnExit cleanup{dir};
  for (uint32_t alignment : {32u, 64u}) {
    TestGguf g;
    g.alignment = alignment;
    if (alignment != 32) g.kv<uint32_t>("general.alignment", mq::GgufType::kUint32, alignment);
    Bytes a, b;
    for (int k = 0; k < 24; ++k) a.put<float>(static_cast<float>(k));
    for (int k = 0; k < 3; ++k) b.put<float>(-static_cast<float>(k));
    g.tensors.push_back({"a", {4, 3, 2}, 0, a.b});  // torch [2, 3, 4]
    g.tensors.push_back({"b", {3}, 0, b.b});        // torch [3]
    const auto path = write_file(dir / "align.gguf", g.serialize());
    mq::GgufReader r(path);
    CHECK(r.alignment() == alignment);
    CHECK(r.data_offset() % alignment == 0);
    REQUIRE(r.tensor_infos().size() == 2);
    CHECK(r.tensor_info("b").offset == alignment * ((96 + alignment - 1) / alignment));
    auto ta = r.tensor("a");  // [2, 3, 4]
    CHECK(ta.sizes() == torch::IntArrayRef({2, 3, 4}));
    CHECK(torch::equal(ta, torch::arange(24, torch::kFloat32).reshape({2, 3, 4})));
    CHECK(torch::equal(r.tensor("b"), torch::tensor({0.0f, -1.0f, -2.0f})));
    CHECK(r.all_tensors().size() == 2);
  }
}

TEST_CASE("gguf: float tensor types F32, F16, BF16, F64 and integer types", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_float");
  RemoveOnExit cleanup{dir};
  TestGguf g;
  Bytes f16, bf16, f64, i8, i32;
  // fp16: 1.5, -0.25, 65504 (max), 2^-24 (smallest subnormal), -0, 1/3 rounded (0x3555)
  for (uint16_t h : {0x3E00, 0xB400, 0x7BFF, 0x0001, 0x8000, 0x3555}) f16.put<uint16_t>(h);
  // bf16: 1.5, -2, 3.0e38-ish (0x7F61), 1e-39-ish subnormal (0x000B), 0, pi (0x4049)
  for (uint16_t h : {0x3FC0, 0xC000, 0x7F61, 0x000B, 0x0000, 0x4049}) bf16.put<uint16_t>(h);
  for (double v : {0.5, -3.0}) f64.put<double>(v);
  for (int8_t v : {-128, 127}) i8.put<int8_t>(v);
  for (int32_t v : {-5, 1 << 20}) i32.put<int32_t>(v);
  g.tensors.push_back({"f16", {3, 2}, 1, f16.b});
  g.tensors.push_back({"bf16", {6}, 30, bf16.b});
  g.tensors.push_back({"f64", {2}, 28, f64.b});
  g.tensors.push_back({"i8", {2}, 24, i8.b});
  g.tensors.push_back({"i32", {2}, 26, i32.b});
  mq::GgufReader r(write_file(dir / "float.gguf", g.serialize()));

  auto h = r.tensor("f16");  // [2, 3]
  REQUIRE(h.sizes() == torch::IntArrayRef({2, 3}));
  auto hv = h.flatten();
  CHECK(hv[0].item<float>() == 1.5f);
  CHECK(hv[1].item<float>() == -0.25f);
  CHECK(hv[2].item<float>() == 65504.0f);
  CHECK(hv[3].item<float>() == std::ldexp(1.0f, -24));
  CHECK(std::signbit(hv[4].item<float>()));
  CHECK(hv[5].item<float>() == 0.333251953125f);
  auto b = r.tensor("bf16");
  auto bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  CHECK(b[0].item<float>() == 1.5f);
  CHECK(b[1].item<float>() == -2.0f);
  CHECK(b[2].item<float>() == bits(0x7F610000u));
  CHECK(b[3].item<float>() == bits(0x000B0000u));
  CHECK(b[5].item<float>() == bits(0x40490000u));
  CHECK(torch::equal(r.tensor("f64"), torch::tensor({0.5f, -3.0f})));
  CHECK(torch::equal(r.tensor("i8"), torch::tensor({-128.0f, 127.0f})));
  CHECK(torch::equal(r.tensor("i32"), torch::tensor({-5.0f, 1048576.0f})));
}

TEST_CASE("gguf: block types Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K dequantize exactly", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_blocks");
  RemoveOnExit cleanup{dir};
  using T = mq::GgmlType;
  const std::vector<T> types{T::kQ4_0, T::kQ4_1, T::kQ5_0, T::kQ5_1,
                             T::kQ8_0, T::kQ4_K, T::kQ5_K, T::kQ6_K};
  TestGguf g;
  std::vector<std::vector<float>> expected;
  for (T type : types) {
    const auto* traits = mq::ggml_type_traits(static_cast<uint32_t>(type));
    REQUIRE(traits != nullptr);
    // Two rows of two blocks each; the second row's blocks are the first's again.
    Bytes b;
    std::vector<float> expect;
    for (int k = 0; k < 2; ++k) make_block(type, b, expect);
    REQUIRE(static_cast<int64_t>(b.b.size()) == 2 * traits->type_size);
    b.b += b.b;
    expect.insert(expect.end(), expect.begin(), expect.end());
    g.tensors.push_back({traits->name, {static_cast<uint64_t>(2 * traits->block_size), 2},
                         static_cast<uint32_t>(type), b.b});
    expected.push_back(expect);
  }
  mq::GgufReader r(write_file(dir / "blocks.gguf", g.serialize()));
  for (size_t k = 0; k < types.size(); ++k) {
    const auto* traits = mq::ggml_type_traits(static_cast<uint32_t>(types[k]));
    INFO("type " << traits->name);
    auto got = r.tensor(traits->name);  // [2, 2 * block_size]
    REQUIRE(got.sizes() == torch::IntArrayRef({2, 2 * traits->block_size}));
    auto want = torch::tensor(expected[k]).reshape({2, 2 * traits->block_size});
    REQUIRE_ALLCLOSE(got, want, 0.0);
  }
}

TEST_CASE("gguf: malformed files fail with one clear message", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_bad");
  RemoveOnExit cleanup{dir};
  const std::string good = small_file().serialize();
  auto open = [&](const std::string& name, const std::string& bytes) {
    return mq::GgufReader(write_file(dir / name, bytes));
  };

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(mq::GgufReader((dir / "none.gguf").string()),
                        Contains("none.gguf") && Contains("cannot open"));
  }
  SECTION("wrong magic") {
    std::string b = good;
    b.replace(0, 4, "GGML");
    REQUIRE_THROWS_WITH(open("magic.gguf", b), Contains("magic.gguf") &&
                                                   Contains("not a GGUF file") &&
                                                   Contains("'GGML'") && Contains("'GGUF'"));
    b.replace(0, 4, std::string("\x00\x01\x02\x03", 4));
    REQUIRE_THROWS_WITH(open("magic2.gguf", b), Contains("magic 0x00010203"));
  }
  SECTION("unsupported version") {
    TestGguf g = small_file();
    g.version = 2;
    REQUIRE_THROWS_WITH(open("v2.gguf", g.serialize()),
                        Contains("unsupported GGUF version 2") && Contains("only version 3"));
    g.version = 4;
    REQUIRE_THROWS_WITH(open("v4.gguf", g.serialize()), Contains("unsupported GGUF version 4"));
  }
  SECTION("truncated header") {
    REQUIRE_THROWS_WITH(open("empty.gguf", ""), Contains("truncated file") && Contains("header"));
    REQUIRE_THROWS_WITH(open("hdr.gguf", good.substr(0, 10)),
                        Contains("truncated file") && Contains("header") &&
                            Contains("the file has 10 bytes"));
  }
  SECTION("truncated metadata") {
    // Header is 24 bytes; the key string of entry #0 starts there.
    REQUIRE_THROWS_WITH(open("meta.gguf", good.substr(0, 24 + 8 + 5)),
                        Contains("truncated file") && Contains("metadata entry #0"));
    REQUIRE_THROWS_WITH(open("meta2.gguf", good.substr(0, 24 + 8 + 20 + 4 + 3)),
                        Contains("truncated file") &&
                            Contains("metadata entry #0 ('general.architecture')"));
  }
  SECTION("truncated tensor info") {
    const size_t kv_end = 24 + 8 + 20 + 4 + 8 + 5;  // key, type, string "llama"
    REQUIRE_THROWS_WITH(open("ti.gguf", good.substr(0, kv_end + 8 + 1 + 4 + 6)),
                        Contains("truncated file") && Contains("tensor info #0 ('w')"));
  }
  SECTION("tensor data beyond the end of the file") {
    REQUIRE_THROWS_WITH(open("data.gguf", good.substr(0, good.size() - 20)),
                        Contains("truncated file") && Contains("tensor 'w'") &&
                            Contains("runs past the end of the file"));
    TestGguf g = small_file();
    g.tensors[0].offset_override = 1 << 20;
    REQUIRE_THROWS_WITH(open("far.gguf", g.serialize()),
                        Contains("tensor 'w'") && Contains("runs past the end"));
  }
  SECTION("unknown tensor type names the type and the tensor") {
    TestGguf g = small_file();
    g.tensors[0].type = 99;
    REQUIRE_THROWS_WITH(open("type.gguf", g.serialize()),
                        Contains("tensor 'w'") && Contains("unknown ggml type 99"));
  }
  SECTION("known but unsupported tensor type fails on dequantization") {
    TestGguf g = small_file();
    g.tensors[0] = {"iq", {256}, 16, std::string(66, '\0')};  // IQ2_XXS
    auto r = open("iq.gguf", g.serialize());
    REQUIRE_THROWS_WITH(r.tensor("iq"), Contains("tensor 'iq'") && Contains("IQ2_XXS") &&
                                            Contains("cannot be dequantized") &&
                                            Contains("Q4_1"));
  }
  SECTION("unknown metadata value type") {
    TestGguf g = small_file();
    g.kv<uint32_t>("x.bad", static_cast<mq::GgufType>(13), 0);
    REQUIRE_THROWS_WITH(open("vt.gguf", g.serialize()),
                        Contains("'x.bad'") && Contains("unknown value type 13"));
  }
  SECTION("duplicate keys and tensor names") {
    TestGguf g = small_file();
    g.kv_string("general.architecture", "gemma");
    REQUIRE_THROWS_WITH(open("dup.gguf", g.serialize()),
                        Contains("duplicate metadata key 'general.architecture'"));
    TestGguf h = small_file();
    h.tensors.push_back(h.tensors[0]);
    REQUIRE_THROWS_WITH(open("dupt.gguf", h.serialize()), Contains("duplicate tensor name 'w'"));
  }
  SECTION("absurd sizes") {
    Bytes hdr;
    hdr.b = "GGUF";
    hdr.put<uint32_t>(3).put<uint64_t>(1ull << 40).put<uint64_t>(0);
    REQUIRE_THROWS_WITH(open("count.gguf", hdr.b + std::string(64, '\0')),
                        Contains("absurd tensor count 1099511627776"));
    Bytes kvh;
    kvh.b = "GGUF";
    kvh.put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1ull << 50);
    REQUIRE_THROWS_WITH(open("kvcount.gguf", kvh.b), Contains("absurd metadata count"));

    TestGguf g = small_file();
    Bytes e;
    e.str("big.array").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(1ull << 60);
    g.kvs.push_back(e.b);
    REQUIRE_THROWS_WITH(open("arr.gguf", g.serialize()),
                        Contains("'big.array'") && Contains("absurd array length"));

    TestGguf s = small_file();
    Bytes se;
    se.str("big.string").put<uint32_t>(8).put<uint64_t>(1ull << 62);
    s.kvs.push_back(se.b);
    REQUIRE_THROWS_WITH(open("str.gguf", s.serialize()),
                        Contains("'big.string'") && Contains("runs past the end"));

    TestGguf t = small_file();
    t.tensors[0].ne = {1ull << 40, 1ull << 40};
    REQUIRE_THROWS_WITH(open("shape.gguf", t.serialize()),
                        Contains("tensor 'w'") && Contains("absurd"));
    t.tensors[0].ne = {1ull << 62, 4};
    REQUIRE_THROWS_WITH(open("shape2.gguf", t.serialize()),
                        Contains("tensor 'w'") && Contains("absurd"));
    t.tensors[0].ne = {2, 2, 2, 1, 1};
    REQUIRE_THROWS_WITH(open("dims.gguf", t.serialize()),
                        Contains("tensor 'w'") && Contains("5 dimensions"));
  }
  SECTION("block size, alignment and offsets") {
    TestGguf g = small_file();
    g.tensors[0] = {"q", {33}, 3, std::string(40, '\0')};  // Q4_1 with 33 columns
    REQUIRE_THROWS_WITH(open("bs.gguf", g.serialize()),
                        Contains("tensor 'q'") && Contains("not a multiple of the block size 32"));
    TestGguf m = small_file();
    m.tensors[0].offset_override = 4;
    REQUIRE_THROWS_WITH(open("off.gguf", m.serialize()),
                        Contains("tensor 'w'") && Contains("not a multiple of the alignment 32"));
    TestGguf a = small_file();
    a.kv<uint32_t>("general.alignment", mq::GgufType::kUint32, 24);
    REQUIRE_THROWS_WITH(open("al.gguf", a.serialize()),
                        Contains("general.alignment must be a power of two, got 24"));
  }
}

TEST_CASE("gguf: dequantizers equal gguf-py bit for bit on random blocks of every type",
          "[model]") {
  const auto python = mq::test::python();
  if (!fs::exists(python)) MQ_SKIP("no Python oracle at " << python << " (run scripts/setup.sh)");
  const auto oracle = mq::test::source_dir() / "tests" / "oracle" / "smollm2_oracle.py";
  auto dir = mq::test::scratch_dir("gguf_random_types");
  RemoveOnExit cleanup{dir};
  const std::string cmd = python.string() + " " + oracle.string() + " random-types - " +
                          dir.string() + " > " + (dir / "oracle.log").string() + " 2>&1";
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(dir / "oracle.log");
    std::stringstream ss;
    ss << log.rdbuf();
    if (ss.str().find("No module named 'gguf'") != std::string::npos) {
      MQ_SKIP("the Python package gguf is not installed in " << python);
    }
    FAIL("oracle failed: " << cmd << "\n" << ss.str());
  }
  mq::GgufReader r((dir / "types.gguf").string());
  std::ifstream index(dir / "tensors.txt");
  std::ifstream data(dir / "tensors.bin", std::ios::binary);
  REQUIRE(index.good());
  std::string line;
  int checked = 0;
  while (std::getline(index, line)) {
    std::istringstream is(line);
    std::string name;
    int64_t offset = 0, ndims = 0;
    is >> name >> offset >> ndims;
    std::vector<int64_t> shape(ndims);
    for (auto& d : shape) is >> d;
    auto want = torch::empty(shape, torch::kFloat32);
    data.seekg(offset * 4);
    data.read(reinterpret_cast<char*>(want.data_ptr<float>()), want.numel() * 4);
    REQUIRE(data.good());
    INFO("tensor " << name);
    auto got = r.tensor(name);
    REQUIRE(got.sizes() == want.sizes());
    // Bitwise: compare the int32 views.
    auto mismatches = (got.view(torch::kInt32) != want.view(torch::kInt32)).sum().item<int64_t>();
    INFO(mq::test::describe_max_diff(got, want));
    CHECK(mismatches == 0);
    ++checked;
  }
  CHECK(checked == 11);
}

namespace {

/// GPT-2's byte alphabet, spelled independently of the library: printable Latin-1 bytes are
/// themselves, the other 68 bytes become U+0100.. in byte order.
std::vector<std::string> byte_alphabet() {
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[b] = s;
  }
  return out;
}

/// An F32 tensor's bytes from a torch tensor (row-major; ggml ne is its shape reversed).
std::string f32_bytes(const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kFloat32);
  return std::string(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * 4);
}

/// llama.cpp's converter permute of q/k rows (HF half-split -> Meta interleaved), per head:
/// rows [n_head, 2, half] are stored as [n_head, half, 2].
torch::Tensor llama_cpp_permute(const torch::Tensor& w, int64_t n_head) {
  const int64_t half = w.size(0) / n_head / 2;
  return w.reshape({n_head, 2, half, w.size(1)}).transpose(1, 2).reshape(w.sizes()).contiguous();
}

/// A tiny llama GGUF (1 block, hidden 8, 2 heads of 4, 1 kv head, ffn 16) with a GPT-2 BPE
/// vocabulary: the 256 byte tokens, "Ġt", "he", "Ġthe" and the control token <|im_start|>.
/// `hf` receives the Hugging Face tensors the file encodes.
TestGguf tiny_llama(mq::TensorMap& hf) {
  using G = mq::GgufType;
  TestGguf g;
  g.kv_string("general.architecture", "llama");
  g.kv<uint32_t>("llama.embedding_length", G::kUint32, 8);
  g.kv<uint32_t>("llama.feed_forward_length", G::kUint32, 16);
  g.kv<uint32_t>("llama.block_count", G::kUint32, 1);
  g.kv<uint32_t>("llama.attention.head_count", G::kUint32, 2);
  g.kv<uint32_t>("llama.attention.head_count_kv", G::kUint32, 1);
  g.kv<uint32_t>("llama.context_length", G::kUint32, 64);
  g.kv<uint32_t>("llama.rope.dimension_count", G::kUint32, 4);
  g.kv<float>("llama.rope.freq_base", G::kFloat32, 100000.0f);
  g.kv<float>("llama.attention.layer_norm_rms_epsilon", G::kFloat32, 1e-5f);
  std::vector<std::string> tokens = byte_alphabet();
  for (const char* t : {"Ġt", "he", "Ġthe", "<|im_start|>"}) tokens.push_back(t);
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  g.kv_string("tokenizer.ggml.model", "gpt2");
  g.kv_string("tokenizer.ggml.pre", "smollm");
  g.kv_strings("tokenizer.ggml.tokens", tokens);
  g.kv_strings("tokenizer.ggml.merges", {"Ġ t", "h e", "Ġt he"});
  g.kv_array<int32_t>("tokenizer.ggml.token_type", G::kInt32, types);
  g.kv<uint32_t>("tokenizer.ggml.bos_token_id", G::kUint32, 259);
  g.kv<uint32_t>("tokenizer.ggml.eos_token_id", G::kUint32, 259);
  g.kv<uint8_t>("tokenizer.ggml.add_bos_token", G::kBool, 0);

  const int64_t vocab = static_cast<int64_t>(tokens.size());
  torch::manual_seed(7);
  auto add = [&](const std::string& gguf, const std::string& name, torch::Tensor w,
                 torch::Tensor stored = {}) {
    hf[name] = w;
    if (!stored.defined()) stored = w;
    std::vector<uint64_t> ne(stored.sizes().rbegin(), stored.sizes().rend());
    g.tensors.push_back({gguf, ne, 0, f32_bytes(stored)});
  };
  add("token_embd.weight", "model.embed_tokens.weight", torch::randn({vocab, 8}));
  auto q = torch::randn({8, 8});  // [heads*head_dim, C]
  auto k = torch::randn({4, 8});  // [kv_heads*head_dim, C]
  add("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", q, llama_cpp_permute(q, 2));
  add("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", k, llama_cpp_permute(k, 1));
  add("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", torch::randn({4, 8}));
  add("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", torch::randn({8, 8}));
  add("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight", torch::randn({16, 8}));
  add("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight", torch::randn({16, 8}));
  add("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", torch::randn({8, 16}));
  add("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", torch::rand({8}));
  add("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight", torch::rand({8}));
  add("output_norm.weight", "model.norm.weight", torch::rand({8}));
  return g;
}

}  // namespace

TEST_CASE("gguf checkpoint: a tiny llama maps to HF names, config, un-permuted q/k, BPE", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_tiny_llama");
  RemoveOnExit cleanup{dir};
  mq::TensorMap hf;
  const auto path = write_file(dir / "tiny.gguf", tiny_llama(hf).serialize());
  const mq::Checkpoint ckpt = mq::read_gguf_checkpoint(path, "");

  CHECK(ckpt.format == "gguf");
  const mq::ModelConfig& c = ckpt.config;
  CHECK(c.arch == mq::Arch::kLlama);
  CHECK(c.vocab_size == 260);
  CHECK(c.hidden_size == 8);
  CHECK(c.intermediate_size == 16);
  CHECK(c.num_hidden_layers == 1);
  CHECK(c.num_attention_heads == 2);
  CHECK(c.num_key_value_heads == 1);
  CHECK(c.head_dim == 4);
  CHECK(c.max_position_embeddings == 64);
  CHECK(c.rope_theta == 100000.0);
  CHECK(c.norm_eps == static_cast<double>(1e-5f));
  CHECK(c.tie_word_embeddings);
  CHECK(c.bos_token_id == 259);
  REQUIRE(ckpt.tensors.size() == hf.size());
  for (const auto& [name, want] : hf) {
    INFO("tensor " << name);
    REQUIRE(ckpt.tensors.count(name) == 1);
    REQUIRE_ALLCLOSE(ckpt.tensors.at(name), want, 0.0);
  }
  REQUIRE_NOTHROW(mq::build_model(ckpt));

  REQUIRE(ckpt.tokenizer != nullptr);
  const auto* bpe = dynamic_cast<const mq::BpeTokenizer*>(ckpt.tokenizer.get());
  REQUIRE(bpe != nullptr);
  CHECK(bpe->vocab_size() == 260);
  CHECK(bpe->bos_id() == 259);
  CHECK_FALSE(bpe->adds_bos());
  // "the": h+e merges (rank 1); " the": Ġ+t (rank 0), h+e, then Ġt+he (rank 2).
  const int64_t t = 't', he = 257, the = 258, im_start = 259;
  CHECK(bpe->encode("the the") == std::vector<int64_t>{t, he, the});
  CHECK(bpe->encode("<|im_start|>the") == std::vector<int64_t>{im_start, t, he});
  CHECK(bpe->encode("<|im_start") == std::vector<int64_t>{'<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't'});
  CHECK(bpe->decode({im_start, t, he, the}) == "the the");
  CHECK(bpe->decode(bpe->encode("naïve 日本 😀\n")) == "naïve 日本 😀\n");
  CHECK(bpe->pre_tokenize("I'm  fine!! 123abc\n\n x") ==
        std::vector<std::string>{"I", "'m", " ", " fine", "!!", " 123", "abc", "\n\n", " x"});
  CHECK(bpe->pre_tokenize("  ") == std::vector<std::string>{"  "});
  CHECK(bpe->pre_tokenize("a ") == std::vector<std::string>{"a", " "});
  CHECK(bpe->pre_tokenize("é1 ½ 'x'") == std::vector<std::string>{"é", "1", " ½", " '", "x", "'"});
}

TEST_CASE("gguf checkpoint: unsupported files fail naming what is unsupported", "[unit]") {
  auto dir = mq::test::scratch_dir("gguf_ckpt_bad");
  RemoveOnExit cleanup{dir};
  mq::TensorMap hf;
  SECTION("architecture") {
    TestGguf g = tiny_llama(hf);
    g.kvs[0] = [] {
      Bytes e;
      e.str("general.architecture").put<uint32_t>(8).str("gpt2");
      return e.b;
    }();
    REQUIRE_THROWS_WITH(mq::read_gguf_checkpoint(write_file(dir / "arch.gguf", g.serialize()), ""),
                        Contains("unsupported GGUF architecture 'gpt2'") && Contains("arch.gguf"));
  }
  SECTION("pre-tokenizer") {
    TestGguf g = tiny_llama(hf);
    for (auto& kv : g.kvs) {
      if (kv.find("tokenizer.ggml.pre") != std::string::npos) {
        Bytes e;
        e.str("tokenizer.ggml.pre").put<uint32_t>(8).str("llama-bpe");
        kv = e.b;
      }
    }
    REQUIRE_THROWS_WITH(mq::read_gguf_checkpoint(write_file(dir / "pre.gguf", g.serialize()), ""),
                        Contains("'llama-bpe'") && Contains("pre.gguf"));
  }
  SECTION("tensor without a Hugging Face name") {
    TestGguf g = tiny_llama(hf);
    g.tensors.push_back({"blk.0.attn_q_norm.weight", {4}, 0, std::string(16, '\0')});
    REQUIRE_THROWS_WITH(mq::read_gguf_checkpoint(write_file(dir / "qn.gguf", g.serialize()), ""),
                        Contains("'blk.0.attn_q_norm.weight'"));
  }
  SECTION("missing hyperparameter") {
    TestGguf g = tiny_llama(hf);
    g.kvs.erase(g.kvs.begin() + 1);  // llama.embedding_length
    REQUIRE_THROWS_WITH(mq::read_gguf_checkpoint(write_file(dir / "hp.gguf", g.serialize()), ""),
                        Contains("missing metadata key 'llama.embedding_length'"));
  }
}
