// tests/export/test_export_check.cpp
// The export linter (export/export_check.h): a valid export has no finding, and for every rule
// a copy of it broken in exactly that way is reported under that rule, naming the file and the
// key. Edited JSON files get their checksums re-stamped (export_fixture.h) so that the content
// rule, not the checksum, has to catch them; the checksum rule has its own tests.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "mobilequant/core/file_util.h"
#include "mobilequant/export/aimet_encodings.h"
#include "mobilequant/export/export_files.h"
#include "mobilequant/export/reference_files.h"
#include "tests/export/export_fixture.h"

namespace fs = std::filesystem;
using mq::CheckRule;
using mq::test::broken_export;
using mq::test::has_finding;
using nlohmann::json;

namespace {

const std::string kV061 = std::string("aimet/") + mq::kAimet061File;
const std::string kV100 = std::string("aimet/") + mq::kAimet100File;
const std::string kAct = std::string("reference/") + mq::kActDictFile;
const std::string kQcfg = std::string("reference/") + mq::kDefaultQcfgFile;

/// Runs the linter; prints the findings on failure.
std::vector<mq::CheckFinding> lint(const fs::path& dir) {
  auto f = mq::check_export(dir.string());
  UNSCOPED_INFO("findings:\n" << mq::format_findings(f));
  return f;
}

/// The 0.6.1 encoding of layer 0's w2 input (8-bit asymmetric at w4a8).
json& w2_input(json& j) {
  return j["activation_encodings"]["model.layers.0.mlp.w2"]["input"]["0"];
}

void done(const fs::path& dir) { mq::remove_tree(dir.parent_path().string()); }

}  // namespace

TEST_CASE("export check: a valid export has no finding", "[unit]") {
  const auto f = lint(mq::test::valid_export());
  REQUIRE(f.empty());
  const auto m = mq::read_export_manifest(mq::test::valid_export().string());
  CHECK(m.files.size() == 9);  // hf 2, reference 2, aimet 2, int 2, onnx 1
  CHECK(m.provenance["git_revision"] == "test");
}

TEST_CASE("export check rule manifest: a broken export.json", "[unit]") {
  const auto dir = mq::test::export_copy("manifest");
  auto j = mq::test::read_json_file(dir / mq::kExportManifestFile);
  j.erase("quant");
  mq::test::write_json_file(dir / mq::kExportManifestFile, j);
  auto f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kManifest, mq::kExportManifestFile));
  CHECK_THAT(f[0].message, Catch::Contains("quant"));
  // A format's file that the manifest does not list.
  j = mq::test::read_json_file(mq::test::valid_export() / mq::kExportManifestFile);
  j["files"].erase(kV100);
  mq::test::write_json_file(dir / mq::kExportManifestFile, j);
  f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kManifest, mq::kExportManifestFile, "files." + kV100));
  fs::remove(dir / mq::kExportManifestFile);
  REQUIRE(has_finding(lint(dir), CheckRule::kManifest, mq::kExportManifestFile));
  done(dir);
}

TEST_CASE("export check rule missing_file: a listed file is gone", "[unit]") {
  const auto dir = mq::test::export_copy("missing");
  fs::remove(dir / kAct);
  REQUIRE(has_finding(lint(dir), CheckRule::kMissingFile, kAct));
  done(dir);
}

TEST_CASE("export check rule checksum: an edited and a truncated file", "[unit]") {
  const auto dir = mq::test::export_copy("checksum");
  auto j = mq::test::read_json_file(dir / kV061);
  w2_input(j)["scale"] = w2_input(j)["scale"].get<double>() * 1.0000001;
  mq::test::write_json_file(dir / kV061, j);
  // Same size, different bytes is possible too; here the rewrite changes both: accept either.
  auto f = lint(dir);
  REQUIRE((has_finding(f, CheckRule::kChecksum, kV061, "sha256") ||
           has_finding(f, CheckRule::kChecksum, kV061, "bytes")));
  // One byte flipped in place: same size, so the SHA-256 catches it.
  {
    std::fstream io(dir / "hf" / "model.safetensors",
                    std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(-3, std::ios::end);
    io.put('\x7f');
  }
  REQUIRE(has_finding(lint(dir), CheckRule::kChecksum, "hf/model.safetensors", "sha256"));
  fs::resize_file(dir / kQcfg, fs::file_size(dir / kQcfg) / 2);
  f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kChecksum, kQcfg, "bytes"));
  REQUIRE(has_finding(f, CheckRule::kJson, kQcfg));  // and it no longer parses
  done(dir);
}

TEST_CASE("export check rule unlisted_file: a file the manifest does not know", "[unit]") {
  const auto dir = mq::test::export_copy("unlisted");
  std::ofstream(dir / "aimet" / "extra.encodings") << "{}";
  REQUIRE(has_finding(lint(dir), CheckRule::kUnlistedFile, "aimet/extra.encodings"));
  done(dir);
}

TEST_CASE("export check rule json: a truncated JSON file", "[unit]") {
  const auto dir = mq::test::export_copy("json");
  const std::string text = mq::read_file_bytes((dir / kV100).string());
  std::ofstream(dir / kV100, std::ios::trunc) << text.substr(0, text.size() / 3);
  mq::test::restamp(dir);
  const auto f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kJson, kV100));
  REQUIRE_FALSE(has_finding(f, CheckRule::kChecksum, kV100));
  done(dir);
}

TEST_CASE("export check rule schema: wrong version and missing keys", "[unit]") {
  auto dir = broken_export("schema_version", kV061, [](json& j) { j["version"] = "0.6.0"; });
  REQUIRE(has_finding(lint(dir), CheckRule::kSchema, kV061, "version"));
  done(dir);
  dir = broken_export("schema_key", kV100, [](json& j) {
    j["activation_encodings"][0].erase("is_sym");
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kSchema, kV100, "activation_encodings."));
  done(dir);
}

TEST_CASE("export check rule coverage: missing, duplicated and unknown encodings", "[unit]") {
  // Missing: a quantized site without encoding (1.0.0).
  std::string removed;
  auto dir = broken_export("coverage_missing", kV100, [&](json& j) {
    removed = j["activation_encodings"][3]["name"];
    j["activation_encodings"].erase(3);
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCoverage, kV100, removed));
  done(dir);
  // Duplicated in 1.0.0's list.
  dir = broken_export("coverage_dup", kV100, [&](json& j) {
    j["param_encodings"].push_back(j["param_encodings"][0]);
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCoverage, kV100,
                      "param_encodings.model.layers.0.input_layernorm.weight"));
  done(dir);
  // Duplicated key in 0.6.1's object (a plain parse would hide it): edit the text.
  dir = mq::test::export_copy("coverage_dupkey");
  {
    std::string text = mq::read_file_bytes((dir / kV061).string());
    const std::string key = "\"model.layers.0.mlp.w2.weight\": [";
    const auto at = text.find(key);
    REQUIRE(at != std::string::npos);
    text.insert(at, "\"model.layers.0.mlp.w2.weight\": [],\n    ");
    std::ofstream(dir / kV061, std::ios::trunc) << text;
    mq::test::restamp(dir);
  }
  REQUIRE(has_finding(lint(dir), CheckRule::kCoverage, kV061,
                      "param_encodings.model.layers.0.mlp.w2.weight"));
  done(dir);
  // An encoding for a tensor that is no site; an act_dict range for an unquantized site.
  dir = broken_export("coverage_unknown", kV061, [](json& j) {
    j["activation_encodings"]["model.layers.0.resid_add_1"]["output"]["0"] = w2_input(j);
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCoverage, kV061, "model.layers.0.resid_add_1"));
  done(dir);
  dir = broken_export("coverage_act", kAct, [](json& j) {
    j.erase("model.layers.1.self_attn.qk_bmm");
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCoverage, kAct,
                      "model.layers.1.self_attn.qk_bmm.input"));
  done(dir);
}

TEST_CASE("export check rule scale: a non-positive or non-finite scale", "[unit]") {
  auto dir = broken_export("scale", kV100,
                           [](json& j) { j["param_encodings"][1]["scale"][2] = -0.5; });
  REQUIRE(has_finding(lint(dir), CheckRule::kScale, kV100, "[2].scale"));
  done(dir);
  dir = broken_export("scale0", kV061, [](json& j) {
    w2_input(j)["scale"] = 0.0;
    w2_input(j)["min"] = 0.0;
    w2_input(j)["max"] = 0.0;
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kScale, kV061, "model.layers.0.mlp.w2.input.0.scale"));
  done(dir);
}

TEST_CASE("export check rule offset: non-integer or outside the bit-width", "[unit]") {
  auto dir = broken_export("offset_frac", kV061, [](json& j) {
    const double s = w2_input(j)["scale"];
    w2_input(j)["offset"] = -3.5;
    w2_input(j)["min"] = -3.5 * s;
    w2_input(j)["max"] = -3.5 * s + 255 * s;
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kOffset, kV061, "mlp.w2.input.0.offset"));
  done(dir);
  dir = broken_export("offset_range", kV061, [](json& j) {
    const double s = w2_input(j)["scale"];
    w2_input(j)["offset"] = -300;  // 8 bits: zero-point 300 is no code
    w2_input(j)["min"] = -300 * s;
    w2_input(j)["max"] = -300 * s + 255 * s;
  });
  auto f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kOffset, kV061, "mlp.w2.input.0.offset"));
  REQUIRE_FALSE(has_finding(f, CheckRule::kMinMax, kV061));
  done(dir);
}

TEST_CASE("export check rule bitwidth: bits, dtype or symmetry against the spec", "[unit]") {
  auto dir = broken_export("bits", kV061, [](json& j) { w2_input(j)["bitwidth"] = 16; });
  REQUIRE(has_finding(lint(dir), CheckRule::kBitwidth, kV061, "mlp.w2.input.0.bitwidth"));
  done(dir);
  dir = broken_export("sym", kV100, [](json& j) { j["activation_encodings"][0]["is_sym"] = true; });
  REQUIRE(has_finding(lint(dir), CheckRule::kBitwidth, kV100, "is_sym"));
  done(dir);
}

TEST_CASE("export check rule minmax: min/max disagree with scale/offset", "[unit]") {
  auto dir = broken_export("minmax", kV061, [](json& j) {
    w2_input(j)["min"] = w2_input(j)["min"].get<double>() * 1.01;
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kMinMax, kV061, "mlp.w2.input.0.min"));
  done(dir);
  dir = broken_export("minmax_act", kAct, [](json& j) {
    j["model.layers.0.mlp.w2"]["input"] = {2.0, 1.0};
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kMinMax, kAct, "model.layers.0.mlp.w2.input"));
  done(dir);
}

TEST_CASE("export check rule shape: per-channel entries and tensor shapes", "[unit]") {
  auto dir = broken_export("shape", kV061, [](json& j) {
    j["param_encodings"]["model.layers.1.self_attn.q_proj.weight"].erase(0);
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kShape, kV061,
                      "model.layers.1.self_attn.q_proj.weight"));
  done(dir);
  dir = broken_export("shape_type", kV100, [](json& j) {
    for (auto& e : j["param_encodings"])
      if (e["name"] == "model.layers.0.mlp.w2.weight") e["enc_type"] = "PER_TENSOR";
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kShape, kV100, "model.layers.0.mlp.w2.weight"));
  done(dir);
  // The manifest's shape of a weight differs from the exported model's tensor.
  dir = mq::test::export_copy("shape_hf");
  auto j = mq::test::read_json_file(dir / mq::kExportManifestFile);
  j["model"]["weights"]["model.layers.0.mlp.w1.weight"]["shape"][1] = 7;
  mq::test::write_json_file(dir / mq::kExportManifestFile, j);
  REQUIRE(has_finding(lint(dir), CheckRule::kShape, "hf/model.safetensors",
                      "model.layers.0.mlp.gate_proj.weight"));
  done(dir);
}

TEST_CASE("export check rule cross_file: files that disagree", "[unit]") {
  auto dir = broken_export("cross_act", kAct, [](json& j) {
    auto& r = j["model.layers.0.mlp.w2"]["input"];
    r[1] = r[1].get<double>() * 2;
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCrossFile, kAct, "model.layers.0.mlp.w2.input"));
  done(dir);
  dir = broken_export("cross_qcfg", kQcfg, [](json& j) {
    j["model.layers.1.mlp.w3"]["weight"]["bitwidth"] = "8";
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCrossFile, kQcfg, "model.layers.1.mlp.w3.weight"));
  done(dir);
  dir = broken_export("cross_versions", kV100, [](json& j) {
    for (auto& e : j["activation_encodings"])
      if (e["name"] == "model.layers.0.mlp.w2.input")
        e["offset"][0] = e["offset"][0].get<int64_t>() - 1;
  });
  REQUIRE(has_finding(lint(dir), CheckRule::kCrossFile, kV100, "model.layers.0.mlp.w2.input"));
  done(dir);
}

TEST_CASE("export check rule weights: an encoding the exported weights do not give", "[unit]") {
  // Consistent in itself (min/max follow) and in both versions, but not the weight's range.
  const std::string name = "model.layers.0.self_attn.k_proj.weight";
  auto rescale = [&](json& e) {
    const double s = e["scale"].get<double>() * 1.5;
    const double span = std::ldexp(1.0, e["bitwidth"].get<int>()) - 1;
    e["scale"] = s;
    e["min"] = e["offset"].get<double>() * s;
    e["max"] = e["offset"].get<double>() * s + s * span;
  };
  auto dir = broken_export("weights", kV061,
                           [&](json& j) { rescale(j["param_encodings"][name][0]); });
  {
    auto v061 = mq::test::read_json_file(dir / kV061);
    auto v100 = mq::test::read_json_file(dir / kV100);
    for (auto& e : v100["param_encodings"])
      if (e["name"] == name) e["scale"][0] = v061["param_encodings"][name][0]["scale"];
    mq::test::write_json_file(dir / kV100, v100);
    mq::test::restamp(dir);
  }
  const auto f = lint(dir);
  REQUIRE(has_finding(f, CheckRule::kWeights, kV061, name + "[0]"));
  REQUIRE_FALSE(has_finding(f, CheckRule::kMinMax, kV061));
  REQUIRE_FALSE(has_finding(f, CheckRule::kCrossFile, kV100));
  done(dir);
}

TEST_CASE("export check: every rule has a name and findings print file and key", "[unit]") {
  for (const CheckRule r : mq::EnumValues<CheckRule>::values())
    CHECK(std::string(mq::to_string(r)) != "?");
  mq::CheckFinding f{CheckRule::kMinMax, kV061, "x.min", "min disagrees", "1", "2"};
  CHECK(f.str() == "[minmax] " + kV061 + ": x.min: min disagrees (expected 1, got 2)");
  CHECK(mq::sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(mq::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(mq::sha256_hex(std::string(1000, 'a')) ==
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
}
