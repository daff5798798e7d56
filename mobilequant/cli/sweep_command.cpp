// mobilequant/cli/sweep_command.cpp
// `mobilequant sweep SWEEP.json`: a grid of `mobilequant run`s and their results table.
//
//   {
//     "description": "Table 3 on SmolLM2",
//     "base": "../runs/smollm2.json",          // a run config (path relative to this file)
//     "set": ["calib.samples=128"],            // applied to every run, before the axes
//     "axes": [                                // the grid, in this order (first = slowest)
//       {"key": "quant", "values": ["w8a8", "w4a8"]},
//       {"key": "method", "values": ["smoothquant-edge", "omniquant-edge", "mobilequant"]}
//     ],
//     "output": "runs/table3"                  // one sub-directory per run: w8a8-mobilequant
//   }
//
// Runs already complete with the same config are skipped (their results are reused), runs
// interrupted are resumed, and the table is rewritten after every run: results.md (Markdown)
// and results.csv, one row per run with every axis, every metric and its run directory.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "mobilequant/cli/commands.h"
#include "mobilequant/config/config_json.h"
#include "mobilequant/core/error.h"

namespace mq::cli {

namespace fs = std::filesystem;

namespace {

/// One axis of the grid.
struct Axis {
  std::string key;
  std::vector<std::string> values;  ///< override texts
};

/// A sweep file, read and checked.
struct Sweep {
  std::string description;
  std::string base;               ///< run config path ("": none)
  std::vector<std::string> sets;  ///< common overrides
  std::vector<Axis> axes;
  std::string output;
};

Sweep read_sweep(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  MQ_CHECK(j.is_object(), path, ": expected a JSON object");
  Sweep s;
  const std::vector<std::string> allowed = {"description", "base", "set", "axes", "output"};
  for (const auto& [key, value] : j.items()) {
    const std::string where = path + ": " + key;
    if (key == "description") {
      detail::read_value(value, s.description, where);
    } else if (key == "base") {
      detail::read_value(value, s.base, where);
      if (!s.base.empty() && fs::path(s.base).is_relative())
        s.base = (fs::path(path).parent_path() / s.base).lexically_normal().string();
    } else if (key == "set") {
      detail::read_value(value, s.sets, where);
    } else if (key == "output") {
      detail::read_value(value, s.output, where);
    } else if (key == "axes") {
      MQ_CHECK(value.is_array() && !value.empty(), where, ": expected a non-empty array of "
               "{\"key\": ..., \"values\": [...]}");
      for (size_t i = 0; i < value.size(); ++i) {
        const auto& a = value[i];
        const std::string w = where + "[" + std::to_string(i) + "]";
        MQ_CHECK(a.is_object() && a.size() == 2 && a.contains("key") && a.contains("values") &&
                     a["key"].is_string() && a["values"].is_array() && !a["values"].empty(),
                 w, ": expected {\"key\": \"FIELD\", \"values\": [v1, ...]}, got ", a.dump());
        Axis axis;
        axis.key = a["key"].get<std::string>();
        for (const auto& v : a["values"]) axis.values.push_back(v.is_string() ? v.get<std::string>() : v.dump());
        s.axes.push_back(axis);
      }
    } else {
      throw make_error(path, ": unknown key '", key, "'; allowed keys: ", format_key_list(allowed));
    }
  }
  MQ_CHECK(!s.axes.empty(), path, ": axes: missing; a sweep needs at least one axis");
  MQ_CHECK(!s.output.empty(), path, ": output: missing; name the directory of the runs");
  return s;
}

/// Every point of the grid: the axis values, first axis slowest.
std::vector<std::vector<std::string>> grid_points(const std::vector<Axis>& axes) {
  std::vector<std::vector<std::string>> points = {{}};
  for (const Axis& axis : axes) {
    std::vector<std::vector<std::string>> next;
    for (const auto& p : points)
      for (const auto& v : axis.values) {
        auto q = p;
        q.push_back(v);
        next.push_back(q);
      }
    points = std::move(next);
  }
  return points;
}

/// A directory name piece for a value: path stems for files, '/' and spaces replaced.
std::string name_piece(const std::string& value) {
  const bool is_file = value.find('/') != std::string::npos || fs::path(value).extension() == ".json";
  std::string v = is_file ? fs::path(value).stem().string() : value;
  for (char& ch : v)
    if (ch == '/' || ch == ' ' || ch == '=') ch = '_';
  return v;
}

/// The figures of one results.json: "task metric" -> value.
std::vector<std::pair<std::string, double>> figures(const nlohmann::json& results) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& e : results.value("eval", nlohmann::json::array()))
    for (const auto& m : e.value("metrics", nlohmann::json::array()))
      out.emplace_back(e.value("task", std::string("?")) + " " + m.value("metric", std::string("?")),
                       m.value("value", 0.0));
  const auto& train = results.value("train", nlohmann::json());
  if (train.is_object() && train.contains("last_epoch_loss") && train["last_epoch_loss"].is_number())
    out.emplace_back("train loss (last epoch)", train["last_epoch_loss"].get<double>());
  return out;
}

/// Writes results.md and results.csv for the runs finished so far.
void write_tables(const Sweep& s, const std::vector<std::vector<std::string>>& points,
                  const std::vector<nlohmann::json>& results, const std::vector<std::string>& dirs) {
  std::vector<std::string> columns;  // every figure name, in first-seen order
  for (const auto& r : results)
    for (const auto& [name, v] : figures(r))
      if (std::find(columns.begin(), columns.end(), name) == columns.end()) columns.push_back(name);
  std::ostringstream md, csv;
  if (!s.description.empty()) md << s.description << "\n\n";
  md << "|";
  for (const auto& a : s.axes) md << " " << a.key << " |";
  for (const auto& c : columns) md << " " << c << " |";
  md << " run |\n|";
  for (size_t i = 0; i < s.axes.size(); ++i) md << "---|";
  for (size_t i = 0; i < columns.size(); ++i) md << "---:|";
  md << "---|\n";
  for (const auto& a : s.axes) csv << a.key << ",";
  for (const auto& c : columns) csv << "\"" << c << "\",";
  csv << "run\n";
  for (size_t i = 0; i < results.size(); ++i) {
    const auto f = figures(results[i]);
    md << "|";
    for (const auto& v : points[i]) md << " " << v << " |";
    for (const auto& v : points[i]) csv << v << ",";
    for (const auto& c : columns) {
      auto it = std::find_if(f.begin(), f.end(), [&](const auto& p) { return p.first == c; });
      std::ostringstream cell;
      if (it != f.end()) cell << std::setprecision(6) << it->second;
      md << " " << (it != f.end() ? cell.str() : "–") << " |";
      csv << cell.str() << ",";
    }
    md << " " << dirs[i] << " |\n";
    csv << dirs[i] << "\n";
  }
  fs::create_directories(s.output);
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"results.md", md.str()},
                                   {"results.csv", csv.str()}}) {
    const fs::path target = fs::path(s.output) / name;
    const fs::path tmp = target.string() + ".tmp";
    {
      std::ofstream out(tmp);
      out << text;
      MQ_CHECK(out.good(), "sweep: cannot write '", tmp.string(), "'");
    }
    fs::rename(tmp, target);
  }
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  auto dry = std::make_shared<bool>(false);
  auto output = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "sweep",
      "A grid of runs (axes of --set overrides over a base run config); skips runs already "
      "complete, resumes interrupted ones, writes results.md and results.csv");
  cmd->add_option("sweep", *path, "Sweep file (JSON: description, base, set, axes, output)")
      ->required();
  cmd->add_option("--set", *sets, "Override applied to every run after the sweep's own (repeatable)");
  cmd->add_flag("--dry-run", *dry, "List the runs and their directories, then exit");
  cmd->add_option("--output,-o", *output, "Directory of the runs and tables (overrides the file's)");
  cmd->callback([path, sets, dry, output]() {
    Sweep s = read_sweep(*path);
    if (!output->empty()) s.output = *output;
    const auto points = grid_points(s.axes);
    // Resolve every run first, so that a bad value fails before the first run starts.
    std::vector<RunConfig> configs;
    std::vector<std::string> dirs;
    std::vector<std::string> problems;  // pre-flight failures, one per point
    for (const auto& p : points) {
      std::vector<std::string> all = s.sets;
      all.insert(all.end(), sets->begin(), sets->end());
      std::string name;
      for (size_t i = 0; i < p.size(); ++i) {
        all.push_back(s.axes[i].key + "=" + p[i]);
        name += (i ? "-" : "") + name_piece(p[i]);
      }
      const std::string dir = (fs::path(s.output) / name).string();
      all.push_back("output=" + dir);
      configs.push_back(resolve_run_config(s.base, all, methods_dir()));
      dirs.push_back(dir);
      try {
        check_run_config(configs.back());
      } catch (const Error& e) {
        problems.push_back("point " + name + " (" + dir + "): " + e.what());
      }
    }
    // Every point passes run's own pre-flight checks (files, method vs preset) before the first
    // run starts; --dry-run lists the problems and the runs anyway.
    for (const auto& p : problems) std::cerr << "[sweep] " << (*dry ? "warning: " : "") << p << "\n";
    MQ_CHECK(*dry || problems.empty(), "sweep: ", problems.size(), " of ", points.size(),
             " points cannot run (listed above); nothing was started");
    std::cerr << "[sweep] " << points.size() << " runs under " << s.output << "\n";
    if (*dry) {
      for (const auto& d : dirs) std::cout << d << "\n";
      return;
    }
    std::vector<nlohmann::json> results;
    for (size_t i = 0; i < configs.size(); ++i) {
      const fs::path done = fs::path(dirs[i]) / "results.json";
      nlohmann::json r;
      if (fs::exists(done)) {
        r = read_json_file(done.string());
        const auto diff = differing_keys(r.value("config", nlohmann::json()), config_to_json(configs[i]));
        MQ_CHECK(diff.empty(), "sweep: '", dirs[i], "' holds a finished run of another config "
                 "(keys that differ: ", format_key_list(diff), "); move it away or change output");
        std::cerr << "[sweep] " << i + 1 << "/" << configs.size() << " " << dirs[i]
                  << ": complete, skipped\n";
      } else {
        std::cerr << "[sweep] " << i + 1 << "/" << configs.size() << " " << dirs[i] << "\n";
        RunFlags flags;
        flags.resume = true;  // an interrupted run continues; a new one starts
        r = run_experiment(configs[i], flags);
      }
      results.push_back(r);
      write_tables(s, points, results, dirs);
    }
    std::ifstream md(fs::path(s.output) / "results.md");
    std::cout << md.rdbuf();
  });
}

}  // namespace mq::cli
