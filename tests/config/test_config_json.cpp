// tests/config/test_config_json.cpp
// config/config_json.h and config/eval_config.h: reading a config struct from JSON (unknown
// keys, ill-typed values of every supported type, bad enum names), writing it back, `--set`
// overrides of every type and EvalConfig::validate, each error checked on its message.
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "mobilequant/config/config_json.h"
#include "mobilequant/config/eval_config.h"
#include "mobilequant/core/error.h"
#include "tests/support/test_support.h"

namespace {

using Catch::Contains;
using nlohmann::json;

/// One field of every supported type.
struct AllTypes {
  int64_t count = 3;
  double rate = 0.5;
  bool flag = false;
  std::string name = "x";
  std::vector<std::string> names;
  std::map<std::string, std::string> files;
  mq::EvalTask task = mq::EvalTask::kDocs;
  std::vector<mq::EvalTask> tasks;

  template <class V>
  void for_each_field(V& v) {
    v("count", count, "an integer");
    v("rate", rate, "a double");
    v("flag", flag, "a bool");
    v("name", name, "a string");
    v("names", names, "a list of strings");
    v("files", files, "a map of strings");
    v("task", task, "an enum");
    v("tasks", tasks, "a list of enums");
  }
};

/// Reads `text` (JSON) into a default AllTypes as if from the file "cfg.json".
AllTypes read_all(const std::string& text) {
  AllTypes c;
  mq::config_from_json(json::parse(text), c, "cfg.json");
  return c;
}

}  // namespace

TEST_CASE("config_from_json rejects an unknown key naming the file, key and allowed keys",
          "[unit]") {
  REQUIRE_THROWS_WITH(read_all(R"({"count": 1, "cuont": 2})"),
                      Contains("cfg.json") && Contains("unknown key 'cuont'") &&
                          Contains("[count, rate, flag, name, names, files, task, tasks]"));
  REQUIRE_THROWS_WITH(read_all("[1, 2]"), Contains("cfg.json: expected a JSON object"));
}

TEST_CASE("config_from_json rejects an ill-typed value of every type", "[unit]") {
  REQUIRE_THROWS_WITH(read_all(R"({"count": "2048"})"),
                      Contains("cfg.json: count: expected an integer, got \"2048\""));
  REQUIRE_THROWS_WITH(read_all(R"({"count": 2.5})"),
                      Contains("count: expected an integer, got 2.5"));
  REQUIRE_THROWS_WITH(read_all(R"({"rate": "fast"})"),
                      Contains("cfg.json: rate: expected a number, got \"fast\""));
  REQUIRE_THROWS_WITH(read_all(R"({"flag": "true"})"),
                      Contains("cfg.json: flag: expected a boolean (true or false), got \"true\""));
  REQUIRE_THROWS_WITH(read_all(R"({"flag": 1})"), Contains("flag: expected a boolean"));
  REQUIRE_THROWS_WITH(read_all(R"({"name": 7})"),
                      Contains("cfg.json: name: expected a string, got 7"));
  REQUIRE_THROWS_WITH(read_all(R"({"names": "a"})"),
                      Contains("cfg.json: names: expected an array, got \"a\""));
  REQUIRE_THROWS_WITH(read_all(R"({"names": ["a", 2]})"),
                      Contains("cfg.json: names[1]: expected a string, got 2"));
  REQUIRE_THROWS_WITH(read_all(R"({"files": ["a"]})"),
                      Contains("cfg.json: files: expected an object of strings, got [\"a\"]"));
  REQUIRE_THROWS_WITH(read_all(R"({"files": {"docs": 3}})"),
                      Contains("cfg.json: files.docs: expected a string, got 3"));
  REQUIRE_THROWS_WITH(read_all(R"({"task": 1})"),
                      Contains("cfg.json: task: expected one of [wikitext, wikitext-gptq, docs, "
                               "layer-error], got 1"));
}

TEST_CASE("config_from_json rejects a bad enum name naming the allowed set", "[unit]") {
  REQUIRE_THROWS_WITH(read_all(R"({"task": "wiki"})"),
                      Contains("cfg.json: task: got 'wiki', expected one of [wikitext, "
                               "wikitext-gptq, docs, layer-error]"));
  REQUIRE_THROWS_WITH(read_all(R"({"tasks": ["docs", "wikitext_gptq"]})"),
                      Contains("cfg.json: tasks[1]: got 'wikitext_gptq', expected one of "
                               "[wikitext, wikitext-gptq, docs, layer-error]"));
  REQUIRE_THROWS_WITH(mq::parse_eval_task("doc", "--task"),
                      Contains("--task: got 'doc', expected one of [wikitext, wikitext-gptq, "
                               "docs, layer-error]"));
}

TEST_CASE("config_from_json reads every type and keeps absent keys", "[unit]") {
  const AllTypes c = read_all(
      R"({"count": 9, "rate": 2, "flag": true, "names": ["a", "b"],
          "files": {"docs": "d.txt"}, "task": "wikitext-gptq", "tasks": ["wikitext", "docs"]})");
  CHECK(c.count == 9);
  CHECK(c.rate == 2.0);
  CHECK(c.flag);
  CHECK(c.name == "x");
  CHECK(c.names == std::vector<std::string>{"a", "b"});
  CHECK(c.files == std::map<std::string, std::string>{{"docs", "d.txt"}});
  CHECK(c.task == mq::EvalTask::kWikitextGptq);
  CHECK((c.tasks == std::vector<mq::EvalTask>{mq::EvalTask::kWikitext, mq::EvalTask::kDocs}));
}

TEST_CASE("config_to_json and config_from_json round-trip", "[unit]") {
  AllTypes a;
  a.count = -4;
  a.rate = 1e-3;
  a.flag = true;
  a.name = "with \"quotes\"";
  a.names = {"p", "q"};
  a.files = {{"wikitext", "w.txt"}, {"docs", "d.txt"}};
  a.task = mq::EvalTask::kWikitext;
  a.tasks = {mq::EvalTask::kDocs, mq::EvalTask::kWikitextGptq};
  const json j = mq::config_to_json(a);
  CHECK(j.at("task") == "wikitext");
  CHECK(j.at("tasks") == json::array({"docs", "wikitext-gptq"}));
  AllTypes b;
  mq::config_from_json(json::parse(j.dump()), b, "round trip");
  CHECK(b.count == a.count);
  CHECK(b.rate == a.rate);
  CHECK(b.flag == a.flag);
  CHECK(b.name == a.name);
  CHECK(b.names == a.names);
  CHECK(b.files == a.files);
  CHECK(b.task == a.task);
  CHECK((b.tasks == a.tasks));
  CHECK(mq::config_to_json(b) == j);

  mq::EvalConfig e;
  e.model = "m.bin";
  e.tasks = {mq::EvalTask::kDocs};
  e.max_length = 256;
  mq::EvalConfig f;
  mq::config_from_json(mq::config_to_json(e), f, "round trip");
  CHECK(mq::config_to_json(f) == mq::config_to_json(e));
}

// Lists of EvalTask are compared inside (( )): Catch would print them through c10's operator<<.
TEST_CASE("apply_override sets every type from key=value", "[unit]") {
  AllTypes c;
  mq::apply_override(c, "count=12");
  mq::apply_override(c, "rate=0.25");
  mq::apply_override(c, "flag=true");
  mq::apply_override(c, "name=123");  // a string field takes the text as written
  mq::apply_override(c, "names=[\"a\",\"b=c\"]");
  mq::apply_override(c, "files={\"docs\":\"d.txt\"}");
  mq::apply_override(c, "task=wikitext");
  mq::apply_override(c, "tasks=docs");  // one value for a list: a one-element list
  CHECK(c.count == 12);
  CHECK(c.rate == 0.25);
  CHECK(c.flag);
  CHECK(c.name == "123");
  CHECK(c.names == std::vector<std::string>{"a", "b=c"});
  CHECK(c.files == std::map<std::string, std::string>{{"docs", "d.txt"}});
  CHECK(c.task == mq::EvalTask::kWikitext);
  CHECK((c.tasks == std::vector<mq::EvalTask>{mq::EvalTask::kDocs}));
  mq::apply_override(c, "names=plain");
  CHECK(c.names == std::vector<std::string>{"plain"});
  mq::apply_override(c, "name=");
  CHECK(c.name.empty());
}

TEST_CASE("apply_override errors name the key, the allowed keys and the expected type",
          "[unit]") {
  AllTypes c;
  REQUIRE_THROWS_WITH(mq::apply_override(c, "cnt=3"),
                      Contains("--set 'cnt=3': unknown key 'cnt'") &&
                          Contains("allowed keys: [count, rate"));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "count"),
                      Contains("--set 'count': expected key=value"));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "=3"), Contains("expected key=value"));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "count=abc"),
                      Contains("--set: count: expected an integer, got \"abc\""));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "rate=fast"),
                      Contains("--set: rate: expected a number, got \"fast\""));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "flag=yes"),
                      Contains("--set: flag: expected a boolean (true or false), got \"yes\""));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "files=x"),
                      Contains("--set: files: expected an object of strings, got \"x\""));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "task=wiki"),
                      Contains("--set: task: got 'wiki', expected one of [wikitext, "
                               "wikitext-gptq, docs, layer-error]"));
  REQUIRE_THROWS_WITH(mq::apply_override(c, "tasks=[\"docs\",\"nope\"]"),
                      Contains("--set: tasks[1]: got 'nope'"));
}

TEST_CASE("read_config_file names the file on open, syntax and key errors", "[unit]") {
  const auto dir = mq::test::scratch_dir("config_json");
  const std::string bad_syntax = (dir / "bad.json").string();
  std::ofstream(bad_syntax) << "{\"max_length\": 12,";
  mq::EvalConfig c;
  REQUIRE_THROWS_WITH(mq::read_config_file(bad_syntax, c),
                      Contains("config file '" + bad_syntax + "': not valid JSON"));
  REQUIRE_THROWS_WITH(mq::read_config_file((dir / "missing.json").string(), c),
                      Contains("missing.json': cannot open it"));
  const std::string typo = (dir / "typo.json").string();
  std::ofstream(typo) << R"({"tasks": ["docs"], "max_lenght": 512})";
  REQUIRE_THROWS_WITH(mq::read_config_file(typo, c),
                      Contains(typo + ": unknown key 'max_lenght'") &&
                          Contains("allowed keys: [model, tokenizer, reference, device, dtype, "
                                   "tasks, data, max_length, seqlen, separator, batch_size, "
                                   "limit, output, runtime, threads, sites, compare_device]"));
  const std::string ill = (dir / "ill.json").string();
  std::ofstream(ill) << R"({"max_length": "2048"})";
  REQUIRE_THROWS_WITH(mq::read_config_file(ill, c),
                      Contains(ill + ": max_length: expected an integer, got \"2048\""));
}

TEST_CASE("the shipped configs/eval files read and validate", "[unit]") {
  for (const char* name :
       {"wikitext2-lmeval.json", "wikitext2-gptq.json", "tinystories-docs.json"}) {
    INFO(name);
    mq::EvalConfig c;
    const std::string path = (mq::test::source_dir() / "configs" / "eval" / name).string();
    REQUIRE_NOTHROW(mq::read_config_file(path, c));
    REQUIRE_NOTHROW(c.validate(path));
    CHECK(c.model.empty());
  }
}

TEST_CASE("EvalConfig::validate names the key, the value and what is allowed", "[unit]") {
  mq::EvalConfig c;
  c.tasks = {mq::EvalTask::kDocs};
  REQUIRE_NOTHROW(c.validate("cfg"));
  SECTION("no tasks") {
    c.tasks.clear();
    REQUIRE_THROWS_WITH(c.validate("cfg"),
                        Contains("cfg: tasks: empty, expected at least one of [wikitext, "
                                 "wikitext-gptq, docs, layer-error]"));
  }
  SECTION("lengths") {
    c.max_length = -1;
    REQUIRE_THROWS_WITH(c.validate("cfg"), Contains("cfg: max_length: got -1"));
    c.max_length = 0;
    c.seqlen = -8;
    REQUIRE_THROWS_WITH(c.validate("cfg"), Contains("cfg: seqlen: got -8"));
  }
  SECTION("batch size and limit") {
    c.batch_size = 0;
    REQUIRE_THROWS_WITH(c.validate("cfg"), Contains("cfg: batch_size: got 0, expected >= 1"));
    c.batch_size = 2;
    c.limit = -2;
    REQUIRE_THROWS_WITH(c.validate("cfg"),
                        Contains("cfg: limit: got -2, expected >= 0 (or -1: all)"));
  }
  SECTION("dtype and device") {
    c.dtype = "int8";
    REQUIRE_THROWS_WITH(c.validate("cfg"),
                        Contains("cfg: dtype: got 'int8', expected one of [fp32, bf16, fp16]"));
    c.dtype = "bfloat16";
    c.device = "gpu";
    REQUIRE_THROWS_WITH(c.validate("cfg"),
                        Contains("cfg: device: got 'gpu', expected one of [cpu, cuda, cuda:N]"));
    c.device = "cuda:x";
    REQUIRE_THROWS_WITH(c.validate("cfg"), Contains("device: got 'cuda:x'"));
    c.device = "cuda:1";
    REQUIRE_NOTHROW(c.validate("cfg"));
  }
  SECTION("empty data entry") {
    c.data = {""};
    REQUIRE_THROWS_WITH(c.validate("cfg"), Contains("cfg: data: empty file name"));
  }
  SECTION("layer-error needs a reference and the torch runtime") {
    c.tasks = {mq::EvalTask::kWikitext, mq::EvalTask::kLayerError};
    REQUIRE_THROWS_WITH(c.validate("eval"),
                        Contains("eval: reference: empty, but tasks include layer-error") &&
                            Contains("--reference MODEL"));
    c.reference = "models/float";
    REQUIRE_NOTHROW(c.validate("eval"));
    c.runtime = mq::EvalRuntime::kInt;
    REQUIRE_THROWS_WITH(c.validate("eval"),
                        Contains("eval: tasks: layer-error needs runtime torch") &&
                            Contains("got runtime int"));
  }
  SECTION("sites needs the integer runtime") {
    mq::apply_override(c, "sites=true");
    REQUIRE_THROWS_WITH(c.validate("eval"), Contains("eval: sites: compares the integer runtime "
                                                     "with the simulation; it needs runtime int"));
    c.runtime = mq::EvalRuntime::kInt;
    REQUIRE_NOTHROW(c.validate("eval"));
  }
  SECTION("compare_device is a device name, with the integer runtime only") {
    mq::apply_override(c, "compare_device=\"cuda\"");
    REQUIRE_THROWS_WITH(c.validate("eval"),
                        Contains("eval: compare_device: compares the integer runtime's "
                                 "simulation across devices; it needs runtime int"));
    c.runtime = mq::EvalRuntime::kInt;
    REQUIRE_NOTHROW(c.validate("eval"));
    c.compare_device = "gpu";
    REQUIRE_THROWS_WITH(c.validate("eval"),
                        Contains("eval: compare_device: got 'gpu', expected one of [cpu, cuda, "
                                 "cuda:N]"));
  }
}

TEST_CASE("layer-error parses from JSON, --set and the task parser", "[unit]") {
  CHECK(mq::parse_eval_task("layer-error", "--task") == mq::EvalTask::kLayerError);
  CHECK(std::string(mq::to_string(mq::EvalTask::kLayerError)) == "layer-error");
  mq::EvalConfig c;
  mq::apply_override(c, "tasks=[\"wikitext\",\"layer-error\"]");
  CHECK((c.tasks == std::vector<mq::EvalTask>{mq::EvalTask::kWikitext,
                                              mq::EvalTask::kLayerError}));
  mq::apply_override(c, "reference=models/float");
  CHECK(c.reference == "models/float");
  CHECK(mq::config_to_json(c).at("tasks") == json::array({"wikitext", "layer-error"}));
}
