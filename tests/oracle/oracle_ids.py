"""The token-id files the C++ tests hand to the Python oracles (hf_logits.py, onnx_logits.py)."""
import sys


def read_ids(path, prog):
    """The sequences of an ids file (one per line, whitespace-separated ints, blank lines
    skipped) as lists of ints; exits naming `prog`, the file and the line on bad input."""
    sequences = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                sequences.append([int(x) for x in fields])
            except ValueError:
                sys.exit(f"{prog}: {path}:{line_no}: expected integer token ids, got {line!r}")
    if not sequences:
        sys.exit(f"{prog}: {path}: no sequences")
    return sequences
