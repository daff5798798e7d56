#!/usr/bin/env python3
"""eval/reference/hf_ppl.py: the lm-eval v0.3 WikiText perplexity, independently, with
transformers. Cross-checks `mobilequant eval --task wikitext` (mobilequant/eval/perplexity.h).

Protocol (lm-eval-harness v0.3 `wikitext`, as MobileQuant reports it):
  - documents: the raw test file split before every top-level title line (" = Title = "),
    as lm-eval's wikitext dataset script does; a GPTQ-style dump ("\\n\\n".join of the
    Hugging Face rows, blank rows "") is first turned back into the raw file (blank lines " ");
  - each document detokenized with lm-eval's wikitext_detokenizer, tokenized without special
    tokens, scored in rolling windows of --max-length with EOS as the first window's
    one-token prefix (every token scored exactly once), log-likelihoods summed per document;
  - word_perplexity = exp(-sum ll / sum words), words = len(re.split(r"\\s+", page)) of the
    ORIGINAL page; byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte =
    -sum ll / sum bytes / ln 2, bytes = len(page.encode("utf-8")) of the original page.

Usage:
  hf_ppl.py --model DIR [--gguf-file NAME.gguf] [--max-length 2048] [--data FILE]
            [--limit-docs N] [--device cpu|cuda] [--json OUT]
  hf_ppl.py --gptq --model ... [--max-length 2048]  # GPTQ/OmniQuant token perplexity instead:
            the file as it is, tokenized once with default special tokens, numel // seqlen
            non-overlapping windows (--limit-docs then limits windows), exp(mean nll)
  hf_ppl.py --dump-docs OUT.json [--data FILE]     # documents only, no model
--model may also be a path to a .gguf file (its directory and name are split off).
"""

import argparse
import json
import math
import os
import re
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEFAULT_DATA = os.path.join(
    os.environ.get("MQ_DATA_DIR", os.path.join(os.path.dirname(_REPO), "shared", "data")),
    "wikitext2", "wiki.test.raw.txt")


# ---------------------------------------------------------------- documents

def rows_of_dump(text):
    """The Hugging Face rows of a "\\n\\n"-joined dump, or None if text is not one."""
    if "\n\n" not in text:
        return None
    rows, pos, n = [], 0, len(text)
    while True:
        if pos == n or text.startswith("\n\n", pos):
            rows.append("")
        else:
            nl = text.find("\n", pos)
            if nl < 0:
                rows.append(text[pos:])
                return rows
            rows.append(text[pos:nl + 1])
            pos = nl + 1
        if pos == n:
            return rows
        if not text.startswith("\n\n", pos):
            return None
        pos += 2


def original_text(text):
    """The raw file: a dump's blank rows become " " lines again; other text is unchanged."""
    rows = rows_of_dump(text)
    if rows is None:
        return text
    return "".join(r if r else " \n" for r in rows)


def is_title(line):
    squeezed = line.replace("= = =", "===").replace("= =", "==").strip()
    return squeezed.startswith("= ") and squeezed.endswith(" =")


def documents(text):
    """lm-eval's pages: lines gathered up to each title line; the last page always kept."""
    pages, lines = [], []
    for line in original_text(text).split("\n"):
        if is_title(line):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


def _strip_pairs(open_ch, close_ch):
    pattern = re.compile(re.escape(open_ch) + r"\s*([^" + re.escape(close_ch) + r"]*?)\s*"
                         + re.escape(close_ch))
    return lambda s: pattern.sub(lambda m: open_ch + m.group(1) + close_ch, s)


def _replace(old, new):
    return lambda s: s.replace(old, new)


# lm-eval's wikitext_detokenizer as an ordered list of steps.
_DETOKENIZE_STEPS = [
    _replace("s '", "s'"),
    lambda s: re.sub(r"/' [0-9]/", "/'[0-9]/", s),
    _replace(" @-@ ", "-"), _replace(" @,@ ", ","), _replace(" @.@ ", "."),
    _replace(" : ", ": "), _replace(" ; ", "; "), _replace(" . ", ". "),
    _replace(" ! ", "! "), _replace(" ? ", "? "), _replace(" , ", ", "),
    _strip_pairs("(", ")"), _strip_pairs("[", "]"), _strip_pairs("{", "}"),
    _strip_pairs('"', '"'), _strip_pairs("'", "'"),
    _replace("= = = =", "===="), _replace("= = =", "==="), _replace("= =", "=="),
    _replace(" \u00b0 ", "\u00b0"), _replace(" \n", "\n"), _replace("\n ", "\n"),
    _replace(" N ", " 1 "), _replace(" 's", "'s"),
]


def detokenize(text):
    for step in _DETOKENIZE_STEPS:
        text = step(text)
    return text


def count_words(page):
    return len(re.split(r"\s+", page))


# ---------------------------------------------------------------- scoring

def rolling_windows(ids, prefix, max_length):
    """(input ids, number of scored last positions, targets) per window."""
    out, n = [], len(ids)
    if n == 0:
        return out
    first = min(max_length, n)
    out.append(([prefix] + ids[:first - 1], first, ids[:first]))
    done = first
    while done < n:
        k = min(n - done, max_length)
        end = done + k
        out.append((ids[end - max_length - 1:end - 1], k, ids[end - k:end]))
        done = end
    return out


def load(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path, gguf = args.model, args.gguf_file
    if gguf is None and path.endswith(".gguf"):
        path, gguf = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    kw = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(path, **kw)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)
    except ValueError as e:
        if not gguf or "accelerate" not in str(e):
            raise
        model = _load_gguf_without_accelerate(os.path.join(path, gguf))
    return model.to(args.device).eval(), tok


def _load_gguf_without_accelerate(gguf_path):
    """from_pretrained(gguf_file=...) wants `accelerate`; without it, build the model from the
    GGUF's config and load transformers' own dequantized tensors into it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    directory, name = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        sys.exit(f"error: {gguf_path}: missing tensors {sorted(set(missing) - tied)}, "
                 f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="HF directory, directory of --gguf-file, or a .gguf path")
    ap.add_argument("--gguf-file", default=None)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--data", default=_DEFAULT_DATA)
    ap.add_argument("--limit-docs", type=int, default=-1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--gptq", action="store_true",
                    help="GPTQ/OmniQuant token perplexity instead: the file as it is, tokenized "
                         "once with default special tokens, --max-length windows")
    ap.add_argument("--dump-docs", default=None,
                    help="write [{page, detokenized, words, bytes}] as JSON and exit")
    args = ap.parse_args()

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    if not text:
        sys.exit(f"error: data file '{args.data}' is empty")
    pages = documents(text)
    if args.dump_docs:
        with open(args.dump_docs, "w", encoding="utf-8") as f:
            json.dump([{"page": p, "detokenized": detokenize(p), "words": count_words(p),
                        "bytes": len(p.encode("utf-8"))} for p in pages], f)
        return
    if not args.model:
        ap.error("--model is required unless --dump-docs is given")
    if args.limit_docs >= 0:
        pages = pages[:args.limit_docs]

    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, tok = load(args)
    if args.gptq:
        return gptq_perplexity(model, tok, text, args)
    eos = tok.eos_token_id
    if eos is None:
        sys.exit("error: the tokenizer has no EOS token")
    total_ll, tokens, words, nbytes = 0.0, 0, 0, 0
    start = time.time()
    with torch.no_grad():
        for d, page in enumerate(pages):
            ids = tok(detokenize(page), add_special_tokens=False)["input_ids"]
            doc_ll = 0.0
            for inp, n_scored, targets in rolling_windows(ids, eos, args.max_length):
                x = torch.tensor([inp], device=args.device)
                logits = model(x).logits[0, -n_scored:].float()
                logp = torch.log_softmax(logits, dim=-1)
                t = torch.tensor(targets, device=args.device).unsqueeze(1)
                doc_ll += logp.gather(1, t).double().sum().item()
            total_ll += doc_ll
            tokens += len(ids)
            words += count_words(page)
            nbytes += len(page.encode("utf-8"))
            el = time.time() - start
            print(f"[hf_ppl] doc {d + 1}/{len(pages)}: {len(ids)} tokens, ll {doc_ll:.4f}, "
                  f"{tokens / max(el, 1e-9):.0f} tok/s", file=sys.stderr)
    res = {
        "protocol": "lm-eval v0.3 wikitext (transformers reference)",
        "model": args.model, "gguf_file": args.gguf_file, "max_length": args.max_length,
        "documents": len(pages), "tokens": tokens, "words": words, "bytes": nbytes,
        "loglikelihood": total_ll,
        "word_perplexity": math.exp(-total_ll / words),
        "byte_perplexity": math.exp(-total_ll / nbytes),
        "bits_per_byte": -total_ll / nbytes / math.log(2),
    }
    print(f"word_perplexity {res['word_perplexity']:.6f}")
    print(f"byte_perplexity {res['byte_perplexity']:.6f}")
    print(f"bits_per_byte {res['bits_per_byte']:.6f}")
    print(f"tokens {tokens}  documents {len(pages)}  words {words}  bytes {nbytes}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


def gptq_perplexity(model, tok, text, args):
    """exp(mean nll) over numel // seqlen non-overlapping windows of the tokenized text."""
    import torch
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    seqlen = args.max_length
    nsamples = ids.numel() // seqlen
    if args.limit_docs >= 0:
        nsamples = min(nsamples, args.limit_docs)
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(nsamples):
            x = ids[i * seqlen:(i + 1) * seqlen].unsqueeze(0).to(args.device)
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
            nll -= logp.gather(1, x[0, 1:].unsqueeze(1)).double().sum().item()
            count += seqlen - 1
    res = {"protocol": "GPTQ/OmniQuant wikitext (transformers reference)", "model": args.model,
           "seqlen": seqlen, "ids": int(ids.numel()), "nsamples": nsamples,
           "scored_tokens": count, "token_perplexity": math.exp(nll / count)}
    print(f"token_perplexity {res['token_perplexity']:.6f}")
    print(f"ids {res['ids']}  nsamples {nsamples}  scored {count}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
