// tests/config/test_quant_config.cpp
// config/quant_config.h: every preset in configs/quant/ resolves to the quantizer placement of
// the reference (reference-implementation.md §2 weight table, §3.1 activation table; the
// expectations below are written from those tables, not from the files), the resolved JSON
// round-trips, the printed table, `--set`-style overrides, and every bad input on its message.
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "mobilequant/config/config_json.h"
#include "mobilequant/config/quant_config.h"
#include "mobilequant/core/error.h"
#include "tests/support/test_support.h"

namespace {

using Catch::Contains;
using mq::ActSite;
using mq::Granularity;
using mq::QuantConfig;
using mq::QuantSpec;
using mq::WeightSite;
using nlohmann::json;

/// The presets directory of the repository.
std::string presets_dir() { return (mq::test::source_dir() / "configs" / "quant").string(); }

/// Loads a preset by name.
QuantConfig preset(const std::string& name) { return mq::load_quant_config(name, presets_dir()); }

/// An enabled spec.
QuantSpec on(int64_t bits, bool symmetric, Granularity g) {
  QuantSpec s;
  s.bits = bits;
  s.symmetric = symmetric;
  s.granularity = g;
  return s;
}

constexpr Granularity kTensor = Granularity::kPerTensor;
constexpr Granularity kChannel = Granularity::kPerChannel;

/// The activation sites the reference quantizes (§3.1), with their bits in the paper's W8A8:
/// 16 at the norm inputs, softmax input (qk_bmm.output) and output (pv_bmm.input) and the two
/// residual branches (o_proj.output, mlp.w2.output), 8 elsewhere.
const std::map<std::string, int64_t>& w8a8_act_bits() {
  static const std::map<std::string, int64_t> bits = {
      {"input_layernorm.input", 16},
      {"input_layernorm.output", 8},
      {"self_attn.q_proj.output", 8},
      {"self_attn.k_proj.output", 8},
      {"self_attn.v_proj.output", 8},
      {"self_attn.qk_bmm.input", 8},
      {"self_attn.qk_bmm.input2", 8},
      {"self_attn.qk_bmm.output", 16},
      {"self_attn.pv_bmm.input", 16},
      {"self_attn.pv_bmm.input2", 8},
      {"self_attn.pv_bmm.output", 8},
      {"self_attn.o_proj.output", 16},
      {"post_attention_layernorm.input", 16},
      {"post_attention_layernorm.output", 8},
      {"mlp.w1.output", 8},
      {"mlp.w3.output", 8},
      {"mlp.act_fn.input2", 8},
      {"mlp.act_fn.output", 8},
      {"mlp.w2.input", 8},
      {"mlp.w2.output", 16},
  };
  return bits;
}

/// The expected activation specs: the §3.1 sites at `bits_of(paper bits)`, asymmetric per
/// tensor; every other site off.
template <class F>
std::map<std::string, QuantSpec> acts_from_reference(F bits_of) {
  std::map<std::string, QuantSpec> out;
  for (const auto& [site, bits] : w8a8_act_bits()) out[site] = on(bits_of(bits), false, kTensor);
  return out;
}

/// Weight specs (§2): linears `linear` (w2 `down`), norms 16-bit asymmetric per tensor.
std::map<std::string, QuantSpec> weights_expected(const QuantSpec& linear, const QuantSpec& down) {
  const QuantSpec norm = on(16, false, kTensor);
  return {{"input_layernorm", norm},          {"self_attn.q_proj", linear},
          {"self_attn.k_proj", linear},       {"self_attn.v_proj", linear},
          {"self_attn.o_proj", linear},       {"post_attention_layernorm", norm},
          {"mlp.w1", linear},                 {"mlp.w3", linear},
          {"mlp.w2", down}};
}

/// Requires `got` to be exactly `want` (a disabled site only needs to be disabled: the other
/// fields of a site that stays in float mean nothing).
void require_spec(const std::string& site, const QuantSpec& got, const QuantSpec* want) {
  INFO("site " << site << ": got " << got.describe() << ", want "
               << (want ? want->describe() : std::string("off")));
  if (want == nullptr) {
    REQUIRE_FALSE(got.enabled);
    return;
  }
  REQUIRE(got.enabled);
  REQUIRE(mq::config_to_json(got) == mq::config_to_json(*want));
}

/// Requires every site of `cfg` to match the expectation (sites absent from a map are off).
void require_sites(const QuantConfig& cfg, const std::map<std::string, QuantSpec>& weights,
                   const std::map<std::string, QuantSpec>& acts) {
  for (const WeightSite s : mq::EnumValues<WeightSite>::values()) {
    const auto it = weights.find(mq::to_string(s));
    require_spec(std::string("weights.") + mq::to_string(s), cfg.weight(s),
                 it == weights.end() ? nullptr : &it->second);
  }
  for (const ActSite s : mq::EnumValues<ActSite>::values()) {
    const auto it = acts.find(mq::to_string(s));
    require_spec(std::string("activations.") + mq::to_string(s), cfg.act(s),
                 it == acts.end() ? nullptr : &it->second);
  }
}

/// Parses `text` as a quant config read from "q.json".
QuantConfig parse(const std::string& text) {
  return mq::quant_config_from_json(json::parse(text), "q.json");
}

/// A config with one activation site's spec given as JSON text, e.g. R"({"bits": 17})".
QuantConfig with_act(const std::string& site, const std::string& spec) {
  return parse(R"({"weights": {}, "activations": {")" + site + R"(": )" + spec + "}}");
}

/// A config with one weight site's spec given as JSON text.
QuantConfig with_weight(const std::string& site, const std::string& spec) {
  return parse(R"({"weights": {")" + site + R"(": )" + spec + R"(}, "activations": {}})");
}

const char* const kAllPresets[] = {"w8a8",  "w4a8",  "w4a8-sym", "w8a16",
                                   "w4a16", "full-w8a8", "fp"};

}  // namespace

TEST_CASE("quant presets resolve to the reference placement at every site", "[unit]") {
  const QuantSpec w8 = on(8, false, kTensor);
  const QuantSpec w8_channel = on(8, false, kChannel);
  const QuantSpec w4 = on(4, false, kChannel);
  const QuantSpec w4_sym = on(4, true, kChannel);
  const auto same = [](int64_t b) { return b; };
  const auto all8 = [](int64_t) { return int64_t{8}; };
  const auto all16 = [](int64_t) { return int64_t{16}; };
  struct Case {
    const char* name;
    std::map<std::string, QuantSpec> weights;
    std::map<std::string, QuantSpec> acts;
  };
  const std::vector<Case> cases = {
      {"w8a8", weights_expected(w8, w8_channel), acts_from_reference(same)},
      {"w4a8", weights_expected(w4, w4), acts_from_reference(same)},
      {"w4a8-sym", weights_expected(w4_sym, w4_sym), acts_from_reference(same)},
      {"w8a16", weights_expected(w8, w8_channel), acts_from_reference(all16)},
      {"w4a16", weights_expected(w4, w4), acts_from_reference(all16)},
      {"full-w8a8", weights_expected(w8, w8_channel), acts_from_reference(all8)},
      {"fp", {}, {}},
  };
  REQUIRE(mq::list_quant_presets(presets_dir()) ==
          std::vector<std::string>{"fp", "full-w8a8", "w4a16", "w4a8", "w4a8-sym", "w8a16",
                                   "w8a8"});
  for (const auto& c : cases) {
    INFO("preset " << c.name);
    const QuantConfig cfg = preset(c.name);
    CHECK(cfg.name == c.name);
    CHECK_FALSE(cfg.description.empty());
    CHECK(cfg.any_enabled() == (std::string(c.name) != "fp"));
    require_sites(cfg, c.weights, c.acts);
    // SmolLM2-135M's shapes: hidden 576, intermediate 1536, 9 heads of 64.
    cfg.validate_for_model(576, 1536, 576, c.name);
  }
}

TEST_CASE("quant config JSON round-trips through the resolved form", "[unit]") {
  for (const char* name : kAllPresets) {
    INFO("preset " << name);
    const QuantConfig cfg = preset(name);
    const json j = mq::quant_config_to_json(cfg);
    REQUIRE(j.at("weights").size() == static_cast<size_t>(mq::kNumWeightSites));
    REQUIRE(j.at("activations").size() == static_cast<size_t>(mq::kNumActSites));
    const QuantConfig back = mq::quant_config_from_json(j, "resolved");
    CHECK(back.name == cfg.name);
    CHECK(back.description == cfg.description);
    for (int i = 0; i < mq::kNumWeightSites; ++i) {
      CHECK(mq::config_to_json(back.weights[i]) == mq::config_to_json(cfg.weights[i]));
    }
    for (int i = 0; i < mq::kNumActSites; ++i) {
      CHECK(mq::config_to_json(back.activations[i]) == mq::config_to_json(cfg.activations[i]));
    }
    CHECK(mq::quant_config_to_json(back) == j);
  }
}

TEST_CASE("quant config: a file by path takes its name from the file when it has none",
          "[unit]") {
  const auto dir = mq::test::scratch_dir("quant_config");
  const auto path = (dir / "mine.json").string();
  std::ofstream(path) << R"({"weights": {"default": {"bits": 4, "granularity": "per_group",
      "group_size": 32}, "input_layernorm": {"granularity": "per_tensor", "group_size": 0},
      "post_attention_layernorm": {"enabled": false}}, "activations": {"default":
      {"enabled": false}, "mlp.w2.input": {"enabled": true, "bits": 8}}})";
  const QuantConfig cfg = mq::load_quant_config(path, presets_dir());
  CHECK(cfg.name == "mine");
  CHECK(cfg.weight(WeightSite::kQProj).describe() == "4-bit asym per_group(32)");
  CHECK(cfg.weight(WeightSite::kInputNorm).describe() == "4-bit asym per_tensor");
  CHECK_FALSE(cfg.weight(WeightSite::kPostNorm).enabled);
  CHECK(cfg.act(ActSite::kDownIn).describe() == "8-bit asym per_tensor");
  CHECK_FALSE(cfg.act(ActSite::kDownOut).enabled);
  cfg.validate_for_model(64, 96, 64, "tiny");
  REQUIRE_THROWS_WITH(
      cfg.validate_for_model(64, 80, 64, "tiny"),
      Contains("tiny: weights.mlp.w2: group_size: got 32, which does not divide the input "
               "dimension 80 (intermediate_size)"));
  REQUIRE_THROWS_WITH(cfg.validate_for_model(48, 96, 64, "tiny"),
                      Contains("weights.self_attn.q_proj: group_size: got 32") &&
                          Contains("dimension 48 (hidden_size)"));
  REQUIRE_THROWS_WITH(cfg.validate_for_model(64, 96, 80, "tiny"),
                      Contains("weights.self_attn.o_proj: group_size: got 32") &&
                          Contains("dimension 80 (num_heads * head_dim)"));
  // A non-reference site is off unless listed; listed, it takes "default" under its fields.
  const QuantConfig resid = with_act("resid_add_1.output", R"({"bits": 16})");
  CHECK(resid.act(ActSite::kResidAdd1Out).describe() == "16-bit asym per_tensor");
  CHECK_FALSE(resid.act(ActSite::kResidAdd2Out).enabled);
  CHECK(resid.act(ActSite::kQkBmmOut).describe() == "8-bit asym per_tensor");
  mq::remove_tree(dir.string());
}

TEST_CASE("format_quant_table names the config and every enabled site", "[unit]") {
  for (const char* name : kAllPresets) {
    INFO("preset " << name);
    const QuantConfig cfg = preset(name);
    const std::string table = mq::format_quant_table(cfg);
    CHECK_THAT(table, Contains(std::string("'") + name + "'"));
    for (const WeightSite s : mq::EnumValues<WeightSite>::values()) {
      if (cfg.weight(s).enabled) {
        CHECK_THAT(table, Contains(std::string(mq::to_string(s)) + "  ") &&
                              Contains(cfg.weight(s).describe()));
      }
    }
    for (const ActSite s : mq::EnumValues<ActSite>::values()) {
      if (cfg.act(s).enabled) CHECK_THAT(table, Contains(mq::to_string(s)));
    }
  }
  CHECK_THAT(mq::format_quant_table(preset("w8a8")),
             Contains("self_attn.qk_bmm.output") && Contains("16-bit asym per_tensor") &&
                 Contains("20 of 33"));
}

TEST_CASE("apply_quant_override sets one site or every enabled site with 'all'", "[unit]") {
  QuantConfig cfg = preset("w8a8");
  mq::apply_quant_override(cfg, "activations.self_attn.qk_bmm.output.bits=8", "--set");
  CHECK(cfg.act(ActSite::kQkBmmOut).bits == 8);
  CHECK(cfg.act(ActSite::kPvBmmIn).bits == 16);
  // The longest site name wins: qk_bmm.input2 is not qk_bmm.input followed by "2".
  mq::apply_quant_override(cfg, "activations.self_attn.qk_bmm.input2.bits=12", "--set");
  CHECK(cfg.act(ActSite::kQkBmmIn2).bits == 12);
  CHECK(cfg.act(ActSite::kQkBmmIn).bits == 8);
  mq::apply_quant_override(cfg, "weights.self_attn.q_proj.granularity=per_channel", "--set");
  CHECK(cfg.weight(WeightSite::kQProj).granularity == kChannel);
  mq::apply_quant_override(cfg, "weights.mlp.w2.granularity=per_tensor", "--set");
  CHECK(cfg.weight(WeightSite::kDown).granularity == kTensor);
  mq::apply_quant_override(cfg, "name=mine", "--set");
  CHECK(cfg.name == "mine");

  // A whole spec object: the only way to per_group, whose two fields are valid only together.
  mq::apply_quant_override(cfg, R"(weights.mlp.w1={"granularity": "per_group", "group_size": 64})",
                           "--set");
  CHECK(cfg.weight(WeightSite::kGate).describe() == "8-bit asym per_group(64)");

  // A non-reference site is enabled by name.
  mq::apply_quant_override(cfg, "activations.resid_add_1.output.enabled=true", "--set");
  CHECK(cfg.act(ActSite::kResidAdd1Out).describe() == "8-bit asym per_tensor");

  // "all" touches the enabled sites only.
  mq::apply_quant_override(cfg, "activations.all.bits=16", "--set");
  for (const ActSite s : mq::EnumValues<ActSite>::values()) {
    INFO("site " << s);
    const bool enabled = w8a8_act_bits().count(mq::to_string(s)) > 0 ||
                         s == ActSite::kResidAdd1Out;
    CHECK(cfg.act(s).enabled == enabled);
    if (enabled) CHECK(cfg.act(s).bits == 16);
  }
  mq::apply_quant_override(cfg, "weights.post_attention_layernorm.enabled=false", "--set");
  mq::apply_quant_override(cfg, "weights.all.symmetric=true", "--set");
  for (const WeightSite s : mq::EnumValues<WeightSite>::values()) {
    INFO("site " << s);
    CHECK(cfg.weight(s).symmetric == (s != WeightSite::kPostNorm));
  }
}

TEST_CASE("apply_quant_override rejects bad text naming it and leaves the config unchanged",
          "[unit]") {
  QuantConfig cfg = preset("w8a8");
  const json before = mq::quant_config_to_json(cfg);
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "activations.self_attn.qk.output.bits=8", "--set"),
      Contains("--set 'activations.self_attn.qk.output.bits=8'") &&
          Contains("no site of activations") && Contains("all, input_layernorm.input") &&
          Contains("self_attn.qk_bmm.output"));
  REQUIRE_THROWS_WITH(mq::apply_quant_override(cfg, "weights.mlp.down_proj.bits=4", "--set"),
                      Contains("no site of weights") && Contains("mlp.w2]"));
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "weights.mlp.w2.bitz=4", "--set"),
      Contains("--set 'weights.mlp.w2.bitz=4': weights.mlp.w2: unknown field 'bitz'") &&
          Contains("[enabled, bits, symmetric, granularity, group_size]"));
  REQUIRE_THROWS_WITH(mq::apply_quant_override(cfg, "weight.mlp.w2.bits=4", "--set"),
                      Contains("unknown key 'weight.mlp.w2.bits'") &&
                          Contains("weights.SITE.FIELD"));
  REQUIRE_THROWS_WITH(mq::apply_quant_override(cfg, "weights.mlp.w2.bits", "--set"),
                      Contains("expected key=value"));
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "weights.mlp.w2.bits=eight", "--set"),
      Contains("--set 'weights.mlp.w2.bits=eight': weights.mlp.w2: bits: expected an integer, "
               "got \"eight\""));
  REQUIRE_THROWS_WITH(mq::apply_quant_override(cfg, "weights.mlp.w2.granularity=per_row", "x"),
                      Contains("granularity: got 'per_row', expected one of [per_tensor, "
                               "per_channel, per_group]"));
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "activations.all.bits=17", "--set"),
      Contains("--set 'activations.all.bits=17': activations.input_layernorm.input: bits: got "
               "17, expected 2..16"));
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "weights.mlp.w1.granularity=per_group", "--set"),
      Contains("weights.mlp.w1: group_size: got 0") && Contains("per_group"));
  REQUIRE_THROWS_WITH(
      mq::apply_quant_override(cfg, "activations.self_attn.qk_bmm.output.granularity=per_channel",
                               "--set"),
      Contains("activations.self_attn.qk_bmm.output: granularity: got per_channel, expected "
               "per_tensor"));
  REQUIRE_THROWS_WITH(mq::apply_quant_override(cfg, "weights.mlp.w1=[1]", "--set"),
                      Contains("weights.mlp.w1: expected a JSON object, got [1]"));
  REQUIRE(mq::quant_config_to_json(cfg) == before);

  QuantConfig fp = preset("fp");
  REQUIRE_THROWS_WITH(mq::apply_quant_override(fp, "activations.all.bits=16", "--set"),
                      Contains("activations.all: no site of the group is enabled"));
}

TEST_CASE("quant config files: every bad input names the file and site and the allowed set",
          "[unit]") {
  // Unknown site, listing the allowed ones.
  REQUIRE_THROWS_WITH(with_act("self_attn.qk.output", "{}"),
                      Contains("q.json: activations: unknown site 'self_attn.qk.output'") &&
                          Contains("[default, input_layernorm.input, ") &&
                          Contains("self_attn.qk_bmm.output") && Contains("lm_head.output]"));
  REQUIRE_THROWS_WITH(with_weight("mlp.gate_proj", "{}"),
                      Contains("q.json: weights: unknown site 'mlp.gate_proj'") &&
                          Contains("[default, input_layernorm, self_attn.q_proj"));
  // Unknown key in a spec.
  REQUIRE_THROWS_WITH(with_act("mlp.w2.input", R"({"bist": 8})"),
                      Contains("q.json: activations.mlp.w2.input: unknown key 'bist'; allowed "
                               "keys: [enabled, bits, symmetric, granularity, group_size]"));
  REQUIRE_THROWS_WITH(parse(R"({"weights": {"default": {"bit": 4}}, "activations": {}})"),
                      Contains("q.json: weights.default: unknown key 'bit'"));
  // Bits out of range.
  REQUIRE_THROWS_WITH(with_act("mlp.w2.input", R"({"bits": 1})"),
                      Contains("q.json: activations.mlp.w2.input: bits: got 1, expected 2..16"));
  REQUIRE_THROWS_WITH(with_weight("mlp.w2", R"({"bits": 17})"),
                      Contains("q.json: weights.mlp.w2: bits: got 17, expected 2..16"));
  // group_size and per_group only together.
  REQUIRE_THROWS_WITH(with_weight("self_attn.q_proj", R"({"group_size": 64})"),
                      Contains("q.json: weights.self_attn.q_proj: group_size: got 64") &&
                          Contains("per_tensor"));
  REQUIRE_THROWS_WITH(with_weight("self_attn.q_proj", R"({"granularity": "per_group"})"),
                      Contains("q.json: weights.self_attn.q_proj: group_size: got 0") &&
                          Contains("per_group"));
  // Placement rules.
  REQUIRE_THROWS_WITH(
      with_act("self_attn.qk_bmm.output", R"({"granularity": "per_channel"})"),
      Contains("q.json: activations.self_attn.qk_bmm.output: granularity: got per_channel, "
               "expected per_tensor") &&
          Contains("sequence"));
  REQUIRE_THROWS_WITH(
      with_act("self_attn.pv_bmm.input", R"({"granularity": "per_channel"})"),
      Contains("activations.self_attn.pv_bmm.input: granularity: got per_channel"));
  CHECK(with_act("mlp.w2.input", R"({"granularity": "per_channel"})")
            .act(ActSite::kDownIn)
            .granularity == kChannel);
  REQUIRE_THROWS_WITH(
      with_act("mlp.w2.input", R"({"granularity": "per_group", "group_size": 32})"),
      Contains("q.json: activations.mlp.w2.input: granularity: got per_group, expected one of "
               "[per_tensor, per_channel]"));
  REQUIRE_THROWS_WITH(
      with_weight("post_attention_layernorm", R"({"granularity": "per_channel"})"),
      Contains("q.json: weights.post_attention_layernorm: granularity: got per_channel, "
               "expected per_tensor"));
  // Disabled sites are checked for their fields, not for placement.
  CHECK_FALSE(with_act("self_attn.qk_bmm.output",
                       R"({"enabled": false, "granularity": "per_channel"})")
                  .act(ActSite::kQkBmmOut)
                  .enabled);
  // Ill-typed values.
  REQUIRE_THROWS_WITH(with_act("mlp.w2.input", R"({"bits": "8"})"),
                      Contains("q.json: activations.mlp.w2.input: bits: expected an integer, "
                               "got \"8\""));
  REQUIRE_THROWS_WITH(with_weight("mlp.w2", R"({"enabled": "yes"})"),
                      Contains("q.json: weights.mlp.w2: enabled: expected a boolean"));
  REQUIRE_THROWS_WITH(with_weight("mlp.w2", R"({"granularity": "per_tokn"})"),
                      Contains("q.json: weights.mlp.w2: granularity: got 'per_tokn', expected "
                               "one of [per_tensor, per_channel, per_group]"));
  REQUIRE_THROWS_WITH(with_weight("mlp.w2", R"({"symmetric": 1})"),
                      Contains("weights.mlp.w2: symmetric: expected a boolean"));
  REQUIRE_THROWS_WITH(with_weight("mlp.w2", "8"),
                      Contains("q.json: weights.mlp.w2: expected a JSON object, got 8"));
  REQUIRE_THROWS_WITH(parse(R"({"weights": [], "activations": {}})"),
                      Contains("q.json: weights: expected an object of site specs, got []"));
  REQUIRE_THROWS_WITH(parse(R"({"name": 3, "weights": {}, "activations": {}})"),
                      Contains("q.json: name: expected a string, got 3"));
  REQUIRE_THROWS_WITH(parse("[]"), Contains("q.json: expected a JSON object"));
  // Top-level keys.
  REQUIRE_THROWS_WITH(parse(R"({"weights": {}, "activation": {}})"),
                      Contains("q.json: unknown key 'activation'; allowed keys: [name, "
                               "description, weights, activations]"));
  REQUIRE_THROWS_WITH(parse(R"({"weights": {}})"),
                      Contains("q.json: missing key 'activations'"));
}

TEST_CASE("load_quant_config names an unknown preset and the available ones", "[unit]") {
  REQUIRE_THROWS_WITH(
      mq::load_quant_config("w8a9", presets_dir()),
      Contains("quant config 'w8a9'") && Contains("w8a9.json") &&
          Contains("[fp, full-w8a8, w4a16, w4a8, w4a8-sym, w8a16, w8a8]"));
  REQUIRE_THROWS_WITH(mq::load_quant_config("no/such/file.json", presets_dir()),
                      Contains("quant config 'no/such/file.json'") && Contains("w8a8]"));
  // Errors inside a preset file name the file.
  const auto dir = mq::test::scratch_dir("quant_presets");
  std::ofstream((dir / "bad.json").string())
      << R"({"weights": {}, "activations": {"mlp.w2.output": {"bits": 20}}})";
  REQUIRE_THROWS_WITH(mq::load_quant_config("bad", dir.string()),
                      Contains("bad.json: activations.mlp.w2.output: bits: got 20"));
  mq::remove_tree(dir.string());
}
