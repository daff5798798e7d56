#!/usr/bin/env python3
"""Times transformers' forward pass on the same model, threads, dtype and device as
`mobilequant bench forward`, which runs this script and prints the ratio.

Prints one JSON object: {"transformers": version, "torch": version, "results":
[{"seqlen": T, "median_seconds": s, "tokens_per_second": r}, ...]}.
Protocol (same as the C++ side): random ids (seeded), `--warmup` untimed runs, then the
median of `--reps` timed forwards returning logits, under torch.inference_mode().
"""
import argparse
import json
import time

import torch
import transformers


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="Hugging Face directory")
    ap.add_argument("--seqlens", default="128,512,2048")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, dtype=dtype, attn_implementation=args.attn).to(args.device).eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    dev = torch.device(args.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    results = []
    with torch.inference_mode():
        for t in [int(s) for s in args.seqlens.split(",")]:
            ids = torch.randint(vocab, (args.batch, t), generator=gen).to(dev)
            for _ in range(args.warmup):
                model(input_ids=ids, use_cache=False)
            sync()
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                model(input_ids=ids, use_cache=False).logits
                sync()
                times.append(time.perf_counter() - start)
            times.sort()
            med = times[len(times) // 2]
            results.append({"seqlen": t, "median_seconds": med,
                            "tokens_per_second": args.batch * t / med})
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    main()
