#!/usr/bin/env python3
"""Figures quoted in README.md, computed from runs' calibrated_quantizers.safetensors.

  scale_summary.py norm-inputs FILE
      per block: the 8-bit range [min, max] and step of input_layernorm.input (full W8A8).
  scale_summary.py geo-mean FILE...
      per file: the geometric mean of the per-tensor activation scales, every site except
      the two attention-score sites (qk_bmm.output, pv_bmm.input).
"""
import math
import sys

from safetensors.numpy import load_file


def norm_inputs(path):
    q = load_file(path)
    layer = 0
    print("| block | range | step |\n|---:|---|---:|")
    while f"model.layers.{layer}.input_layernorm.input_quantizer.scale" in q:
        pre = f"model.layers.{layer}.input_layernorm.input_quantizer."
        s, o = float(q[pre + "scale"]), float(q[pre + "offset"])
        print(f"| {layer} | [{-o * s:.1f}, {(255 - o) * s:.1f}] | {s:.3g} |")
        layer += 1


def geo_mean(paths):
    for path in paths:
        q = load_file(path)
        scales = [float(v) for k, v in q.items() if k.endswith(".scale") and v.size == 1
                  and "pv_bmm.input_" not in k and "qk_bmm.output" not in k]
        g = math.exp(sum(math.log(s) for s in scales) / len(scales))
        print(f"{path}: {len(scales)} sites, geometric mean scale {g:.5g}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "norm-inputs":
        norm_inputs(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "geo-mean":
        geo_mean(sys.argv[2:])
    else:
        sys.exit(__doc__)
