// mobilequant/config/eval_config.cpp: EvalTask names and EvalConfig::validate.
#include "mobilequant/config/eval_config.h"

#include <cctype>

#include "mobilequant/core/error.h"

namespace mq {

const char* to_string(EvalTask task) {
  switch (task) {
    case EvalTask::kWikitext:
      return "wikitext";
    case EvalTask::kWikitextGptq:
      return "wikitext-gptq";
    case EvalTask::kDocs:
      return "docs";
    case EvalTask::kLayerError:
      return "layer-error";
  }
  return "?";
}

const std::vector<EvalTask>& EnumValues<EvalTask>::values() {
  static const std::vector<EvalTask> all = {EvalTask::kWikitext, EvalTask::kWikitextGptq,
                                            EvalTask::kDocs, EvalTask::kLayerError};
  return all;
}

const char* to_string(EvalRuntime r) {
  switch (r) {
    case EvalRuntime::kTorch: return "torch";
    case EvalRuntime::kInt: return "int";
  }
  return "?";
}

const std::vector<EvalRuntime>& EnumValues<EvalRuntime>::values() {
  static const std::vector<EvalRuntime> all = {EvalRuntime::kTorch, EvalRuntime::kInt};
  return all;
}

EvalTask parse_eval_task(const std::string& name, const std::string& where) {
  return parse_enum<EvalTask>(name, where);
}

namespace {

/// True for "cpu", "cuda" and "cuda:N".
bool is_device_name(const std::string& name) {
  if (name == "cpu" || name == "cuda") return true;
  if (name.rfind("cuda:", 0) != 0 || name.size() == 5) return false;
  for (size_t i = 5; i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return false;
  }
  return true;
}

}  // namespace

void EvalConfig::validate(const std::string& where) const {
  MQ_CHECK(!tasks.empty(), where, ": tasks: empty, expected at least one of ",
           enum_choices<EvalTask>());
  const char* dtypes[] = {"fp32", "bf16", "fp16", "float32", "bfloat16", "float16"};
  bool dtype_ok = false;
  for (const char* d : dtypes) dtype_ok = dtype_ok || dtype == d;
  MQ_CHECK(dtype_ok, where, ": dtype: got '", dtype, "', expected one of [fp32, bf16, fp16]");
  MQ_CHECK(is_device_name(device), where, ": device: got '", device,
           "', expected one of [cpu, cuda, cuda:N]");
  MQ_CHECK(max_length >= 0, where, ": max_length: got ", max_length,
           ", expected a positive window length (or 0: 2048 capped at the model's context)");
  MQ_CHECK(seqlen >= 0, where, ": seqlen: got ", seqlen,
           ", expected a positive window length (or 0: 2048 capped at the model's context)");
  MQ_CHECK(batch_size >= 1, where, ": batch_size: got ", batch_size, ", expected >= 1");
  MQ_CHECK(threads >= 0, where, ": threads: got ", threads, ", expected >= 0 (0: every core)");
  MQ_CHECK(runtime != EvalRuntime::kInt || device == "cpu", where, ": runtime int runs on the "
           "CPU; got device '", device, "'");
  MQ_CHECK(!sites || runtime == EvalRuntime::kInt, where, ": sites: compares the integer "
           "runtime with the simulation; it needs runtime int");
  MQ_CHECK(compare_device.empty() || is_device_name(compare_device), where,
           ": compare_device: got '", compare_device, "', expected one of [cpu, cuda, cuda:N] "
           "(or \"\": none)");
  MQ_CHECK(compare_device.empty() || runtime == EvalRuntime::kInt, where,
           ": compare_device: compares the integer runtime's simulation across devices; it "
           "needs runtime int");
  MQ_CHECK(limit >= -1, where, ": limit: got ", limit, ", expected >= 0 (or -1: all)");
  for (const auto& d : data) {
    MQ_CHECK(!d.empty(), where, ": data: empty file name, expected FILE or TASK=FILE");
  }
  for (const EvalTask t : tasks) {
    if (t != EvalTask::kLayerError) continue;
    MQ_CHECK(!reference.empty(), where, ": reference: empty, but tasks include layer-error, "
             "which compares with the float model; pass --reference MODEL (or set "
             "\"reference\")");
    MQ_CHECK(runtime == EvalRuntime::kTorch, where, ": tasks: layer-error needs runtime torch "
             "(the integer runtime reports no block outputs); got runtime ", to_string(runtime));
  }
}

}  // namespace mq
