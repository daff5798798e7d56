#!/usr/bin/env python3
"""One line per evaluated row: reads OUTDIR/<row>.eval.json (written by `mobilequant eval -o`)
and writes OUTDIR/table.md and OUTDIR/table.csv with the WikiText word perplexity (lm-eval),
the WikiText GPTQ token perplexity and the TinyStories document perplexity.

usage: scripts/results_table.py OUTDIR ROW [ROW ...]
"""
import csv
import json
import os
import sys

COLUMNS = [("wikitext", "word_perplexity", "WikiText word ppl (lm-eval)"),
           ("wikitext-gptq", "token_perplexity", "WikiText token ppl (GPTQ)"),
           ("docs", "token_perplexity", "TinyStories token ppl")]


def main():
    outdir, rows = sys.argv[1], sys.argv[2:]
    table = []
    for row in rows:
        path = os.path.join(outdir, row + ".eval.json")
        if not os.path.exists(path):
            table.append([row] + ["(missing)"] * len(COLUMNS))
            continue
        with open(path) as f:
            results = json.load(f)["results"]
        line = [row]
        for task, metric, _ in COLUMNS:
            value = next((m["value"] for r in results if r["task"] == task
                          for m in r["metrics"] if m["metric"] == metric), None)
            line.append("-" if value is None else f"{value:.4f}")
        table.append(line)
    header = ["row"] + [c[2] for c in COLUMNS]
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|---|" + "---:|" * len(COLUMNS) + "\n")
        for line in table:
            f.write("| " + " | ".join(line) + " |\n")
    with open(os.path.join(outdir, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table)
    sys.stdout.write(open(os.path.join(outdir, "table.md")).read())


if __name__ == "__main__":
    main()
