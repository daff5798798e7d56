#!/usr/bin/env python3
"""Reference outputs for tests/models/test_smollm2.cpp (SmolLM2-135M-Instruct, GGUF Q4_1).

Usage: smollm2_oracle.py MODE GGUF_PATH OUT_DIR
  tensors: every tensor dequantized by gguf-py (gguf.quants.dequantize), as raw little-endian
           float32 in OUT_DIR/tensors.bin, indexed by OUT_DIR/tensors.txt:
           "<name> <offset in floats> <ndims> <dim0> ... <dimN-1>" (torch order, ne reversed)
  tokens:  transformers' tokenizer (AutoTokenizer.from_pretrained(dir, gguf_file=name)) on
           TEXTS below, add_special_tokens=False; OUT_DIR/tokens.txt has one line per text:
           "<utf-8 text as hex>\t<id> <id> ..."
  logits:  transformers' model (AutoModelForCausalLM.from_pretrained(dir, gguf_file=name,
           dtype=float32)) on the token ids of OUT_DIR/ids.txt (one prompt per line, ids
           separated by spaces, written by the C++ test); OUT_DIR/logits_<k>.bin gets the
           float32 logits [n_tokens, vocab] of line k.
  random-types (GGUF_PATH ignored, pass -): writes OUT_DIR/types.gguf with one tensor of
           random blocks per type (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K; fp16
           scale fields kept finite) with gguf-py's writer, then dumps it as `tensors` does
           (for tests/io/test_gguf_reader.cpp).
"""
import importlib.util
import os
import sys

import numpy as np

TEXTS = [
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve façade résumé Ångström",
    "日本語のテキストと中文字符",
    "emoji 😀🎉👍🏽 and ❤️",
    "12345",
    "3.14 and 2,718 and 1e-9",
    "a  b\n\n\tc   ",
    "   leading spaces and trailing   ",
    "I'm sure you're right, we'll see; they've done it, he'd say. It's John's.",
    "DON'T SHOUT'S",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "text<|im_end|>more<|endoftext|>",
    "x = [i**2 for i in range(10)]  # squares\n\tif x: return {'a': 1}",
    "Zürich’s “quotes” — dashes – and … ellipses",
    "Ελληνικά, русский, العربية, हिन्दी",
    "\u00a0non\u2003breaking\u3000spaces",
    "",
    " ",
    "line one\r\nline two\r\n\r\n  \t  indented",
    "abc123def 4567890 x2 \u0663\u0664 \u2167 \u00bd",
    "$$$ !!! ... --> <= ?!",
    "e\u0301 (combining) \u0915\u094d\u0937 \U0001F468\u200D\U0001F469\u200D\U0001F467 \uD55C\uAD6D\uC5B4 \u0E44\u0E17\u0E22",
    "<|im_start|><|im_end|><|im_start <|endoftext|> <repo_name>x",
    "a" * 300 + " " + "ab" * 200,
]

def split_path(gguf_path):
    return os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)


def dump_tensors(gguf_path, out_dir):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(gguf_path)
    offset = 0
    with open(os.path.join(out_dir, "tensors.bin"), "wb") as data, open(
        os.path.join(out_dir, "tensors.txt"), "w"
    ) as index:
        for t in reader.tensors:
            values = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype="<f4")
            shape = [int(n) for n in reversed(t.shape.tolist())]  # ne reversed
            assert values.size == int(np.prod(shape)), (t.name, values.shape, shape)
            data.write(values.tobytes())
            index.write(f"{t.name} {offset} {len(shape)} {' '.join(map(str, shape))}\n")
            offset += values.size


def random_types(_, out_dir):
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(1234)
    rows = 3
    # type -> byte offsets of its fp16 scale fields inside one block
    half_fields = {
        Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
        Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    }
    path = os.path.join(out_dir, "types.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    values = rng.standard_normal((rows, 512)).astype(np.float32) * 3
    writer.add_tensor("F32", values)
    writer.add_tensor("F16", values.astype(np.float16))
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    writer.add_tensor("BF16", bf16.view(np.uint8).reshape(rows, -1), raw_dtype=Q.BF16)
    for qtype, fields in half_fields.items():
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = 512 // block_size
        blocks = rng.integers(0, 256, size=(rows, n_blocks, type_size), dtype=np.uint8)
        for f in fields:
            scale = (rng.standard_normal((rows, n_blocks)) * 0.05).astype(np.float16)
            blocks[:, :, f : f + 2] = scale.view(np.uint8).reshape(rows, n_blocks, 2)
        writer.add_tensor(qtype.name, blocks.reshape(rows, -1), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    dump_tensors(path, out_dir)


def load_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    directory, name = split_path(gguf_path)
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)


def wikitext_text():
    """The whole WikiText-2 test file (1.3 MB), if the shared folder is there: the
    tokenization that the WikiText perplexity depends on, checked in one piece."""
    shared = os.environ.get("MQ_SHARED_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared")
    path = os.path.join(shared, "data", "wikitext2", "wiki.test.raw.txt")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [f.read()]


def dump_tokens(gguf_path, out_dir):
    tok = load_tokenizer(gguf_path)
    with open(os.path.join(out_dir, "tokens.txt"), "w") as f:
        for text in TEXTS + wikitext_text():
            ids = tok(text, add_special_tokens=False)["input_ids"]
            f.write(text.encode("utf-8").hex() + "\t" + " ".join(map(str, ids)) + "\n")


def load_model(gguf_path):
    import torch
    from transformers import AutoModelForCausalLM

    directory, name = split_path(gguf_path)
    if importlib.util.find_spec("accelerate") is not None:
        return AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # Without `accelerate`, from_pretrained refuses GGUF files. Do what it does for llama
    # (the legacy GGUF loader): config from the metadata, tensors from load_gguf_checkpoint.
    # Both parse the file with gguf.GGUFReader (seconds for a 49k vocabulary): parse it once.
    import gguf
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    parsed = {}
    reader_class = gguf.GGUFReader

    def cached_reader(path, *args, **kwargs):
        key = os.path.abspath(path)
        if key not in parsed:
            parsed[key] = reader_class(path, *args, **kwargs)
        return parsed[key]

    gguf.GGUFReader = cached_reader
    try:
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=model)["tensors"]
    finally:
        gguf.GGUFReader = reader_class
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
        model.tie_weights()
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def dump_logits(gguf_path, out_dir):
    import torch

    with open(os.path.join(out_dir, "ids.txt")) as f:
        prompts = [[int(i) for i in line.split()] for line in f if line.strip()]
    model = load_model(gguf_path)
    # One thread: on a shared machine, OpenMP's spinning threads make this small model 10x slower.
    torch.set_num_threads(1)
    for k, ids in enumerate(prompts):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()
        logits.astype("<f4").tofile(os.path.join(out_dir, f"logits_{k}.bin"))


def main():
    modes = {"tensors": dump_tensors, "tokens": dump_tokens, "logits": dump_logits,
             "random-types": random_types}
    if len(sys.argv) != 4 or sys.argv[1] not in modes:
        sys.exit(__doc__)
    mode, gguf_path, out_dir = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    modes[mode](gguf_path, out_dir)


if __name__ == "__main__":
    main()
