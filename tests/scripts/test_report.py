#!/usr/bin/env python3
"""Tests of scripts/report.py on synthetic run directories built in a temporary directory.

  python3 tests/scripts/test_report.py      (exit status 1 when a check fails)

Only the standard library runs here; report.py itself runs in a subprocess under the first
Python that imports matplotlib and numpy: $MQ_PYTHON, then the repository's .venv, then this
interpreter. Without one, the plot checks are skipped (and say so) while the table checks,
which need neither, still run. Set MQ_KEEP_TMP=1 to keep the run directories and outputs.
"""
import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "scripts", "report.py")


def find_python():
    """(python for report.py, whether it can plot)."""
    cands = [os.environ.get("MQ_PYTHON"), os.path.join(ROOT, ".venv", "bin", "python"), sys.executable]
    for py in cands:
        if py and os.path.isfile(py) and subprocess.run(
                [py, "-c", "import matplotlib, numpy"], capture_output=True).returncode == 0:
            return py, True
    return sys.executable, False


PYTHON, CAN_PLOT = find_python()


# ---------------------------------------------------------------------------------------------
# Synthetic run directories


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def write_safetensors(path, tensors):
    """tensors: {name: (shape, [float, ...])}, written as F32."""
    header, data = {}, b""
    for name in sorted(tensors):
        shape, values = tensors[name]
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = {"source": "test_report.py"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def config(method, quant, trainer, output, samples=4, epochs=2):
    return {
        "alpha": 0.5,
        "calib": {"batch_size": 1, "data": "", "samples": samples, "seed": 1337, "separator": "",
                  "seqlen": 32, "stats_cache": ""},
        "description": "synthetic runs of test_report.py",
        "device": "cpu",
        "eval": {"batch_size": 1, "data": ["docs=docs.txt"], "limit": -1, "max_length": 64,
                 "separator": "<|endoftext|>", "seqlen": 0, "tasks": ["docs"]},
        "init": "smoothquant-edge",
        "method": method,
        "model": "models/tiny.bin",
        "output": output,
        "quant": quant,
        "quant_overrides": [],
        "tokenizer": "",
        "train": {"batch_size": 1, "epochs": epochs, "trainer": trainer, "loss": "mse",
                  "let": {"enabled": trainer != "none", "lr": 0.001, "min_lr": 0.0001},
                  "lwc": {"enabled": trainer != "none", "lr": 0.01, "min_lr": 0.001},
                  "lrl": {"enabled": method in ("mobilequant", "omniquant-edge-arl"), "lr": 1e-6,
                          "min_lr": 1e-7}},
    }


def layer_error_entry(rel_mse):
    """The layer-error entry of `mobilequant run`'s results.json, one value per block."""
    return {"task": "layer-error", "windows": 4, "tokens": 256,
            "metrics": [{"metric": "rel_mse_last_layer", "value": rel_mse[-1]}],
            "layers": [{"layer": i, "rel_mse": v, "cosine": 1.0 - v} for i, v in enumerate(rel_mse)],
            "final_norm": {"rel_mse": rel_mse[-1], "cosine": 1.0 - rel_mse[-1]}}


def make_run(parent, name, method, quant, trainer="none", ppl=None, samples=4, epochs=2, finished=True,
             layer_error=None):
    d = os.path.join(parent, name)
    cfg = config(method, quant, trainer, "runs/" + name, samples, epochs)
    write_json(os.path.join(d, "config.json"), cfg)
    with open(os.path.join(d, "log.txt"), "w") as f:
        f.write(f"[2026-11-22T10:00:00Z] starting run runs/{name}: {method} / {quant}\n")
        if trainer != "none":
            f.write("[2026-11-22T10:00:01Z] training\n")
    steps = 4
    lines = []
    if trainer == "end-to-end":
        for e in range(epochs):
            for s in range(steps):
                lines.append({"elapsed_s": 0.1, "epoch": e, "grad_norm": 1.0, "layer": -1,
                              "loss": 1.0 / (1 + e * steps + s), "lr": {"let": 1e-3, "lrl": 1e-6, "lwc": 1e-2},
                              "step": e * steps + s, "tokens": 32})
    elif trainer == "block-wise":
        for layer in range(2):
            for e in range(epochs):
                for s in range(steps):
                    lines.append({"elapsed_s": 0.1, "epoch": e, "grad_norm": 1.0, "layer": layer,
                                  "loss": (layer + 1) * 0.01 / (1 + e * steps + s), "lr": {"let": 1e-3},
                                  "step": e * steps + s, "tokens": 32})
    if not finished:
        lines = lines[:3]
    if lines:
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            f.write("".join(json.dumps(m) + "\n" for m in lines))
    if finished:
        train = None
        if trainer == "end-to-end":
            train = {"first_epoch_loss": 0.5, "last_epoch_loss": 0.2, "steps": epochs * steps, "trainer": trainer}
        elif trainer == "block-wise":
            train = {"first_epoch_loss": [0.01, 0.02], "last_epoch_loss": [0.005, 0.015], "layers": 2,
                     "steps": 2 * epochs * steps, "trainer": trainer}
        write_json(os.path.join(d, "results.json"), {
            "command_line": "mobilequant sweep synthetic.json", "config": cfg, "format": "mobilequant-run-results",
            "method": method, "quant": quant, "model": cfg["model"], "train": train,
            "eval": [{"task": "docs", "metrics": [{"metric": "token_perplexity", "value": ppl}]}]
                    + ([layer_error_entry(layer_error)] if layer_error else [])})
    return d


SITES = {"input_layernorm.output": 8, "self_attn.pv_bmm.input": 16}


def quantizers(scales):
    """Activation quantizers of 2 layers (scale per site and layer), plus a LET scale and a
    weight quantizer that the range plot must leave out."""
    t = {"model.layers.0.qkv_smooth_scale": ([4], [1.0] * 4),
         "model.layers.0.self_attn.q_proj.weight_quantizer.upbound_factor": ([4, 1], [4.0] * 4),
         "model.layers.0.self_attn.q_proj.weight_quantizer.lowbound_factor": ([4, 1], [4.0] * 4)}
    for layer in range(2):
        for site, scale in scales.items():
            base = f"model.layers.{layer}.{site}_quantizer"
            t[base + ".scale"] = ([], [scale * (layer + 1)])
            t[base + ".offset"] = ([], [0.0])
    return t


def build(tmp):
    """A sweep directory, a calib.samples x train.epochs grid and a broken run."""
    sweep = os.path.join(tmp, "sweep")
    make_run(sweep, "w8a8-fp", "fp", "fp", ppl=3.0, layer_error=[0.0, 0.0])
    make_run(sweep, "w4a8-fp", "fp", "fp", ppl=3.0002)
    make_run(sweep, "w8a8-my-method", "my-method", "w8a8", ppl=12.3456)
    make_run(sweep, "w8a8-smoothquant-edge", "smoothquant-edge", "w8a8", ppl=3.5, layer_error=[0.01, 0.04])
    make_run(sweep, "w4a8-smoothquant-edge", "smoothquant-edge", "w4a8", ppl=3.9)
    arl = make_run(sweep, "w8a8-omniquant-edge-arl", "omniquant-edge-arl", "w8a8", "block-wise", ppl=3.25)
    make_run(sweep, "w4a8-omniquant-edge-arl", "omniquant-edge-arl", "w4a8", "block-wise", ppl=3.8)
    make_run(sweep, "w8a8-mobilequant", "mobilequant", "w8a8", "end-to-end", ppl=3.3, layer_error=[0.002, 0.005])
    make_run(sweep, "w4a8-mobilequant", "mobilequant", "w4a8", "end-to-end", finished=False)
    with open(os.path.join(sweep, "results.md"), "w") as f:   # the sweep's own table: ignored
        f.write("| quant | method |\n")
    write_safetensors(os.path.join(arl, "calibrated_quantizers.safetensors"),
                      quantizers({"input_layernorm.output": 0.1, "self_attn.pv_bmm.input": 1.0 / 65535}))
    write_safetensors(os.path.join(arl, "model", "quantizers.safetensors"),
                      quantizers({"input_layernorm.output": 0.2, "self_attn.pv_bmm.input": 2.0 / 65535}))
    write_json(os.path.join(arl, "model", "quantization.json"), {"quant": {"activations": {
        s: {"bits": b, "enabled": True, "granularity": "per_tensor", "symmetric": False} for s, b in SITES.items()}}})

    grid = os.path.join(tmp, "grid")
    for n, e, ppl in ((4, 1, 3.6), (4, 2, 3.5), (8, 2, 3.4)):
        make_run(grid, f"w4a8-mobilequant-{n}x{e}", "mobilequant", "w4a8", "end-to-end", ppl, n, e)
    for n, e, ppl in ((4, 1, 3.55), (8, 2, 3.5)):
        make_run(grid, f"w4a8-omniquant-edge-{n}x{e}", "omniquant-edge", "w4a8", "block-wise", ppl, n, e)
    make_run(grid, "w4a8-fp", "fp", "fp", ppl=3.0)
    make_run(grid, "w4a8-smoothquant-edge", "smoothquant-edge", "w4a8", ppl=3.9)

    broken = os.path.join(tmp, "broken")
    write_json(os.path.join(broken, "config.json"), config("rtn", "w8a8", "none", "runs/broken"))
    with open(os.path.join(broken, "results.json"), "w") as f:
        f.write('{"eval": [')
    return sweep, grid, broken


# ---------------------------------------------------------------------------------------------
# Checks


def report(*args, env=None):
    return subprocess.run([PYTHON, REPORT, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def table_lines(md):
    return [ln for ln in md.splitlines() if ln.startswith("|")]


def test_help(tmp, dirs):
    p = report("--help")
    check(p.returncode == 0, f"--help exit {p.returncode}: {p.stderr}")
    for word in ("table", "plots", "calibrated_quantizers.safetensors", "metrics.jsonl", "--metric",
                 "requirements-report.txt", "ppl_vs_budget"):
        check(word in p.stdout, f"--help does not mention {word!r}")
    p = report("plots", "--help")
    check(p.returncode == 0 and "OUT_DIR" in p.stdout, "plots --help names OUT_DIR")


def test_table_layout(tmp, dirs):
    sweep = dirs[0]
    rel = os.path.relpath(sweep, ROOT)
    out = os.path.join(tmp, "out", "table")
    p = report("table", rel, "-o", out)
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    with open(out + ".md") as f:
        md = f.read()
    check(p.stdout == md, "stdout is the Markdown written to OUT_PREFIX.md")
    expected = [
        "| method | W8A8 | W4A8 | runs (W8A8, W4A8) |",
        "|---|---:|---:|---|",
        "| FP | 3.0000 | 3.0002 | `w8a8-fp`, `w4a8-fp` |",
        "| SmoothQuant-Edge | 3.5000 | 3.9000 | `w8a8-smoothquant-edge`, `w4a8-smoothquant-edge` |",
        "| OmniQuant-Edge + ARL | **3.2500** | **3.8000** | `w8a8-omniquant-edge-arl`, `w4a8-omniquant-edge-arl` |",
        "| MobileQuant | 3.3000 | unfinished | `w8a8-mobilequant`, `w4a8-mobilequant` |",
        "| my-method | 12.35 | - | `w8a8-my-method`, - |",
    ]
    got = table_lines(md)
    check(got == expected, "table:\n" + "\n".join(got) + "\nexpected:\n" + "\n".join(expected))
    check(md.startswith("Model: `models/tiny.bin` · metric: docs:token_perplexity (lower is better"),
          "caption names the model and the metric: " + md.splitlines()[0])
    # The sweep lies outside the working directory (the repository): named by its absolute path.
    check(f"Runs: relative to `{sweep}/`." in md, "names the directory the runs are relative to")
    check("unfinished (no results.json; metrics.jsonl ends at epoch 0 step 2; log.txt:" in md,
          "the unfinished run's note says where it got to")
    check("- no run for my-method at W4A8" in md, "the missing cell has a note")
    check("unfinished" in p.stderr and "w4a8-mobilequant" in p.stderr, "stderr warns of the unfinished run")
    check("results.md" not in md, "files of the sweep directory are not runs")

    with open(out + ".csv") as f:
        rows = list(csv.reader(f))
    check(rows[0] == ["model", "method", "settings", "W8A8 docs:token_perplexity", "W4A8 docs:token_perplexity",
                      "W8A8 run", "W4A8 run", "notes"], f"CSV header {rows[0]}")
    check([r[1] for r in rows[1:]] == ["fp", "smoothquant-edge", "omniquant-edge-arl", "mobilequant", "my-method"],
          f"CSV row order {[r[1] for r in rows[1:]]}")
    check(rows[1][3:7] == ["3.0", "3.0002", os.path.join(rel, "w8a8-fp"), os.path.join(rel, "w4a8-fp")],
          f"CSV FP row {rows[1]}")
    check(rows[4][3:8] == ["3.3", "", os.path.join(rel, "w8a8-mobilequant"), os.path.join(rel, "w4a8-mobilequant"),
                           "W4A8: unfinished"], f"CSV MobileQuant row {rows[4]}")
    check(rows[5][3:8] == ["12.3456", "", os.path.join(rel, "w8a8-my-method"), "", "W4A8: no run"],
          f"CSV custom row {rows[5]}")


def test_table_grid_and_metrics(tmp, dirs):
    grid = dirs[1]
    p = report("table", grid, "--metric", "docs:token_perplexity,train:last_epoch_loss")
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    got = table_lines(p.stdout)
    check(got[0] == "| method | W4A8 docs token ppl | W4A8 train last_epoch_loss | runs (W4A8) |", got[0])
    labels = [ln.split(" | ")[0][2:] for ln in got[2:]]
    check(labels == ["FP", "SmoothQuant-Edge",
                     "OmniQuant-Edge (calib.samples=4, train.epochs=1)",
                     "OmniQuant-Edge (calib.samples=8, train.epochs=2)",
                     "MobileQuant (calib.samples=4, train.epochs=1)",
                     "MobileQuant (calib.samples=4, train.epochs=2)",
                     "MobileQuant (calib.samples=8, train.epochs=2)"], f"grid rows {labels}")
    check("| MobileQuant (calib.samples=8, train.epochs=2) | **3.4000** | 0.2000 | `w4a8-mobilequant-8x2` |"
          in got, "grid cell values: " + "\n".join(got))
    check("| OmniQuant-Edge (calib.samples=8, train.epochs=2) | 3.5000 | 0.0150 | `w4a8-omniquant-edge-8x2` |"
          in got, "a block-wise run's train loss is its last block's, never in bold")
    check("| FP | 3.0000 | - | `w4a8-fp` |" in got, "untrained rows have no train loss")
    check("Notes:" not in p.stdout, "no note for a train loss an untrained run cannot have: " + p.stdout)


def test_table_layer_error(tmp, dirs):
    """layer-error is no default column (test_table_layout), but a column on request."""
    p = report("table", dirs[0], "--metric", "layer-error:rel_mse_last_layer")
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    got = table_lines(p.stdout)
    check("| FP | 0.0000 | n/a | `w8a8-fp`, `w4a8-fp` |" in got, "FP row: " + "\n".join(got))
    check("| MobileQuant | **0.0050** | unfinished | `w8a8-mobilequant`, `w4a8-mobilequant` |" in got,
          "the lowest quantized error is bold: " + "\n".join(got))
    check("| SmoothQuant-Edge | 0.0400 | n/a | `w8a8-smoothquant-edge`, `w4a8-smoothquant-edge` |" in got,
          "a run without layer-error reads n/a: " + "\n".join(got))


def test_bad_inputs(tmp, dirs):
    sweep, _, broken = dirs
    missing = os.path.join(tmp, "no-such-run")
    p = report("table", sweep, missing, broken)
    check(p.returncode == 0, f"problems are noted, not fatal: exit {p.returncode}: {p.stderr}")
    check(f"{missing}: no such file or directory" in p.stderr, "stderr names the missing path: " + p.stderr)
    check(f"{broken}/results.json: not valid JSON (line 1" in p.stderr, "stderr names the broken file: " + p.stderr)
    check(f"{missing}: no such file or directory" in p.stdout, "the Markdown notes the missing path")
    check("| RTN | n/a | - |" in p.stdout, "the broken run's cell is n/a: " + "\n".join(table_lines(p.stdout)))
    p = report("table", sweep, missing, "--strict")
    check(p.returncode == 1, f"--strict exits 1 on a problem, got {p.returncode}")
    p = report("table", missing)
    check(p.returncode == 1 and "no run could be read" in p.stderr, f"nothing readable: exit {p.returncode}")
    p = report("table", os.path.join(tmp, "out"))
    check(p.returncode == 1 and "not a run directory" in p.stderr, "a directory without runs is named: " + p.stderr)
    p = report("table", sweep, "--metric", "wikitext")
    check(p.returncode == 2 and "expected TASK:METRIC" in p.stderr, f"bad --metric: {p.returncode} {p.stderr}")
    p = report("plots", sweep)
    check(p.returncode == 2 and "-o" in p.stderr, "plots without -o is a usage error")


def test_missing_matplotlib(tmp, dirs):
    stub = os.path.join(tmp, "stub", "matplotlib")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "__init__.py"), "w") as f:
        f.write("raise ImportError(\"No module named 'matplotlib' (test stub)\")\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(stub))
    p = report("plots", dirs[0], "-o", os.path.join(tmp, "out", "noplots"), env=env)
    check(p.returncode == 1, f"exit {p.returncode}")
    check("plots need matplotlib" in p.stderr and "requirements-report.txt" in p.stderr,
          "the message says what to install: " + p.stderr)
    check(not os.path.exists(os.path.join(tmp, "out", "noplots", "loss_end_to_end.png")), "nothing written")
    p = report("table", dirs[0], env=env)
    check(p.returncode == 0, "table needs no matplotlib")


PLOTS = ["loss_end_to_end", "loss_block_wise", "loss_block_wise_layers", "ppl_vs_budget",
         "act_ranges_w8a8-omniquant-edge-arl", "act_range_change_w8a8-omniquant-edge-arl"]


def test_plots(tmp, dirs):
    if not CAN_PLOT:
        return "skipped: no Python with matplotlib and numpy (pip install -r scripts/requirements-report.txt)"
    sweep, grid, _ = dirs
    out = os.path.join(tmp, "out", "plots")
    p = report("plots", sweep, grid, "-o", out)
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}\n{p.stdout}")
    for name in PLOTS:
        for ext in ("png", "svg"):
            path = os.path.join(out, f"{name}.{ext}")
            check(os.path.isfile(path) and os.path.getsize(path) > 1000, f"{path} written")
    with open(os.path.join(out, "ppl_vs_budget.svg")) as f:
        svg = f.read()
    check("<dc:date>" not in svg, "no date in the SVG")
    check("calib.samples × train.epochs" in svg, "SVG text is text (svg.fonttype none)")
    check("skipped act_ranges: no calibrated_quantizers.safetensors or model/quantizers.safetensors in:"
          in p.stdout and "w8a8-smoothquant-edge" in p.stdout, "runs without quantizer files: " + p.stdout)
    # layer_error: one line per run with a nonzero layer-error entry (FP's zeros draw none).
    for ext in ("png", "svg"):
        path = os.path.join(out, f"layer_error.{ext}")
        check(os.path.isfile(path) and os.path.getsize(path) > 1000, f"{path} written")
    with open(os.path.join(out, "layer_error.svg")) as f:
        svg = f.read()
    for label in ("SmoothQuant-Edge · W8A8", "MobileQuant (calib.samples=4, train.epochs=2) · W8A8",
                  "relative MSE of the block output"):
        check(label in svg, f"layer_error.svg shows {label!r}")
    check("FP ·" not in svg, "FP (zero error) draws no line")
    p = report("plots", grid, "-o", os.path.join(tmp, "out", "no-layer-error"))
    check(p.returncode == 0 and "layer_error" not in p.stdout, "no layer-error entry: skipped silently")
    check(not os.path.exists(os.path.join(tmp, "out", "no-layer-error", "layer_error.png")),
          "no layer_error plot without layer-error entries")
    # Same input, same bytes.
    again = os.path.join(tmp, "out", "plots-again")
    p = report("plots", os.path.join(sweep, "w8a8-omniquant-edge-arl"), "-o", again)
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    for name in PLOTS[4:]:
        for ext in ("png", "svg"):
            first, second = (os.path.join(d, f"{name}.{ext}") for d in (out, again))
            with open(first, "rb") as a, open(second, "rb") as b:
                check(a.read() == b.read(), f"{name}.{ext} differs between two runs on the same input")


def test_plots_without_inputs(tmp, dirs):
    if not CAN_PLOT:
        return "skipped: no Python with matplotlib and numpy"
    out = os.path.join(tmp, "out", "fp-only")
    p = report("plots", os.path.join(dirs[0], "w8a8-fp"), os.path.join(dirs[0], "w4a8-fp"), "-o", out)
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    skips = [ln for ln in p.stdout.splitlines() if ln.startswith("skipped ")]
    check([s.split(":")[0] for s in skips] == ["skipped loss_end_to_end", "skipped loss_block_wise",
                                               "skipped loss_block_wise_layers", "skipped ppl_vs_budget"],
          "one line per skipped plot: " + p.stdout)
    check(not os.listdir(out), "nothing written")


def test_range_widths(tmp, dirs):
    if not CAN_PLOT:
        return "skipped: no Python with numpy"
    arl = os.path.join(dirs[0], "w8a8-omniquant-edge-arl")
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import report as R\n"
        "run = R.load_run(sys.argv[2]); specs, src = R.act_specs(run)\n"
        "out = {}\n"
        "for key, rel in (('cal', R.CALIBRATED_FILE), ('learned', R.LEARNED_FILE)):\n"
        "    d = R.act_sites(R.read_safetensors(run.path + '/' + rel))\n"
        "    out[key] = {f'{l}:{s}': round(R.range_width(v, specs[s]), 4) for (l, s), v in d.items()}\n"
        "print(json.dumps(out, sort_keys=True))\n")
    p = subprocess.run([PYTHON, "-c", code, os.path.join(ROOT, "scripts"), arl], capture_output=True, text=True)
    check(p.returncode == 0, p.stderr)
    got = json.loads(p.stdout)
    check(got["cal"] == {"0:input_layernorm.output": 25.5, "1:input_layernorm.output": 51.0,
                         "0:self_attn.pv_bmm.input": 1.0, "1:self_attn.pv_bmm.input": 2.0}, f"calibrated {got['cal']}")
    check(got["learned"]["0:input_layernorm.output"] == 51.0, f"learned {got['learned']}")


def make_int_dir(parent, name, method, quant, run_ppl, sim, integer, limit=-1, documents=22,
                 on_device=None):
    """One run's directory of scripts/int_beside.sh: run_results.json and eval_int.json."""
    d = os.path.join(parent, name)
    cfg = config(method, quant, "none", "runs/" + name)
    write_json(os.path.join(d, "run_results.json"), {
        "config": cfg, "method": method, "quant": quant, "model": cfg["model"],
        "eval": [{"task": "docs", "metrics": [{"metric": "token_perplexity", "value": run_ppl}]}]})
    write_json(os.path.join(d, "eval_int.json"), {
        "runtime": "int", "config": {"limit": limit},
        "results": [{"task": "docs", "documents": documents, "positions": 700,
                     "greedy_agreement": 0.975, "greedy_agreement_fp64_vs_fp32_simulation": 0.98,
                     "greedy_agreement_with_fp64_simulation": 0.995,
                     "metrics": [{"metric": "token_perplexity", "simulated": sim, "integer": integer,
                                  "simulated_fp64": integer / 1.001,
                                  "relative_difference": (integer - sim) / sim}]}]})
    if on_device:
        with open(os.path.join(d, "eval_int.json")) as f:
            ev = json.load(f)
        ev["results"][0]["simulated_on_compare_device"] = on_device
        write_json(os.path.join(d, "eval_int.json"), ev)
    return d


def test_int_beside(tmp, dirs):
    """`report.py int`: the run's simulated figure beside the integer runtime's, per preset."""
    out = os.path.join(tmp, "int")
    make_int_dir(out, "w8a8-mobilequant", "mobilequant", "w8a8", 3.3770, 3.3776, 3.3828)
    make_int_dir(out, "w4a8-mobilequant", "mobilequant", "w4a8", 3.7754, 3.7754, 3.7794)
    make_int_dir(out, "w8a8-rtn", "rtn", "w8a8", 3.4136, 3.4136, 3.4183)
    p = report("int", out, "-o", os.path.join(out, "t"))
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    got = table_lines(p.stdout)
    expected_head = ["| method | W8A8 simulated | W8A8 integer | W4A8 simulated | W4A8 integer |",
                     "|---|---:|---:|---:|---:|",
                     "| RTN | 3.4136 | 3.4183 | - | - |",
                     "| MobileQuant | 3.3770 | 3.3828 | 3.7754 | 3.7794 |"]
    check(got[:4] == expected_head, "paper layout:\n" + "\n".join(got[:4]))
    check("| W8A8 | MobileQuant | docs | token_perplexity | 3.3770 | 3.3776 | 3.3828 | +0.15% | 97.50% | "
          "98.00% | 3.3794 | +0.10% | 99.50% | 22 | 700 | w8a8-mobilequant |" in got,
          "the per-run line: " + "\n".join(got))
    check("covers the first" not in p.stdout, "no subset note without a limit")
    with open(os.path.join(out, "t.csv")) as f:
        rows = list(csv.reader(f))
    check(rows[0][:8] == ["model", "preset", "method", "task", "metric", "simulated_run",
                          "simulated_same_windows", "integer"], f"CSV header {rows[0]}")
    check(len(rows) == 4, f"one CSV row per run and task, got {len(rows) - 1}")
    check("on another device" not in p.stdout, "no device table without --compare-device")
    # eval --compare-device: a table of the fp32 simulation on the other device.
    dev = os.path.join(tmp, "int-device")
    make_int_dir(dev, "w8a8-mobilequant", "mobilequant", "w8a8", 3.3770, 3.3776, 3.3828,
                 on_device={"device": "cuda", "values": [3.3801],
                            "greedy_agreement_with_cpu_fp32_simulation": 0.7431,
                            "greedy_agreement_with_integer": 0.7402})
    make_int_dir(dev, "w8a8-rtn", "rtn", "w8a8", 3.4136, 3.4136, 3.4183)
    p = report("int", dev, "-o", os.path.join(dev, "t"))
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    check("| W8A8 | MobileQuant | docs | token_perplexity | cuda | 3.3776 | 3.3801 | 74.31% | 74.02% "
          "| 98.00% | 700 | w8a8-mobilequant |" in table_lines(p.stdout),
          "the device line: " + p.stdout)
    check(p.stdout.count("| cuda |") == 1, "only the run with a device pass is listed")
    with open(os.path.join(dev, "t.csv")) as f:
        rows = {r[17].rsplit("/", 1)[-1]: r for r in list(csv.reader(f))[1:]}
    check(rows["w8a8-mobilequant"][18:] == ["cuda", "3.3801", "0.7431", "0.7402"]
          and rows["w8a8-rtn"][18:] == ["", "", "", ""], f"CSV device columns {rows}")
    # A subset is named; a broken directory is a note, not a failure (unless --strict).
    sub = os.path.join(tmp, "int-subset")
    make_int_dir(sub, "w8a8-rtn", "rtn", "w8a8", 49.5, 60.1, 60.3, limit=4, documents=4)
    os.makedirs(os.path.join(sub, "w4a8-rtn"))
    with open(os.path.join(sub, "w4a8-rtn", "eval_int.json"), "w") as f:
        f.write("{")
    p = report("int", sub)
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr}")
    check("covers the first 4 documents (limit 4)" in p.stdout, "the subset is named: " + p.stdout)
    check("w4a8-rtn/eval_int.json: not valid JSON" in p.stderr, "the broken file is named: " + p.stderr)
    p = report("int", sub, "--strict")
    check(p.returncode == 1, f"--strict exits 1 on a broken directory, got {p.returncode}")
    p = report("int", os.path.join(tmp, "no-such"))
    check(p.returncode == 1 and "no such directory" in p.stderr, f"a missing directory: {p.stderr}")


TESTS = [test_help, test_table_layout, test_table_grid_and_metrics, test_table_layer_error, test_bad_inputs,
         test_missing_matplotlib,
         test_plots, test_plots_without_inputs, test_range_widths, test_int_beside]


def main():
    tmp = tempfile.mkdtemp(prefix="mq_test_report_")
    passed = failed = skipped = 0
    try:
        dirs = build(tmp)
        print(f"report.py under {PYTHON}" + ("" if CAN_PLOT else " (no matplotlib: plot checks skipped)"))
        for test in TESTS:
            try:
                note = test(tmp, dirs)
            except Exception:
                failed += 1
                print(f"FAIL {test.__name__}")
                traceback.print_exc(file=sys.stdout)
                continue
            if note:
                skipped += 1
                print(f"SKIP {test.__name__}: {note}")
            else:
                passed += 1
                print(f"ok   {test.__name__}")
    finally:
        if os.environ.get("MQ_KEEP_TMP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
