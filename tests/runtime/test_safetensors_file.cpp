// tests/runtime/test_safetensors_file.cpp: the torch-free safetensors reader of the runtime.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "mobilequant/core/error.h"
#include "mobilequant/runtime/safetensors_file.h"
#include "tests/runtime/int_model_fixture.h"
#include "tests/support/test_support.h"

using mq::rt::DType;
using mq::rt::SafetensorsFile;

TEST_CASE("SafetensorsFile reads tensors back and checks dtype and shape", "[unit]") {
  const auto dir = mq::test::scratch_dir("st_read");
  const std::string path = (dir / "a.safetensors").string();
  mq::test::write_safetensors(
      path, {{"x", mq::test::raw_tensor<int16_t>("I16", {2, 3}, {1, -2, 3, -4, 5, -32768})},
             {"y", mq::test::raw_tensor<uint8_t>("U8", {4}, {0, 1, 254, 255})},
             {"z", mq::test::raw_tensor<int64_t>("I64", {1}, {int64_t{1} << 40})}});
  const auto f = SafetensorsFile::open(path);
  REQUIRE(f.contains("x"));
  REQUIRE_FALSE(f.contains("__metadata__"));
  REQUIRE(f.read<int16_t>("x", {DType::kI16}, {2, 3}) ==
          std::vector<int16_t>{1, -2, 3, -4, 5, -32768});
  REQUIRE(f.read<int32_t>("y", {DType::kU8, DType::kU16}, {4}) ==
          std::vector<int32_t>{0, 1, 254, 255});
  REQUIRE(f.read<int64_t>("z", {DType::kI64}, {1})[0] == (int64_t{1} << 40));
  REQUIRE_THROWS_WITH(f.read<int32_t>("x", {DType::kI32}, {2, 3}),
                      Catch::Contains("tensor 'x' has dtype I16, expected I32") &&
                          Catch::Contains("a.safetensors"));
  REQUIRE_THROWS_WITH(f.read<int16_t>("x", {DType::kI16}, {3, 2}),
                      Catch::Contains("tensor 'x' has shape [2, 3], expected [3, 2]"));
  REQUIRE_THROWS_WITH(f.read<int16_t>("w", {DType::kI16}, {1}),
                      Catch::Contains("missing tensor 'w'"));
  mq::remove_tree(dir.string());
}

TEST_CASE("SafetensorsFile refuses truncated files and bad headers", "[unit]") {
  const auto dir = mq::test::scratch_dir("st_trunc");
  const std::string path = (dir / "t.safetensors").string();
  mq::test::write_safetensors(path,
                              {{"x", mq::test::raw_tensor<int32_t>("I32", {4}, {1, 2, 3, 4})}});
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 3);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(path),
                      Catch::Contains("truncated") && Catch::Contains("'x'"));
  std::filesystem::resize_file(path, 20);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Catch::Contains("truncated"));
  std::filesystem::resize_file(path, 4);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Catch::Contains("truncated"));
  mq::test::write_safetensors(path, {{"x", mq::test::raw_tensor<int32_t>("F16", {2}, {1})}});
  REQUIRE_THROWS_WITH(SafetensorsFile::open(path), Catch::Contains("dtype 'F16'"));
  REQUIRE_THROWS_AS(SafetensorsFile::open((dir / "none.safetensors").string()), mq::Error);
  mq::remove_tree(dir.string());
}
