// tests/config/test_run_config.cpp
// config/run_config.h and config/train_config.h: nested sections in JSON and `--set a.b=v`,
// the resolution order (defaults <- method <- method's for_quant <- run file <- --set), the
// shipped method configs, and the errors of bad values, each checked on its message.
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "mobilequant/config/config_json.h"
#include "mobilequant/config/run_config.h"
#include "tests/support/test_support.h"

namespace {

using Catch::Contains;

std::string methods() { return (mq::test::source_dir() / "configs" / "methods").string(); }

/// Writes `text` to a temporary file and returns its path.
std::string temp_json(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p.string();
}

}  // namespace

TEST_CASE("Nested config sections read partially from JSON and from --set a.b=v", "[unit]") {
  mq::RunConfig c;
  mq::config_from_json(nlohmann::json::parse(R"({"train": {"epochs": 7, "lrl": {"lr": 1e-7}}})"),
                       c, "x.json");
  CHECK(c.train.epochs == 7);
  CHECK(c.train.lrl.lr == 1e-7);
  CHECK(c.train.lrl.min_lr == 1e-6);  // absent keys keep their value
  CHECK(c.train.batch_size == 1);
  mq::apply_override(c, "train.let.min_lr=2e-4");
  mq::apply_override(c, "train.let_pairs.fc2=false");
  mq::apply_override(c, "calib.samples=32");
  CHECK(c.train.let.min_lr == 2e-4);
  CHECK_FALSE(c.train.let_pairs.fc2);
  CHECK(c.calib.samples == 32);
  REQUIRE_THROWS_WITH(mq::apply_override(c, "train.epoch=3"),
                      Contains("unknown key 'epoch'") && Contains("epochs"));
  REQUIRE_THROWS_WITH(
      mq::config_from_json(nlohmann::json::parse(R"({"train": {"lwc": {"lr": "big"}}})"), c, "x.json"),
      Contains("x.json: train: lwc: lr: expected a number"));
  // Round trip through JSON.
  mq::RunConfig d;
  mq::config_from_json(mq::config_to_json(c), d, "round trip");
  CHECK(mq::config_to_json(d) == mq::config_to_json(c));
}

TEST_CASE("Run configs resolve method, then its for_quant entry, then the file, then --set",
          "[unit]") {
  // mobilequant.json: end to end, LWC 1e-2 -> 1e-3, and 1e-3 -> 1e-4 for w4a8-sym.
  auto c = mq::resolve_run_config("", {"model=m.bin"}, methods());
  CHECK(c.method == "mobilequant");
  CHECK(c.train.trainer == mq::TrainerKind::kEndToEnd);
  CHECK(c.train.lwc.lr == 1e-2);
  CHECK(c.init == mq::QuantMethod::kSmoothQuantEdge);
  c = mq::resolve_run_config("", {"quant=w4a8-sym"}, methods());
  CHECK(c.train.lwc.lr == 1e-3);
  const std::string file = temp_json("mq-run-config.json", R"({"quant": "w4a8-sym",
      "method": "omniquant-edge", "train": {"epochs": 2}, "calib": {"samples": 8}})");
  c = mq::resolve_run_config(file, {"train.epochs=3"}, methods());
  CHECK(c.train.trainer == mq::TrainerKind::kBlockwise);
  CHECK(c.train.let.min_lr == 1e-4);  // for_quant
  CHECK(c.train.epochs == 3);        // --set over the file over the method
  CHECK(c.calib.samples == 8);
  // The float baseline forces its preset.
  c = mq::resolve_run_config(file, {"method=fp"}, methods());
  CHECK(c.quant == "fp");
  CHECK(c.train.trainer == mq::TrainerKind::kNone);
}

TEST_CASE("Run config errors name the key, the value and what is allowed", "[unit]") {
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"method=mobilequnat"}, methods()),
                      Contains("mobilequnat") && Contains("known methods") &&
                          Contains("mobilequant"));
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"train.trainer=e2e"}, methods()),
                      Contains("train: trainer") && Contains("end-to-end"));
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"calib.samples=10", "train.batch_size=4"},
                                             methods()),
                      Contains("calib.samples 10") && Contains("batch_size"));
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"train.epochs=0"}, methods()),
                      Contains("train.epochs: got 0"));
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"method=omniquant-edge", "train.loss=lm"},
                                             methods()),
                      Contains("block-wise"));
  const std::string bad = temp_json("mq-bad-method.json", R"({"description": "x", "model": "m"})");
  REQUIRE_THROWS_WITH(mq::resolve_run_config("", {"method=" + bad}, methods()),
                      Contains("'model' does not belong in a method file"));
}

TEST_CASE("Every shipped method config resolves with every shipped preset", "[unit]") {
  const auto all = mq::list_methods(methods());
  REQUIRE(all.size() >= 9);
  for (const auto& [name, description] : all) {
    INFO(name);
    CHECK_FALSE(description.empty());
    for (const char* quant : {"w8a8", "w4a8", "w4a8-sym"}) {
      const auto c = mq::resolve_run_config("", {"method=" + name, std::string("quant=") + quant},
                                            methods());
      CHECK(c.method == name);
    }
  }
}

TEST_CASE("differing_keys names the dotted keys that differ", "[unit]") {
  const auto a = nlohmann::json::parse(R"({"a": 1, "t": {"x": 1, "y": 2}, "z": 3})");
  const auto b = nlohmann::json::parse(R"({"a": 1, "t": {"x": 5, "y": 2}, "w": 3})");
  CHECK(mq::differing_keys(a, b) == std::vector<std::string>{"t.x", "w", "z"});
  CHECK(mq::differing_keys(a, a).empty());
}
