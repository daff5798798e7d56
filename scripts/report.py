#!/usr/bin/env python3
"""Tables and plots from `mobilequant run` / `mobilequant sweep` run directories.

  scripts/report.py table RUN_DIR... [-o OUT_PREFIX] [--metric TASK:METRIC ...]
  scripts/report.py plots RUN_DIR... -o OUT_DIR [--metric TASK:METRIC ...]
  scripts/report.py int INT_BESIDE_OUT... [-o OUT_PREFIX]

A RUN_DIR is the directory one `mobilequant run` wrote (config.json, results.json, and
while or after training metrics.jsonl, log.txt, calibrated_quantizers.safetensors, model/).
A sweep's output directory (its rows as subdirectories) stands for every subdirectory that
holds config.json or results.json. The same run given twice counts once.

table
  One table per model (config.json `model`), in the order the models first appear. One row
  per method, FP first, then the paper's order (rtn, smoothquant-static,
  smoothquant-edge, omniquant-static, omniquant-edge, omniquant-edge-arl, mobilequant), then
  any other method alphabetically; one column per quantization preset (W8A8, W4A8, ... from
  config.json `quant`) and metric. The FP run (method or quant `fp`) fills every preset's
  column: a preset-named FP row of a sweep (`w4a8-fp`) is taken for its own preset. Runs of
  one method and preset that differ in their config (a calib.samples x train.epochs grid)
  become one row each, labelled by the differing keys. Lower-is-better metrics (perplexity)
  put the best quantized value of each column in bold. Every cell names its run: the
  Markdown's last column lists the run directories (relative to the directory printed under
  the table), the CSV (one for all models: a "model" column, then method, settings, the
  values in full precision) has one "<PRESET> run" column per preset with the path as found.
  Problems do not stop the report: a cell reads "unfinished" (config.json but no
  results.json), "n/a" (a run without the metric, or an unreadable results.json) or "-" (no
  run of that method at that preset), with a note under the table naming the run directory
  or file, and a warning on stderr.
  Writes OUT_PREFIX.md and OUT_PREFIX.csv with -o; always prints the Markdown.
  --metric TASK:METRIC (repeatable, or comma separated): the columns, e.g.
  wikitext:word_perplexity, wikitext-gptq:token_perplexity, docs:token_perplexity; the
  pseudo task `train` reads results.json's "train" section (train:last_epoch_loss,
  train:seconds; a per-block list gives its last block). Default: the first metric of every
  evaluated task except layer-error (a diagnostic: ask for layer-error:rel_mse_last_layer).

plots (needs matplotlib: pip install -r scripts/requirements-report.txt)
  Writes PNG and SVG (no timestamps: identical files for identical inputs) into OUT_DIR:
  loss_end_to_end        training loss vs step of every end-to-end run (metrics.jsonl,
                         layer -1), one panel per model and preset, log scale, with a
                         running mean.
  loss_block_wise        per block-wise run, each block's loss relative to its first epoch's
                         mean vs the step within the block, one line per layer.
  loss_block_wise_layers the first- and last-epoch mean loss per layer of every block-wise
                         run, one panel per model and preset.
  ppl_vs_budget          Table 2 style: the metric vs calib.samples x train.epochs
                         (config.json), one line per method and trainer, one panel per
                         model, preset and metric, FP and the untrained rows as
                         horizontal lines.
  act_ranges_<run>       per activation site type, the quantization range width per layer
                         (log scale) after calibration (calibrated_quantizers.safetensors)
                         and after learning (model/quantizers.safetensors); one of the two
                         alone is plotted alone. The width is (2^bits - 1) * scale (symmetric:
                         2 * (2^(bits-1) - 1) * scale) with the bits from model/
                         quantization.json or else configs/quant/<preset>.json; per-channel
                         sites show their widest channel.
  act_range_change_<run> log2(learned width / calibrated width) per site and layer
                         (needs both files): what activation range learning did.
  layer_error            the relative MSE of every block's output against the float model
                         (results.json's layer-error entry: eval task layer-error) vs the
                         layer, log scale, one line per run (method · preset), one panel per
                         model. Skipped without a word when no run evaluated layer-error;
                         runs with zero error everywhere (FP) draw no line.
  Colours: one per method in every figure; a method's grid settings in lighter to darker
  shades. A plot whose inputs no run has is skipped with a one-line message.

int (the output directory of scripts/int_beside.sh)
  The integer runtime beside the simulation, for the runs a sweep trained: OUT holds one
  subdirectory per run with eval_int.json (`mobilequant eval --runtime int` on the run's
  export) and run_results.json (the run's own results.json). Per model, a table laid out like
  the paper's (one row per method, per preset the columns "simulated" = the run's figure from
  results.json, its whole test set, and "integer" = the integer runtime), then one line per
  run and task with the export's simulation on the same windows as the integer runtime, their
  relative difference, the greedy agreement, the fp64 simulation's agreement with the fp32 one
  (the noise floor), the integer runtime against the fp64 simulation (perplexity difference and
  greedy agreement) and the positions. The first metric of every task. A subset (`limit` in
  eval_int.json) is named under the table: its "integer" figure then covers fewer documents
  than "simulated", so compare it with "simulated (same windows)". Runs evaluated with
  --compare-device (MQ_COMPARE_DEVICE) get a third table: the fp32 simulation on that device,
  its agreement with the CPU's fp32 simulation and with the integer runtime.

Exit status: 0 when the report was written (problems noted in it), 1 when no run could be
read or a file could not be written, 2 for bad arguments; --strict makes any problem
(unfinished run, unreadable file, missing path) exit 1 as well.
"""
import argparse
import csv
import gzip
import io
import json
import math
import os
import re
import struct
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHOD_ORDER = ["fp", "rtn", "smoothquant-static", "smoothquant-edge", "omniquant-static",
                "omniquant-edge", "omniquant-edge-arl", "mobilequant"]
METHOD_LABEL = {"fp": "FP", "rtn": "RTN", "smoothquant-static": "SmoothQuant-Static",
                "smoothquant-edge": "SmoothQuant-Edge", "omniquant-static": "OmniQuant-Static",
                "omniquant-edge": "OmniQuant-Edge", "omniquant-edge-arl": "OmniQuant-Edge + ARL",
                "omniquant-edge-e2e": "OmniQuant-Edge (end to end)",
                "mobilequant": "MobileQuant"}
PRESET_ORDER = ["w8a16", "w8a8", "full-w8a8", "w4a16", "w4a8", "w4a8-sym"]
TASK_ORDER = ["wikitext", "wikitext-gptq", "docs"]
# Evaluation tasks that are diagnostics, not table figures: never a default column.
DIAGNOSTIC_TASKS = {"layer-error"}
# Config keys that never tell two runs apart (every run has its own output directory).
VARIANT_IGNORED = {"output", "description", "method", "quant"}
# Settings that do not change the float model's results.
FP_IGNORED_PREFIXES = ("calib.", "train.", "init", "alpha", "quant_overrides")
# Activation sites in the order of mobilequant/config/quant_sites.h (ActSite).
SITE_ORDER = [
    "input_layernorm.input", "input_layernorm.output", "self_attn.q_proj.input",
    "self_attn.k_proj.input", "self_attn.v_proj.input", "self_attn.q_proj.output",
    "self_attn.k_proj.output", "self_attn.v_proj.output", "self_attn.qk_bmm.input",
    "self_attn.qk_bmm.input2", "self_attn.qk_bmm.output", "self_attn.pv_bmm.input",
    "self_attn.pv_bmm.input2", "self_attn.pv_bmm.output", "self_attn.o_proj.input",
    "self_attn.o_proj.output", "resid_add_1.output", "post_attention_layernorm.input",
    "post_attention_layernorm.output", "mlp.w1.input", "mlp.w3.input", "mlp.w1.output",
    "mlp.w3.output", "mlp.act_fn.input", "mlp.act_fn.input2", "mlp.act_fn.output",
    "mlp.w2.input", "mlp.w2.output", "resid_add_2.output", "model.embed_tokens.output",
    "model.norm.input", "model.norm.output", "lm_head.output"]
CALIBRATED_FILE = "calibrated_quantizers.safetensors"
LEARNED_FILE = os.path.join("model", "quantizers.safetensors")


class ReportError(Exception):
    """A problem that stops the command: the message names the file and what was wrong."""


class UsageError(ReportError):
    """A bad argument (exit status 2)."""


def warn(msg):
    sys.stderr.write("report.py: " + msg + "\n")


# ---------------------------------------------------------------------------------------------
# Run directories


class Run:
    """One run directory: its config, its results (None until the run finished) and why it
    cannot be used as a finished run (`problem`, None when it can)."""

    def __init__(self, path):
        self.path = path            # as found from the command line (normalised)
        self.name = os.path.basename(os.path.abspath(path))
        self.config = None
        self.results = None
        self.problem = None         # "unfinished: ..." or "<file>: ..." or None
        self.unfinished = False

    @property
    def ok(self):
        return self.problem is None and self.results is not None

    @property
    def method(self):
        return str(self._get("method", "?"))

    @property
    def quant(self):
        q = str(self._get("quant", "?"))
        # A preset may be given by its path (`configs/quant/w8a8.json`): name it by its stem.
        if q.endswith(".json") or "/" in q:
            q = os.path.splitext(os.path.basename(q))[0]
        return q

    @property
    def is_fp(self):
        return self.method == "fp" or self.quant == "fp"

    @property
    def trainer(self):
        train = (self.config or {}).get("train") or {}
        return str(train.get("trainer", "none"))

    @property
    def budget(self):
        """(calib.samples, train.epochs) or None."""
        c = self.config or {}
        try:
            return int(c["calib"]["samples"]), int(c["train"]["epochs"])
        except (KeyError, TypeError, ValueError):
            return None

    def _get(self, key, default):
        for src in (self.config, self.results):
            if isinstance(src, dict) and key in src:
                return src[key]
        return default

    def metric(self, task, metric):
        """The value of task:metric, or None."""
        if not self.results:
            return None
        if task == "train":
            train = self.results.get("train") or {}
            v = train.get(metric)
            if isinstance(v, list):
                v = v[-1] if v else None
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        for entry in eval_entries(self.results):
            if entry.get("task") != task:
                continue
            for m in entry.get("metrics") or []:
                if m.get("metric") == metric and isinstance(m.get("value"), (int, float)):
                    return float(m["value"])
        return None

    def tasks(self):
        """[(task, [metric, ...])] of the evaluation, in results.json's order."""
        out = []
        for entry in eval_entries(self.results or {}):
            out.append((entry.get("task"), [m.get("metric") for m in entry.get("metrics") or []]))
        return out


def eval_entries(results):
    entries = results.get("eval")
    if entries is None:
        entries = results.get("results")  # older spelling
    return entries if isinstance(entries, list) else []


def read_json(path):
    """Parsed JSON of `path`; ReportError naming the file and the parse error otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})")


def is_run_dir(path):
    return (os.path.isfile(os.path.join(path, "config.json")) or
            os.path.isfile(os.path.join(path, "results.json")))


def progress_of(path):
    """Where an unfinished run got to, from metrics.jsonl and log.txt ("" when neither)."""
    parts = []
    last = None
    mf = open_metrics(path)
    if mf is not None:
        with mf as f:
            for line in f:
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:
                    continue
    if isinstance(last, dict):
        where = f"epoch {last.get('epoch')} step {last.get('step')}"
        if isinstance(last.get("layer"), int) and last["layer"] >= 0:
            where = f"block {last['layer']} " + where
        parts.append("metrics.jsonl ends at " + where)
    lpath = os.path.join(path, "log.txt")
    if os.path.isfile(lpath):
        with open(lpath, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        if lines:
            tail = lines[-1]
            parts.append("log.txt: " + (tail if len(tail) <= 140 else tail[:137] + "..."))
    return "; ".join(parts)


def load_run(path):
    run = Run(path)
    cpath, rpath = os.path.join(path, "config.json"), os.path.join(path, "results.json")
    problems = []
    if os.path.isfile(cpath):
        try:
            run.config = read_json(cpath)
            if not isinstance(run.config, dict):
                raise ReportError(f"{cpath}: expected a JSON object, found {type(run.config).__name__}")
        except ReportError as e:
            run.config = None
            problems.append(str(e))
    if os.path.isfile(rpath):
        try:
            results = read_json(rpath)
            if not isinstance(results, dict):
                raise ReportError(f"{rpath}: expected a JSON object, found {type(results).__name__}")
            if run.config is None and isinstance(results.get("config"), dict):
                run.config = results["config"]
            run.results = results
        except ReportError as e:
            problems.append(str(e))
    elif run.config is not None:
        run.unfinished = True
        where = progress_of(path)
        problems.append(f"{path}: unfinished (no results.json" + (f"; {where})" if where else ")"))
    if run.config is None and not problems:
        problems.append(f"{path}: neither config.json nor results.json names the method and preset")
    if problems:
        run.problem = "; ".join(problems)
    return run


def collect_runs(paths):
    """Runs named by `paths` (run or sweep directories) and the problems met finding them."""
    runs, problems, seen = [], [], set()

    def add(p):
        real = os.path.realpath(p)
        if real in seen:
            return
        seen.add(real)
        runs.append(load_run(p))

    for arg in paths:
        p = os.path.normpath(arg)
        if os.path.isfile(p) and os.path.basename(p) in ("config.json", "results.json"):
            p = os.path.dirname(p) or "."
        if not os.path.exists(p):
            problems.append(f"{p}: no such file or directory")
        elif not os.path.isdir(p):
            problems.append(f"{p}: not a directory (give a run directory or a sweep's output directory)")
        elif is_run_dir(p):
            add(p)
        else:
            subs = sorted(d for d in os.listdir(p) if os.path.isdir(os.path.join(p, d)))
            found = [os.path.join(p, d) for d in subs if is_run_dir(os.path.join(p, d))]
            if not found:
                problems.append(f"{p}: not a run directory (no config.json or results.json) "
                                "and no subdirectory of it is one")
            for sub in found:
                add(sub)
    return runs, problems


# ---------------------------------------------------------------------------------------------
# Labels and formatting


def method_label(method):
    return METHOD_LABEL.get(method, method)


def method_rank(method):
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), "")
    return (len(METHOD_ORDER), method)


def preset_label(preset):
    """w8a8 -> W8A8, w4a8-sym -> W4A8-sym, full-w8a8 -> full-W8A8, fp -> FP."""
    if preset == "fp":
        return "FP"
    return re.sub(r"\bw(\d+)a(\d+)\b", lambda m: f"W{m.group(1)}A{m.group(2)}", preset)


def preset_rank(preset):
    if preset in PRESET_ORDER:
        return (PRESET_ORDER.index(preset), "")
    return (len(PRESET_ORDER), preset)


def metric_label(task, metric):
    short = metric.replace("_perplexity", " ppl").replace("perplexity", "ppl")
    return f"{task} {short}"


def lower_is_better(metric):
    m = metric.lower()
    if "acc" in m or "agreement" in m:
        return False
    if "perplexity" in m or "loss" in m or "bits_per_byte" in m or "mse" in m or m == "seconds":
        return True
    return None


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e4:
        return f"{v:.3g}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.4f}"


def natural(v):
    """A sort key that orders numbers numerically and before strings."""
    if isinstance(v, bool):
        return (1, str(v))
    if isinstance(v, (int, float)):
        return (0, v)
    return (1, str(v))


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = json.dumps(v) if isinstance(v, list) else v
    return out


def show_value(v):
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# The table


class Series:
    """A row: one model's method with one setting of the keys its runs differ in."""

    def __init__(self, model, method, variant):
        self.model = model
        self.method = method
        self.variant = variant              # ((key, value), ...)
        self.runs = []
        self.model_rank = 0

    @property
    def label(self):
        """The row's name: "MobileQuant" or "MobileQuant (calib.samples=128, train.epochs=20)"."""
        base = method_label(self.method)
        return base + (" (" + self.variant_text + ")" if self.variant else "")

    @property
    def variant_text(self):
        return ", ".join(f"{k}={show_value(v)}" for k, v in self.variant)

    def sort_key(self):
        return (self.model_rank, method_rank(self.method), [natural(v) for _, v in self.variant])


def model_of(run):
    return str((run.config or {}).get("model", "?"))


def model_short(model):
    """../shared/models/stories260K/stories260K.bin -> stories260K."""
    return os.path.splitext(os.path.basename(model))[0] or model


def by_model(runs):
    """[(model, [run, ...])] in the order the models first appear."""
    out = {}
    for r in runs:
        out.setdefault(model_of(r), []).append(r)
    return list(out.items())


def differing_keys(flats, ignore_prefixes, exclude):
    """Keys every config has and whose values are not all the same (a key only some configs
    have comes from another version of mobilequant, not from another setting)."""
    keys = []
    for k in sorted(set().union(*flats)):
        if k in VARIANT_IGNORED or k in exclude or (ignore_prefixes and k.startswith(ignore_prefixes)):
            continue
        if any(k not in f for f in flats):
            continue
        if len({json.dumps(f[k], sort_keys=True) for f in flats}) > 1:
            keys.append(k)
    return keys


def variant_keys(runs, is_fp, exclude=()):
    """Config keys that tell apart runs of one model, method and preset (FP: of one model)."""
    cells = {}
    for r in runs:
        cells.setdefault("fp" if is_fp else r.quant, []).append(r)
    keys = set()
    for cell in cells.values():
        if len(cell) > 1:
            keys.update(differing_keys([flatten(r.config or {}) for r in cell],
                                       FP_IGNORED_PREFIXES if is_fp else (), exclude))
    return sorted(keys)


def group_series(runs, exclude=()):
    """Runs with a readable config grouped into rows: by model (in order of appearance), then
    method in the paper's order, then the settings the runs differ in."""
    models = [m for m, _ in by_model([r for r in runs if r.config is not None])]
    groups = {}
    for r in runs:
        if r.config is not None:
            groups.setdefault((model_of(r), "fp" if r.is_fp else r.method), []).append(r)
    series = {}
    for (model, method), mruns in groups.items():
        keys = variant_keys(mruns, method == "fp", exclude)
        for r in mruns:
            flat = flatten(r.config or {})
            variant = tuple((k, flat.get(k)) for k in keys)
            s = series.setdefault((model, method, json.dumps(variant)), Series(model, method, variant))
            s.model_rank = models.index(model)
            s.runs.append(r)
    return sorted(series.values(), key=Series.sort_key)


def pick_fp(runs, preset):
    """The FP run for a preset's column: a sweep row named after the preset, else the first."""
    ranked = sorted(runs, key=lambda r: (not r.ok, r.path))
    for r in ranked:
        if re.search(r"(^|[-_/])" + re.escape(preset) + r"($|[-_])", r.name):
            return r
    return ranked[0] if ranked else None


def default_metrics(runs):
    """(task, its first metric) of every task some finished run evaluated, diagnostics aside."""
    found = {}
    for r in runs:
        if not r.ok:
            continue
        for task, metrics in r.tasks():
            if task and metrics and task not in found and task not in DIAGNOSTIC_TASKS:
                found[task] = metrics[0]
    tasks = sorted(found, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t))
    return [(t, found[t]) for t in tasks]


def parse_metrics(values):
    out = []
    for v in values or []:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            task, sep, metric = item.partition(":")
            if not sep or not task or not metric:
                raise UsageError(f"--metric {item!r}: expected TASK:METRIC, e.g. wikitext:word_perplexity")
            out.append((task, metric))
    return out


class Table:
    """The table of one model: rows of Series, a run (or None) per preset column."""

    def __init__(self, model):
        self.model = model
        self.presets = []       # column groups, e.g. ["w8a8", "w4a8"]
        self.metrics = []       # [(task, metric)]
        self.rows = []          # [(Series, {preset: Run or None})]
        self.notes = []         # lines under the table
        self.base = "."         # the run paths of the Markdown are relative to this


def build_table(model, runs, metrics):
    """The table of `runs` (all of one model, each with a readable config)."""
    t = Table(model)
    t.metrics = metrics or default_metrics(runs)
    presets = sorted({r.quant for r in runs if not r.is_fp}, key=preset_rank)
    t.presets = presets or ["fp"]
    paths = [os.path.abspath(r.path) for r in runs]
    t.base = os.path.dirname(paths[0]) if len(paths) == 1 else os.path.commonpath(paths)
    notes = [r.problem for r in runs if r.problem]
    for s in group_series(runs):
        cells = {}
        for preset in t.presets:
            if s.method == "fp":
                cells[preset] = pick_fp(s.runs, preset)
                continue
            cands = sorted((r for r in s.runs if r.quant == preset), key=lambda r: (not r.ok, r.path))
            cells[preset] = cands[0] if cands else None
            if not cands:
                notes.append(f"no run for {s.label} at {preset_label(preset)}")
            for other in cands[1:]:
                notes.append(f"{other.path}: same method, preset and settings as {cands[0].path}; "
                             f"the table shows {cands[0].path}")
        for r in cells.values():
            if r is None or not r.ok:
                continue
            for task, metric in t.metrics:
                if r.metric(task, metric) is None and not (task == "train" and r.trainer == "none"):
                    if task == "train":
                        have = ", ".join(sorted((r.results.get("train") or {}).keys())) or "no train section"
                    else:
                        have = ", ".join(f"{tk}:{'/'.join(ms)}" for tk, ms in r.tasks()) or "no evaluation"
                    note = f"{r.path}: results.json has no {task}:{metric} (it has: {have})"
                    if note not in notes:
                        notes.append(note)
        t.rows.append((s, cells))
    t.notes = notes
    return t


def shown_path(p):
    rel = os.path.relpath(p)
    return p if rel.startswith("..") else rel


def cell_text(run, task, metric):
    if run is None:
        return "-"
    if run.unfinished:
        return "unfinished"
    if not run.ok:
        return "n/a"
    v = run.metric(task, metric)
    if v is None:
        return "-" if task == "train" and run.trainer == "none" else "n/a"  # "-": does not apply
    return fmt(v)


def run_ref(run, base):
    if run is None:
        return "-"
    rel = os.path.relpath(os.path.abspath(run.path), base)
    return "`" + rel + "`"


def render_table_markdown(t):
    out = io.StringIO()
    single = len(t.metrics) == 1
    mtext = "; ".join(f"{task}:{metric}" for task, metric in t.metrics) or "none"
    dirs = {lower_is_better(m) for task, m in t.metrics if task != "train"}
    best = ""
    if dirs == {True}:
        best = " (lower is better; bold: the best quantized row of each column)"
    elif dirs == {False}:
        best = " (higher is better; bold: the best quantized row of each column)"
    out.write(f"Model: `{t.model}` · metric{'' if single else 's'}: {mtext}{best}\n\n")
    header = ["method"]
    for p in t.presets:
        for task, metric in t.metrics:
            header.append(preset_label(p) if single else f"{preset_label(p)} {metric_label(task, metric)}")
    header.append("runs (" + ", ".join(preset_label(p) for p in t.presets) + ")")
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|---|" + "---:|" * (len(header) - 2) + "---|\n")
    bold = best_cells(t)
    for s, cells in t.rows:
        line = [s.label]
        for p in t.presets:
            for task, metric in t.metrics:
                text = cell_text(cells[p], task, metric)
                line.append(f"**{text}**" if (id(s), p, task, metric) in bold else text)
        line.append(", ".join(run_ref(cells[p], t.base) for p in t.presets))
        out.write("| " + " | ".join(line) + " |\n")
    out.write(f"\nRuns: relative to `{shown_path(t.base)}/`.\n")
    if t.notes:
        out.write("\nNotes:\n")
        out.write("".join(f"- {n}\n" for n in t.notes))
    return out.getvalue()


def render_markdown(tables, notes):
    """Every model's table, then the problems no table could show."""
    parts = [render_table_markdown(t) for t in tables]
    if not tables:
        parts.append("No run could be read.\n")
    if notes:
        parts.append("Inputs not shown above:\n" + "".join(f"- {n}\n" for n in notes))
    return "\n".join(parts)


def best_cells(t):
    """{(id(series), preset, task, metric)} of the best quantized value of each column."""
    out = set()
    for p in t.presets:
        for task, metric in t.metrics:
            direction = None if task == "train" else lower_is_better(metric)
            if direction is None:  # training losses of different trainers do not compare
                continue
            vals = []
            for s, cells in t.rows:
                r = cells[p]
                if s.method != "fp" and r is not None and r.ok and r.metric(task, metric) is not None:
                    vals.append((r.metric(task, metric), s))
            if len(vals) < 2:
                continue
            target = min(v for v, _ in vals) if direction else max(v for v, _ in vals)
            out.update((id(s), p, task, metric) for v, s in vals if v == target)
    return out


def render_csv(tables):
    """One CSV for every table: the columns of all of them, one line per row; values in full
    precision; "<PRESET> run" holds the run directory as found."""
    presets = sorted({p for t in tables for p in t.presets}, key=preset_rank)
    metrics = []
    for t in tables:
        metrics += [m for m in t.metrics if m not in metrics]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    header = ["model", "method", "settings"]
    header += [f"{preset_label(p)} {task}:{metric}" for p in presets for task, metric in metrics]
    header += [f"{preset_label(p)} run" for p in presets]
    w.writerow(header + ["notes"])
    for t in tables:
        for s, cells in t.rows:
            line = [t.model, s.method, s.variant_text]
            for p in presets:
                r = cells.get(p)
                for task, metric in metrics:
                    v = r.metric(task, metric) if r is not None and r.ok else None
                    line.append("" if v is None else repr(v))
            notes = []
            for p in presets:
                r = cells.get(p)
                line.append("" if r is None else r.path)
                if p not in t.presets:
                    continue
                if r is None:
                    notes.append(f"{preset_label(p)}: no run")
                elif r.unfinished:
                    notes.append(f"{preset_label(p)}: unfinished")
                elif not r.ok:
                    notes.append(f"{preset_label(p)}: unreadable")
            w.writerow(line + ["; ".join(notes)])
    return out.getvalue()


def write_text(path, text):
    d = os.path.dirname(path)
    try:
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"{path}: cannot be written ({e.strerror})")


def gather(args):
    """The runs of the command line; every problem met is warned about on stderr."""
    runs, problems = collect_runs(args.runs)
    for p in problems:
        warn(p)
    for r in runs:
        if r.problem:
            warn(r.problem)
    return runs, problems


def cmd_table(args):
    metrics = parse_metrics(args.metric)
    runs, problems = gather(args)
    readable = [r for r in runs if r.config is not None]
    tables = [build_table(model, mruns, metrics) for model, mruns in by_model(readable)]
    notes = problems + [r.problem for r in runs if r.config is None and r.problem]
    md = render_markdown(tables, notes)
    sys.stdout.write(md)
    if not tables:
        warn("no run could be read from: " + " ".join(args.runs))
        return 1
    if args.output:
        write_text(args.output + ".md", md)
        write_text(args.output + ".csv", render_csv(tables))
        warn(f"wrote {args.output}.md and {args.output}.csv")
    if args.strict and (notes or any(t.notes for t in tables)):
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# Reading training metrics and quantizer files


def model_preset_panels(items):
    """The (model, preset) pairs of (series, run, data) items, one plot panel each, in the
    tables' order: model, then preset."""
    panels = []
    for s, r, _ in items:
        if (s.model, r.quant) not in panels:
            panels.append((s.model, r.quant))
    panels.sort(key=lambda mp: (next(s.model_rank for s, _, _ in items if s.model == mp[0]),
                                preset_rank(mp[1])))
    return panels


def open_metrics(run_dir):
    """The run's metrics.jsonl, or metrics.jsonl.gz as committed results keep it; None if neither."""
    plain = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(plain):
        return open(plain, encoding="utf-8", errors="replace")
    if os.path.isfile(plain + ".gz"):
        return gzip.open(plain + ".gz", "rt", encoding="utf-8", errors="replace")
    return None


def read_metrics(run):
    """metrics.jsonl as {layer: {step: (epoch, loss)}} (a resumed run's repeat steps: the last)."""
    path = os.path.join(run.path, "metrics.jsonl")
    mf = open_metrics(run.path)
    if mf is None:
        return None
    out = {}
    bad = 0
    with mf as f:
        for line in f:
            if not line.strip():
                continue
            try:
                m = json.loads(line)
                layer, step, loss = int(m.get("layer", -1)), int(m["step"]), float(m["loss"])
                epoch = int(m.get("epoch", 0))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                bad += 1
                continue
            out.setdefault(layer, {})[step] = (epoch, loss)
    if bad:
        warn(f"{path}: {bad} line(s) without step and loss skipped")
    return out


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1"}


def read_safetensors(path):
    """{name: numpy array} of a safetensors file (own reader: no safetensors package needed)."""
    import numpy as np
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror})")
    if len(blob) < 8:
        raise ReportError(f"{path}: not a safetensors file ({len(blob)} bytes, no header)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ReportError(f"{path}: not a safetensors file (header of {n} bytes in a file of {len(blob)})")
    try:
        header = json.loads(blob[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a safetensors file (header is not JSON: {e})")
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], info["shape"]
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ReportError(f"{path}: tensor '{name}' has no dtype, shape or data_offsets")
        if end > len(data) or begin > end:
            raise ReportError(f"{path}: tensor '{name}' data_offsets {begin}..{end} outside the "
                              f"{len(data)} data bytes")
        raw = data[begin:end]
        if dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[dtype])
        else:
            raise ReportError(f"{path}: tensor '{name}' has dtype {dtype}, which report.py does not read")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ReportError(f"{path}: tensor '{name}' holds {arr.size} values, its shape {shape} needs {count}")
        out[name] = arr.astype(np.float64).reshape(shape)
    return out


_ACT_NAME = re.compile(r"^(?:model\.layers\.(\d+)\.)?(.+)_quantizer\.(scale|offset|min|max)$")


def act_sites(tensors):
    """{(layer, site): {"scale": a, "offset": a} or {"min": a, "max": a}}; layer -1 for the
    model-level sites. Weight quantizers and LET scales are left out."""
    out = {}
    for name, arr in tensors.items():
        m = _ACT_NAME.match(name)
        if not m or ".weight_quantizer" in name:
            continue
        layer = int(m.group(1)) if m.group(1) is not None else -1
        out.setdefault((layer, m.group(2)), {})[m.group(3)] = arr
    return out


def act_specs(run):
    """{site: (bits, symmetric)} of the run's preset, and where it came from (None: unknown)."""
    qpath = os.path.join(run.path, "model", "quantization.json")
    if os.path.isfile(qpath):
        q = read_json(qpath)
        acts = ((q.get("quant") or {}).get("activations")) if isinstance(q, dict) else None
        if isinstance(acts, dict):
            return ({s: (int(v.get("bits", 8)), bool(v.get("symmetric", False)))
                     for s, v in acts.items() if isinstance(v, dict)}, qpath)
    quant = str((run.config or {}).get("quant", ""))
    for cand in (quant, os.path.join(REPO, quant), os.path.join(REPO, "configs", "quant", quant + ".json")):
        if cand and cand.endswith(".json") and os.path.isfile(cand):
            p = read_json(cand)
            acts = p.get("activations") if isinstance(p, dict) else None
            if not isinstance(acts, dict):
                break
            default = dict(acts.get("default") or {})
            specs = {}
            for site in SITE_ORDER:
                spec = dict(default)
                spec.update(acts.get(site) or {})
                specs[site] = spec
            for ov in (run.config or {}).get("quant_overrides") or []:
                key, _, value = str(ov).partition("=")
                if not key.startswith("activations."):
                    continue
                site, _, field = key[len("activations."):].rpartition(".")
                targets = SITE_ORDER if site == "default" else [site]
                for s in targets:
                    if s in specs:
                        specs[s][field] = (value.lower() == "true") if field == "symmetric" else value
            return ({s: (int(v.get("bits", 8)), bool(v.get("symmetric", False)))
                     for s, v in specs.items()}, cand)
    return None, None


def range_width(qp, spec):
    """The widest channel's range width, or the scale (step) itself when the bits are unknown."""
    import numpy as np
    if "min" in qp and "max" in qp:
        return float(np.max(np.asarray(qp["max"]) - np.asarray(qp["min"])))
    if "scale" not in qp:
        return None
    scale = np.abs(np.asarray(qp["scale"], dtype=np.float64))
    if spec is None:
        return float(np.max(scale))
    bits, symmetric = spec
    levels = 2 * (2 ** (bits - 1) - 1) if symmetric else 2 ** bits - 1
    return float(np.max(scale)) * levels


# ---------------------------------------------------------------------------------------------
# Plots


class Plotter:
    def __init__(self, out_dir):
        try:
            import matplotlib
        except ImportError as e:
            raise ReportError(
                f"plots need matplotlib, which {sys.executable} cannot import ({e}); install it "
                f"with: {sys.executable} -m pip install -r {os.path.join(REPO, 'scripts', 'requirements-report.txt')}")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
        self.plt, self.np = plt, np
        plt.rcParams.update({
            "svg.hashsalt": "mobilequant-report",   # stable element ids
            "svg.fonttype": "none",                 # text as text: small, diffable SVGs
            "font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7,
            "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
        })
        self.out_dir = out_dir
        self.written = []
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise ReportError(f"{out_dir}: cannot create the output directory ({e.strerror})")

    def save(self, fig, name):
        base = os.path.join(self.out_dir, name)
        try:
            fig.savefig(base + ".png", dpi=150, bbox_inches="tight", metadata={"Software": None})
            fig.savefig(base + ".svg", bbox_inches="tight", metadata={"Date": None})
        except OSError as e:
            raise ReportError(f"{base}.png/.svg: cannot be written ({e.strerror})")
        finally:
            self.plt.close(fig)
        self.written += [base + ".png", base + ".svg"]
        print(f"wrote {base}.png and .svg")

    def grid(self, n, ncols, w=4.2, h=3.0, **kw):
        ncols = max(1, min(ncols, n))
        nrows = (n + ncols - 1) // ncols
        fig, axes = self.plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False,
                                      layout="constrained", **kw)
        flat = [ax for row in axes for ax in row]
        for ax in flat[n:]:
            ax.set_visible(False)
        return fig, flat[:n]


def skipped(name, why):
    print(f"skipped {name}: {why}")


# A colour per method, kept across every figure (the paper's methods first).
METHOD_COLOR = {"fp": "black", "rtn": "tab:brown", "smoothquant-static": "tab:olive",
                "smoothquant-edge": "tab:green", "omniquant-static": "tab:cyan",
                "omniquant-edge": "tab:blue", "omniquant-edge-arl": "tab:orange",
                "omniquant-edge-e2e": "tab:purple", "mobilequant": "tab:red"}
OTHER_COLORS = ["tab:pink", "tab:gray", "gold", "teal", "navy", "maroon"]
MODEL_LINESTYLES = ["-", "--", "-.", ":"]


def series_styles(series):
    """{id(series): (colour, linestyle)}: hue by method, lighter shades for a method's earlier
    settings (a grid's smaller budgets), line style by model."""
    from matplotlib.colors import to_rgb
    others = sorted({s.method for s in series if s.method not in METHOD_COLOR})
    per_method = {}
    for s in series:
        per_method.setdefault((s.model, s.method), []).append(s)
    out = {}
    for (model, method), group in per_method.items():
        base = METHOD_COLOR.get(method) or OTHER_COLORS[others.index(method) % len(OTHER_COLORS)]
        rgb = to_rgb(base)
        for i, s in enumerate(group):
            t = 1.0 if len(group) == 1 else 0.35 + 0.65 * i / (len(group) - 1)
            colour = tuple(t * c + (1 - t) * 1.0 for c in rgb)
            out[id(s)] = (colour, MODEL_LINESTYLES[s.model_rank % len(MODEL_LINESTYLES)])
    return out


def running_mean(np, y, window):
    if window <= 1 or len(y) < window:
        return np.asarray(y, dtype=float)
    c = np.cumsum(np.insert(np.asarray(y, dtype=float), 0, 0.0))
    head = [c[i + 1] / (i + 1) for i in range(window - 1)]
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


def legend(ax, n):
    """A legend inside the axes when short, to its right when long; none without labels."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if n > 5 or max(len(x) for x in labels) > 40:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        ax.legend(loc="best")


def panel_title(model, multi_model, text):
    return (model_short(model) + " · " if multi_model else "") + text


def log_y(ax):
    """Log y axis whose labels read as plain numbers, within a single decade too."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def integer_ticks(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_loss_end_to_end(P, series, multi_model):
    np = P.np
    items = []
    for s in series:
        for r in s.runs:
            if r.trainer == "end-to-end":
                m = read_metrics(r)
                if m and m.get(-1):
                    items.append((s, r, m[-1]))
    if not items:
        return skipped("loss_end_to_end", "no end-to-end run with metrics.jsonl")
    panels = model_preset_panels(items)
    styles = series_styles(series)
    fig, axes = P.grid(len(panels), 2, w=5.6, h=3.6)
    for ax, (model, preset) in zip(axes, panels):
        n = 0
        for s, r, steps in items:
            if s.model != model or r.quant != preset:
                continue
            xs = sorted(steps)
            ys = [steps[x][1] for x in xs]
            colour, ls = styles[id(s)]
            ax.plot(xs, ys, color=colour, alpha=0.25, lw=0.7)
            ax.plot(xs, running_mean(np, ys, max(1, len(xs) // 20)), color=colour, ls=ls, lw=1.6, label=s.label)
            n += 1
        log_y(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(panel_title(model, multi_model, f"end to end · {preset_label(preset)}"))
        legend(ax, n)
    fig.suptitle("Training loss, end to end (thin: every step; thick: running mean)")
    P.save(fig, "loss_end_to_end")


def blockwise_items(series):
    items = []
    for s in series:
        for r in s.runs:
            if r.trainer == "block-wise":
                layers = {k: v for k, v in (read_metrics(r) or {}).items() if k >= 0 and v}
                if layers:
                    items.append((s, r, layers))
    return sorted(items, key=lambda it: (it[0].model_rank, preset_rank(it[1].quant), it[0].sort_key()))


def epoch_means(steps):
    """{epoch: mean loss} of one block's {step: (epoch, loss)}."""
    by = {}
    for epoch, loss in steps.values():
        by.setdefault(epoch, []).append(loss)
    return {e: sum(v) / len(v) for e, v in by.items()}


def plot_loss_block_wise(P, series, multi_model):
    np = P.np
    import matplotlib
    items = blockwise_items(series)
    if not items:
        skipped("loss_block_wise", "no block-wise run with metrics.jsonl")
        return skipped("loss_block_wise_layers", "no block-wise run with metrics.jsonl")
    # One panel per run: every block's loss relative to its first epoch's mean, by layer.
    fig, axes = P.grid(len(items), 3, w=4.6, h=3.2)
    cmap = matplotlib.colormaps["viridis"]
    for ax, (s, r, layers) in zip(axes, items):
        n = max(layers) + 1
        for layer in sorted(layers):
            steps = layers[layer]
            xs = sorted(steps)
            means = epoch_means(steps)
            first = means[min(means)]
            ys = [steps[x][1] / first if first > 0 else float("nan") for x in xs]
            ax.plot(xs, running_mean(np, ys, max(1, len(xs) // 16)), color=cmap(layer / max(1, n - 1)), lw=1)
        sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, max(1, n - 1)))
        cb = fig.colorbar(sm, ax=ax, label="layer")
        from matplotlib.ticker import MaxNLocator
        cb.locator = MaxNLocator(integer=True)
        cb.update_ticks()
        ax.set_xlabel("step within the block")
        ax.set_ylabel("loss / first-epoch mean")
        ax.set_title(panel_title(s.model, multi_model, f"{s.label} · {preset_label(r.quant)}"), fontsize=8)
    fig.suptitle("Block-wise training: each block's loss relative to its first epoch (running mean)")
    P.save(fig, "loss_block_wise")

    # First- and last-epoch mean loss per layer, one panel per model and preset.
    panels = model_preset_panels(items)
    styles = series_styles(series)
    fig, axes = P.grid(len(panels), 2, w=5.6, h=3.6)
    for ax, (model, preset) in zip(axes, panels):
        n = 0
        for s, r, layers in items:
            if s.model != model or r.quant != preset:
                continue
            ls = sorted(layers)
            firsts, lasts = [], []
            for layer in ls:
                means = epoch_means(layers[layer])
                firsts.append(means[min(means)])
                lasts.append(means[max(means)])
            colour, _ = styles[id(s)]
            ax.plot(ls, lasts, "o-", color=colour, ms=3, lw=1.4, label=f"{s.label}, last epoch")
            ax.plot(ls, firsts, "--", color=colour, lw=0.9, alpha=0.7, label=f"{s.label}, first epoch")
            n += 2
        log_y(ax)
        integer_ticks(ax)
        ax.set_xlabel("layer (block)")
        ax.set_ylabel("block output MSE (epoch mean)")
        ax.set_title(panel_title(model, multi_model, f"block-wise · {preset_label(preset)}"))
        legend(ax, n)
    fig.suptitle("Block-wise training loss per layer, first vs last epoch")
    P.save(fig, "loss_block_wise_layers")


BUDGET_MARKERS = ["o", "s", "^", "D", "v", "P"]  # one per calib.samples value in ppl_vs_budget


def plot_ppl_vs_budget(P, runs, metrics):
    readable = [r for r in runs if r.config is not None]
    models = by_model(readable)
    multi_model = len(models) > 1
    rows = []   # (model, runs of the model, (task, metric), [presets])
    for model, mruns in models:
        trained = [r for r in mruns if r.ok and r.trainer != "none" and not r.is_fp and r.budget]
        for task, metric in metrics or default_metrics(mruns):
            presets = sorted({r.quant for r in trained if r.metric(task, metric) is not None}, key=preset_rank)
            if presets:
                rows.append((model, mruns, (task, metric), presets))
    if not rows:
        return skipped("ppl_vs_budget", "no finished trained run (config.json with calib.samples and "
                       "train.epochs, results.json with the metric)")
    ncols = max(len(p) for *_, p in rows)
    # A line per window count makes long legends, drawn beside the axes: room for both.
    fig, axes = P.plt.subplots(len(rows), ncols, figsize=(9.5 * ncols, 4.2 * len(rows)), squeeze=False,
                               layout="constrained")
    most_points = 0
    for i, (model, mruns, (task, metric), presets) in enumerate(rows):
        trained = [r for r in mruns if r.ok and r.trainer != "none" and not r.is_fp and r.budget]
        series = group_series(trained, exclude={"calib.samples", "train.epochs"})
        styles = series_styles(series)
        fps = [r for r in mruns if r.ok and r.is_fp]
        untrained = sorted((r for r in mruns if r.ok and not r.is_fp and r.trainer == "none"),
                           key=lambda r: (method_rank(r.method), r.path))
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(presets):
                ax.set_visible(False)
                continue
            preset = presets[j]
            ticks, n = {}, 0
            # One line per series and window count, over the epochs: a line never joins two
            # runs of one budget (16 x 4 and 32 x 2), which would draw a vertical step.
            sample_counts = sorted({r.budget[0] for s in series for r in s.runs if r.quant == preset})
            for s in series:
                pts = sorted((r.budget[0] * r.budget[1], r.budget, r.metric(task, metric))
                             for r in s.runs if r.quant == preset and r.metric(task, metric) is not None)
                if not pts:
                    continue
                for x, (ns, ne), _ in pts:
                    ticks.setdefault(x, set()).add(f"{ns}×{ne}")
                colour, ls = styles[id(s)]
                for ns in sorted({b[0] for _, b, _ in pts}):
                    line = [p for p in pts if p[1][0] == ns]
                    most_points = max(most_points, len(line))
                    marker = BUDGET_MARKERS[sample_counts.index(ns) % len(BUDGET_MARKERS)]
                    suffix = f", {ns} windows" if len(sample_counts) > 1 else ""
                    ax.plot([p[0] for p in line], [p[2] for p in line], marker=marker, ls=ls, color=colour,
                            ms=4.5, label=f"{s.label} [{s.runs[0].trainer}]{suffix}")
                    n += 1
            fp = pick_fp(fps, preset)
            if fp is not None and fp.metric(task, metric) is not None:
                ax.axhline(fp.metric(task, metric), color="black", ls="--", lw=1, label="FP")
                n += 1
            shown = set()
            for r in untrained:
                if r.quant == preset and r.metric(task, metric) is not None and r.method not in shown:
                    shown.add(r.method)  # one line per method (a sweep's duplicate rows: the first)
                    ax.axhline(r.metric(task, metric), color=METHOD_COLOR.get(r.method, "grey"), ls=":", lw=1.2,
                               label=f"{method_label(r.method)} (no training)")
                    n += 1
            xs = sorted(ticks)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([" / ".join(sorted(ticks[x])) for x in xs], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("calib.samples × train.epochs (log scale)")
            ax.set_ylabel(metric_label(task, metric))
            ax.set_title(panel_title(model, multi_model, f"{preset_label(preset)} · {metric_label(task, metric)}"))
            legend(ax, n)
    fig.suptitle("Metric vs training budget (Table 2): block-wise vs end to end")
    P.save(fig, "ppl_vs_budget")
    if most_points < 2:
        print("ppl_vs_budget: one point per line only; a sweep over train.epochs (per calib.samples) draws lines")


def run_slugs(runs):
    """A file-name-safe, unique name per run: its directory, with its parent's if needed."""
    names = {}
    for r in runs:
        names.setdefault(r.name, []).append(r)
    out = {}
    for name, rs in names.items():
        for r in rs:
            slug = name if len(rs) == 1 else os.path.basename(os.path.dirname(os.path.abspath(r.path))) + "-" + name
            out[id(r)] = re.sub(r"[^A-Za-z0-9._-]+", "_", slug)
    return out


def site_rank(site):
    return SITE_ORDER.index(site) if site in SITE_ORDER else len(SITE_ORDER)


def plot_act_ranges(P, runs):
    np = P.np
    quantized = [r for r in runs if r.config is not None and not r.is_fp]
    slugs = run_slugs(quantized)
    absent, no_change = [], []
    for r in quantized:
        files = {}
        for key, rel in (("calibrated", CALIBRATED_FILE), ("learned", LEARNED_FILE)):
            path = os.path.join(r.path, rel)
            if os.path.isfile(path):
                try:
                    files[key] = act_sites(read_safetensors(path))
                except ReportError as e:
                    warn(str(e))
        slug = slugs[id(r)]
        if not files:
            absent.append(r.name)
            continue
        specs, _ = act_specs(r)
        if specs is None:
            print(f"act_ranges_{slug}: the bits of preset {r.quant} are unknown (no model/quantization.json, "
                  f"no configs/quant/{r.quant}.json): plotting the scale (step size) instead of the width")
        sites = sorted({site for d in files.values() for (_, site) in d}, key=site_rank)
        if not sites:
            absent.append(r.name + " (no activation quantizer in its files)")
            continue
        widths = {key: {k: range_width(v, specs.get(k[1]) if specs else None) for k, v in d.items()}
                  for key, d in files.items()}
        styles = {"calibrated": dict(color="grey", ls="--", marker="o", ms=3, lw=1, label="after calibration"),
                  "learned": dict(color="tab:red", ls="-", marker="s", ms=3, lw=1.3, label="after learning")}
        fig, axes = P.grid(len(sites), 4, w=3.6, h=2.6)
        for ax, site in zip(axes, sites):
            for key in ("calibrated", "learned"):
                pts = sorted((layer, w) for (layer, s), w in widths.get(key, {}).items() if s == site and w)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], **styles[key])
            log_y(ax)
            integer_ticks(ax)
            bits = f" ({specs[site][0]}-bit)" if specs and site in specs else ""
            ax.set_title(site + bits, fontsize=8)
            ax.set_xlabel("layer (-1: model level)" if site_rank(site) >= SITE_ORDER.index("model.embed_tokens.output")
                          else "layer")
        axes[0].legend(loc="best")
        what = "range width (widest channel)" if specs else "scale (step size)"
        fig.suptitle(f"{r.name}: {method_label(r.method)} · {preset_label(r.quant)} · {model_short(model_of(r))}"
                     f" — activation {what} per layer, log scale")
        P.save(fig, f"act_ranges_{slug}")
        if len(files) < 2:
            no_change.append(os.path.join(r.path, CALIBRATED_FILE if "calibrated" not in files else LEARNED_FILE))
            continue
        # What learning did: log2(learned / calibrated) per site and layer.
        layers = sorted({layer for d in widths.values() for (layer, _) in d})
        grid = np.full((len(sites), len(layers)), np.nan)
        for i, site in enumerate(sites):
            for j, layer in enumerate(layers):
                a, b = widths["calibrated"].get((layer, site)), widths["learned"].get((layer, site))
                if a and b and a > 0 and b > 0:
                    grid[i, j] = math.log2(b / a)
        finite = grid[np.isfinite(grid)]
        lim = max(1e-3, float(np.max(np.abs(finite)))) if finite.size else 1.0
        fig, ax = P.plt.subplots(figsize=(max(7.0, 0.32 * len(layers) + 4.5), 0.3 * len(sites) + 1.8),
                                 layout="constrained")
        im = ax.imshow(grid, cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(sites)))
        ax.set_yticklabels(sites, fontsize=7)
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(["model" if layer < 0 else str(layer) for layer in layers], fontsize=7)
        ax.set_xlabel("layer")
        ax.grid(False)
        if len(layers) <= 12:
            for i in range(len(sites)):
                for j in range(len(layers)):
                    if np.isfinite(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=6)
        fig.colorbar(im, ax=ax, label="log2(learned width / calibrated width)")
        ax.set_title(f"{r.name}: {method_label(r.method)} · {preset_label(r.quant)} · {model_short(model_of(r))}\n"
                     "how training moved the activation ranges (red: wider, blue: narrower)", fontsize=8)
        P.save(fig, f"act_range_change_{slug}")
    if absent:
        skipped("act_ranges", f"no {CALIBRATED_FILE} or {LEARNED_FILE} in: " + ", ".join(absent))
    if no_change:
        skipped("act_range_change", "it needs both the calibrated and the learned quantizers; absent: "
                + ", ".join(no_change))


def layer_error_of(run):
    """[(layer, rel_mse)] of the run's layer-error entry, by layer; [] when it has none."""
    for entry in eval_entries(run.results or {}):
        if entry.get("task") != "layer-error" or not isinstance(entry.get("layers"), list):
            continue
        pts = [(e["layer"], float(e["rel_mse"])) for e in entry["layers"]
               if isinstance(e, dict) and isinstance(e.get("layer"), int)
               and isinstance(e.get("rel_mse"), (int, float)) and not isinstance(e.get("rel_mse"), bool)]
        return sorted(pts)
    return []


def plot_layer_error(P, series, multi_model):
    """Relative MSE of each block's output vs the layer; silent when no run has it."""
    items = []
    for s in series:
        for r in s.runs:
            pts = [(x, y) for x, y in layer_error_of(r) if y > 0] if r.ok else []
            if pts:   # FP's zeros have no place on a log scale
                items.append((s, r, pts))
    if not items:
        return
    items.sort(key=lambda it: (it[0].model_rank, preset_rank(it[1].quant), it[0].sort_key()))
    models = []
    for s, _, _ in items:
        if s.model not in models:
            models.append(s.model)
    presets = sorted({r.quant for _, r, _ in items}, key=preset_rank)
    preset_ls = {p: MODEL_LINESTYLES[i % len(MODEL_LINESTYLES)] for i, p in enumerate(presets)}
    styles = series_styles(series)
    fig, axes = P.grid(len(models), 2, w=5.6, h=3.6)
    for ax, model in zip(axes, models):
        n = 0
        for s, r, pts in items:
            if s.model != model:
                continue
            colour, _ = styles[id(s)]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, lw=1.4, color=colour,
                    ls=preset_ls[r.quant], label=f"{s.label} · {preset_label(r.quant)}")
            n += 1
        log_y(ax)
        integer_ticks(ax)
        ax.set_xlabel("layer (block)")
        ax.set_ylabel("relative MSE of the block output")
        ax.set_title(panel_title(model, multi_model, "block outputs against the float model"))
        legend(ax, n)
    fig.suptitle("Per-layer output error: Σ(h − h_float)² / Σ h_float² (eval task layer-error)")
    P.save(fig, "layer_error")


def cmd_plots(args):
    metrics = parse_metrics(args.metric)
    runs, problems = gather(args)
    readable = [r for r in runs if r.config is not None]
    if not readable:
        warn("no run could be read from: " + " ".join(args.runs))
        return 1
    P = Plotter(args.output)
    series = group_series(readable)
    multi_model = len(by_model(readable)) > 1
    plot_loss_end_to_end(P, series, multi_model)
    plot_loss_block_wise(P, series, multi_model)
    plot_ppl_vs_budget(P, runs, metrics)
    plot_act_ranges(P, runs)
    plot_layer_error(P, series, multi_model)
    if args.strict and (problems or any(r.problem for r in runs)):
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# The integer runtime beside the simulation (scripts/int_beside.sh)


class IntRow:
    """One run and task of an int_beside.sh directory."""

    def __init__(self, path, model, method, preset, task, metric, run_value, sim, integer,
                 sim64, agreement, floor64, positions, documents, limit, agreement64=None,
                 on_device=None):
        self.path, self.model, self.method, self.preset = path, model, method, preset
        self.task, self.metric, self.run_value = task, metric, run_value
        self.sim, self.integer, self.sim64 = sim, integer, sim64
        self.agreement, self.floor64, self.positions = agreement, floor64, positions
        self.documents, self.limit = documents, limit
        self.agreement64 = agreement64
        # eval --compare-device: the fp32 simulation on another device (a dict, or None)
        self.on_device = on_device


def int_rows(path):
    """The IntRows of one run's directory of int_beside.sh; ReportError naming the file."""
    epath = os.path.join(path, "eval_int.json")
    rpath = os.path.join(path, "run_results.json")
    ev, rr = read_json(epath), read_json(rpath)
    try:
        cfg = rr["config"]
        model, method, preset = cfg["model"], cfg["method"], cfg["quant"]
        limit = ev.get("config", {}).get("limit", -1)
        sims = {e.get("task"): e for e in eval_entries(rr)}
        rows = []
        for r in ev["results"]:
            m = r["metrics"][0]
            run_value = None
            for x in sims.get(r["task"], {}).get("metrics", []):
                if x.get("metric") == m["metric"]:
                    run_value = x.get("value")
            rows.append(IntRow(path, model, method, preset, r["task"], m["metric"], run_value,
                               m["simulated"], m["integer"], m.get("simulated_fp64"),
                               r.get("greedy_agreement"),
                               r.get("greedy_agreement_fp64_vs_fp32_simulation"),
                               r.get("positions"), r.get("documents"), limit,
                               r.get("greedy_agreement_with_fp64_simulation"),
                               r.get("simulated_on_compare_device")))
        return rows
    except (KeyError, IndexError, TypeError) as e:
        raise ReportError(f"{epath} or {rpath}: missing or malformed entry ({e!r})")


def pct(v, signed=False):
    if v is None:
        return "-"
    return f"{100 * v:+.2f}%" if signed else f"{100 * v:.2f}%"


def render_int(rows, notes):
    out = io.StringIO()
    models = []
    for r in rows:
        if r.model not in models:
            models.append(r.model)
    for model in models:
        mrows = [r for r in rows if r.model == model]
        keys = sorted({(r.task, r.metric) for r in mrows}, key=lambda k: (
            TASK_ORDER.index(k[0]) if k[0] in TASK_ORDER else len(TASK_ORDER), k))
        presets = sorted({r.preset for r in mrows}, key=preset_rank)
        methods = sorted({r.method for r in mrows}, key=method_rank)
        for task, metric in keys:
            out.write(f"### {model_short(model)}: {metric_label(task, metric)}, simulated and "
                      "integer\n\n")
            head = ["method"]
            for p in presets:
                head += [f"{preset_label(p)} simulated", f"{preset_label(p)} integer"]
            out.write("| " + " | ".join(head) + " |\n")
            out.write("|---|" + "---:|" * (len(head) - 1) + "\n")
            for m in methods:
                cells = [method_label(m)]
                for p in presets:
                    hit = [r for r in mrows if (r.method, r.preset, r.task, r.metric) ==
                           (m, p, task, metric)]
                    cells += [fmt(hit[0].run_value), fmt(hit[0].integer)] if hit else ["-", "-"]
                out.write("| " + " | ".join(cells) + " |\n")
            limited = sorted({(r.limit, r.documents) for r in mrows
                              if (r.task, r.metric) == (task, metric) and r.limit >= 0})
            if limited:
                out.write("\n\"integer\" covers the first " +
                          ", ".join(f"{d} documents (limit {lim})" for lim, d in limited) +
                          "; \"simulated\" is the run's whole test set: compare \"integer\" "
                          "with \"simulated (same windows)\" below.\n")
            out.write("\n")
        out.write(f"### {model_short(model)}: every run, on the integer runtime's windows\n\n")
        out.write("| preset | method | task | metric | simulated (run) | simulated (same windows) "
                  "| integer | Δ | greedy agreement | fp64 vs fp32 agreement | simulated fp64 "
                  "| Δ vs fp64 | agreement with fp64 | documents | positions | run |\n")
        out.write("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for r in sorted(mrows, key=lambda r: (preset_rank(r.preset), method_rank(r.method),
                                              r.task)):
            rel = (r.integer - r.sim) / r.sim if r.sim else None
            rel64 = (r.integer - r.sim64) / r.sim64 if r.sim64 else None
            out.write(f"| {preset_label(r.preset)} | {method_label(r.method)} | {r.task} | "
                      f"{r.metric} | {fmt(r.run_value)} | {fmt(r.sim)} | {fmt(r.integer)} | "
                      f"{pct(rel, True)} | {pct(r.agreement)} | {pct(r.floor64)} | "
                      f"{fmt(r.sim64)} | {pct(rel64, True)} | {pct(r.agreement64)} | "
                      f"{r.documents} | {r.positions} | {os.path.basename(r.path)} |\n")
        out.write("\n")
        drows = [r for r in mrows if r.on_device]
        if drows:
            out.write(f"### {model_short(model)}: the fp32 simulation on another device (TF32 "
                      "off), on the same windows\n\n")
            out.write("| preset | method | task | metric | device | simulated fp32 (CPU) | "
                      "simulated fp32 (device) | agreement with the CPU's | with the integer "
                      "runtime | CPU fp32 vs fp64 agreement | positions | run |\n")
            out.write("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|\n")
            for r in sorted(drows, key=lambda r: (preset_rank(r.preset),
                                                  method_rank(r.method), r.task)):
                d = r.on_device
                value = (d.get("values") or [None])[0]
                out.write(f"| {preset_label(r.preset)} | {method_label(r.method)} | {r.task} | "
                          f"{r.metric} | {d.get('device', '-')} | {fmt(r.sim)} | {fmt(value)} | "
                          f"{pct(d.get('greedy_agreement_with_cpu_fp32_simulation'))} | "
                          f"{pct(d.get('greedy_agreement_with_integer'))} | {pct(r.floor64)} | "
                          f"{r.positions} | {os.path.basename(r.path)} |\n")
            out.write("\n")
    for n in notes:
        out.write(f"- {n}\n")
    return out.getvalue()


def render_int_csv(rows):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["model", "preset", "method", "task", "metric", "simulated_run",
                "simulated_same_windows", "integer", "simulated_fp64", "relative_difference",
                "greedy_agreement", "greedy_agreement_fp64_vs_fp32",
                "relative_difference_vs_fp64", "greedy_agreement_with_fp64", "documents",
                "limit", "positions", "run", "compare_device", "simulated_compare_device",
                "greedy_agreement_compare_device_vs_cpu_fp32",
                "greedy_agreement_compare_device_vs_integer"])
    for r in rows:
        rel = (r.integer - r.sim) / r.sim if r.sim else ""
        rel64 = (r.integer - r.sim64) / r.sim64 if r.sim64 else ""
        a64 = "" if r.agreement64 is None else r.agreement64
        d = r.on_device or {}
        w.writerow([r.model, r.preset, r.method, r.task, r.metric, r.run_value, r.sim,
                    r.integer, r.sim64, rel, r.agreement, r.floor64, rel64, a64, r.documents,
                    r.limit, r.positions, r.path, d.get("device", ""),
                    (d.get("values") or [""])[0],
                    d.get("greedy_agreement_with_cpu_fp32_simulation", ""),
                    d.get("greedy_agreement_with_integer", "")])
    return out.getvalue()


def cmd_int(args):
    dirs, notes = [], []
    for p in args.runs:
        if not os.path.isdir(p):
            notes.append(f"{p}: no such directory")
        elif os.path.isfile(os.path.join(p, "eval_int.json")):
            dirs.append(p)
        else:
            subs = sorted(os.path.join(p, d) for d in os.listdir(p))
            found = [d for d in subs if os.path.isfile(os.path.join(d, "eval_int.json"))]
            if not found:
                notes.append(f"{p}: no subdirectory with eval_int.json")
            dirs += found
    rows = []
    for d in dirs:
        try:
            rows += int_rows(d)
        except ReportError as e:
            notes.append(str(e))
    for n in notes:
        warn(n)
    if not rows:
        warn("no eval_int.json could be read from: " + " ".join(args.runs))
        return 1
    md = render_int(rows, notes)
    sys.stdout.write(md)
    if args.output:
        write_text(args.output + ".md", md)
        write_text(args.output + ".csv", render_int_csv(rows))
        warn(f"wrote {args.output}.md and {args.output}.csv")
    return 1 if args.strict and notes else 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("A RUN_DIR"):], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{table,plots,int}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories or sweep output directories")
    common.add_argument("--metric", action="append", metavar="TASK:METRIC",
                        help="a column, e.g. wikitext:word_perplexity (repeatable or comma separated; "
                             "default: the first metric of every evaluated task but layer-error)")
    common.add_argument("--strict", action="store_true",
                        help="exit 1 when any run is unfinished or unreadable or a path is missing")
    pt = sub.add_parser("table", parents=[common], help="Markdown and CSV table, rows = methods (FP first), "
                        "columns = preset x metric", description="Markdown (stdout, OUT_PREFIX.md) and CSV "
                        "(OUT_PREFIX.csv) table laid out like the paper's. See report.py --help.")
    pt.add_argument("-o", "--output", metavar="OUT_PREFIX", help="write OUT_PREFIX.md and OUT_PREFIX.csv")
    pp = sub.add_parser("plots", parents=[common], help="PNG and SVG plots: loss curves, metric vs "
                        "samples x epochs, activation ranges before/after learning, per-layer error",
                        description="PNG and SVG plots into OUT_DIR. See report.py --help.")
    pp.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="directory for the plots")
    pi = sub.add_parser("int", help="the integer runtime beside the simulation (the output of "
                        "scripts/int_beside.sh)", description="Tables of scripts/int_beside.sh's "
                        "output: per method and preset the run's simulated figure and the "
                        "integer runtime's. See report.py --help.")
    pi.add_argument("runs", nargs="+", metavar="INT_BESIDE_OUT",
                    help="int_beside.sh output directories, or single runs' subdirectories")
    pi.add_argument("-o", "--output", metavar="OUT_PREFIX", help="write OUT_PREFIX.md and OUT_PREFIX.csv")
    pi.add_argument("--strict", action="store_true", help="exit 1 when any directory is unreadable")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "int":
            return cmd_int(args)
        return cmd_table(args) if args.command == "table" else cmd_plots(args)
    except UsageError as e:
        warn("error: " + str(e))
        return 2
    except ReportError as e:
        warn("error: " + str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
