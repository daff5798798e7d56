// mobilequant/cli/export_command.cpp
// `mobilequant export RUN_OR_MODEL [-o OUT] [--format hf,reference,aimet] [--force]`: writes a
// finished run's (or a quantized model directory's) model in the deployment formats, one
// directory written atomically (export/export_writer.h; docs/export.md).
// `mobilequant export --check DIR`: lints an export on its own (export/export_check.h); exits
// non-zero when it finds a problem.
#include <iostream>
#include <memory>

#include "mobilequant/cli/commands.h"
#include "mobilequant/core/error.h"
#include "mobilequant/export/export_check.h"
#include "mobilequant/export/export_options.h"
#include "mobilequant/export/export_writer.h"

namespace mq::cli {

namespace {

struct ExportArgs {
  std::string source;
  std::string output;
  std::string formats = "all";
  bool force = false;
  int64_t float_bits = 32;
  std::string check;
};

void run_check(const std::string& dir) {
  const auto findings = check_export(dir);
  if (findings.empty()) {
    std::cout << "export " << dir << ": OK\n";
    return;
  }
  std::cout << format_findings(findings);
  throw make_error("export --check: ", findings.size(), " problem(s) in '", dir, "'");
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand(
      "export",
      "Write a finished run's quantized model for deployment (folded HF model, the reference's "
      "act_dict/default_qcfg, AIMET encodings 0.6.1 and 1.0.0), or lint an export (--check)");
  cmd->add_option("source", a->source,
                  "A finished run directory (results.json, model/) or a quantized model "
                  "directory (quantization.json)");
  cmd->add_option("-o,--output", a->output,
                  "Export directory (default: RUN/export, or MODEL_DIR-export)");
  cmd->add_option("--format", a->formats,
                  "Comma list of formats: hf, reference, aimet, int, onnx, or all (default: all; all leaves out "
                  "a format that cannot express the preset or model, with a note)");
  cmd->add_flag("--force", a->force, "Replace an existing export directory");
  cmd->add_option("--float-bits", a->float_bits,
                  "Bit-width of the AIMET float entries of sites left in float (16 or 32)");
  cmd->add_option("--check", a->check, "Lint the export directory DIR instead of exporting");
  cmd->callback([a] {
    if (!a->check.empty()) {
      MQ_CHECK(a->source.empty(), "export: --check takes the export directory alone (got also '",
               a->source, "')");
      run_check(a->check);
      return;
    }
    MQ_CHECK(!a->source.empty(), "export: give a run directory or a quantized model directory "
             "(or --check DIR)");
    ExportOptions opts;
    opts.formats = parse_export_formats(a->formats, "export: --format");
    opts.all_formats = a->formats.empty() || a->formats == "all";
    opts.force = a->force;
    opts.float_bits = a->float_bits;
    opts.provenance = {{"git_revision", git_revision()},
                       {"command_line", command_line()},
                       {"created_at", utc_now()},
                       {"libtorch", TORCH_VERSION}};
    opts.validate();
    const std::string out =
        a->output.empty() ? default_export_dir(resolve_export_source(a->source)) : a->output;
    const ExportManifest m = export_model(a->source, out, opts);
    std::cout << "exported " << a->source << " -> " << out << "\n";
    for (const auto& [rel, f] : m.files)
      std::cout << "  " << rel << "  " << f.bytes << " bytes  sha256 " << f.sha256.substr(0, 16)
                << "\n";
    for (const auto& note : m.notes) std::cout << "note: " << note << "\n";
    if (!m.ranges_excluding_zero.empty())
      std::cout << "note: " << m.ranges_excluding_zero.size()
                << " encoding(s) have a range without zero (offset outside the code range; "
                   "listed in export.json: ranges_excluding_zero)\n";
  });
}

}  // namespace mq::cli
