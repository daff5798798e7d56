#!/usr/bin/env python3
"""Hugging Face `transformers` logits of any model directory, for the C++ tests.

Usage: hf_logits.py MODEL_DIR IDS_FILE OUT_SAFETENSORS

  MODEL_DIR        a Hugging Face directory (config.json + safetensors), e.g. one written by
                   mq::write_hf_directory
  IDS_FILE         one sequence per line: token ids separated by whitespace (blank lines skipped)
  OUT_SAFETENSORS  written with safetensors.torch.save_file; for the k-th sequence (k from 0):
                     logits.<k>     [T_k, V] float32
                     input_ids.<k>  [T_k]    int64 (the ids as read, for cross-checking)

The model is loaded with AutoModelForCausalLM in float32 with eager attention; a missing,
unexpected or mis-shaped weight is an error (transformers would otherwise initialise it at
random). Each sequence runs alone (batch of one, no padding, no attention mask: positions
0..T_k-1).
Exit status 3 means a Python package is missing (callers may skip); any other failure is 1.
"""
import sys


from oracle_ids import read_ids


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, ids_path, out_path = sys.argv[1:]
    try:
        import torch
        import transformers
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        print(f"hf_logits.py: missing python package: {e}", file=sys.stderr)
        sys.exit(3)

    transformers.utils.logging.disable_progress_bar()
    sequences = read_ids(ids_path, "hf_logits.py")
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:
        sys.exit(f"hf_logits.py: {model_dir}: weights do not match the model: {problems}")
    model.eval()
    vocab = model.config.vocab_size
    print(f"hf_logits.py: {type(model).__name__} from {model_dir}, transformers "
          f"{transformers.__version__}, torch {torch.__version__}, {len(sequences)} sequences")
    out = {}
    with torch.no_grad():
        for k, ids in enumerate(sequences):
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                sys.exit(f"hf_logits.py: sequence {k}: ids {bad[:5]} outside [0, {vocab})")
            input_ids = torch.tensor([ids], dtype=torch.int64)           # [1, T]
            logits = model(input_ids=input_ids).logits[0]                # [T, V]
            out[f"logits.{k}"] = logits.float().contiguous()
            out[f"input_ids.{k}"] = input_ids[0].contiguous()
    save_file(out, out_path, metadata={"transformers": transformers.__version__})


if __name__ == "__main__":
    main()
