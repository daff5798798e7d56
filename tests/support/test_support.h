// tests/support/test_support.h
// Shared helpers of the tests: where the sources, the shared models and data and
// the Python oracle are; a skip that ctest reports as skipped; tensor comparison
// that prints the largest difference and where it is.
#pragma once

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include "mobilequant/core/file_util.h"
#include "tests/support/tensor_compare.h"
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <unistd.h>
#include <string>

namespace mq::test {

/// Prints "MQ_SKIP: <why>" (ctest's SKIP_REGULAR_EXPRESSION marks the test skipped) and returns.
#define MQ_SKIP(why)                                   \
  do {                                                 \
    std::cout << "MQ_SKIP: " << why << std::endl;      \
    WARN("skipped: " << why);                          \
    return;                                            \
  } while (0)

/// The repository root ($MQ_SOURCE_DIR, else the compile-time path).
inline std::filesystem::path source_dir() {
  if (const char* env = std::getenv("MQ_SOURCE_DIR")) return env;
  return MQ_SOURCE_DIR;
}

/// The read-only shared folder ($MQ_SHARED_DIR, else ../shared beside the repository).
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("MQ_SHARED_DIR")) return env;
  return source_dir().parent_path() / "shared";
}

/// Where downloaded models live ($MQ_MODELS_DIR, else <repo>/models).
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("MQ_MODELS_DIR")) return env;
  return source_dir() / "models";
}

/// The Python interpreter with the oracles ($MQ_PYTHON, else <repo>/.venv/bin/python).
inline std::filesystem::path python() {
  if (const char* env = std::getenv("MQ_PYTHON")) return env;
  return source_dir() / ".venv" / "bin" / "python";
}

/// A fresh scratch directory under the system temp dir.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("mq_test_" + name + "_" + std::to_string(::getpid()));
  ::mq::remove_tree(dir.string());
  std::filesystem::create_directories(dir);
  return dir;
}

/// Largest |a-b| and the flat index where it occurs, as a printable string.
inline std::string describe_max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto d = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().flatten();
  auto idx = d.argmax().item<int64_t>();
  std::ostringstream os;
  os << "max|diff| = " << d[idx].item<double>() << " at flat index " << idx << " (a="
     << a.flatten()[idx].item<double>() << ", b=" << b.flatten()[idx].item<double>() << ")";
  return os.str();
}

/// Max absolute difference of two tensors of the same shape.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace mq::test

/// Requires |a-b| <= atol elementwise, printing the worst element on failure.
#define REQUIRE_ALLCLOSE(a, b, atol)                                               \
  do {                                                                             \
    INFO(::mq::test::describe_max_diff((a), (b)) << ", tolerance " << (atol));     \
    REQUIRE(::mq::test::max_abs_diff((a), (b)) <= (atol));                         \
  } while (0)
