#!/usr/bin/env python3
"""ONNX Runtime logits of an ONNX QDQ model written by mq::onnx_qdq_model_bytes, for the C++ tests.

Usage: onnx_logits.py MODEL_ONNX IDS_FILE OUT_SAFETENSORS

  MODEL_ONNX       an .onnx file with input `input_ids` int64 [1, T] and output `logits`
                   float [1, T, V]
  IDS_FILE         one sequence per line: token ids separated by whitespace (blank lines skipped)
  OUT_SAFETENSORS  written with safetensors.numpy.save_file; for the k-th sequence (k from 0):
                     logits.<k>     [T_k, V] float32
                     input_ids.<k>  [T_k]    int64 (the ids as read, for cross-checking)

First the model is checked with `onnx.checker.check_model(full_check=True)` (structure, opset
schemas and shape inference: this also validates our hand-written protobuf encoding). Then
ONNX Runtime's CPU provider runs it with graph optimizations disabled (ORT_DISABLE_ALL): at the
default level ORT fuses DequantizeLinear(int4) -> MatMul into com.microsoft::MatMulNBits,
which quantizes the activations dynamically and so computes another function
(ecosystem.md §1b). One thread, so that sums run in one fixed order.
Prints the versions and, per sequence, its length and argmax of the last position.
Exit status 3 means a Python package is missing (callers may skip); any other failure is 1.
"""
import sys


from oracle_ids import read_ids


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_path, ids_path, out_path = sys.argv[1:]
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from safetensors.numpy import save_file
    except ImportError as e:
        print(f"onnx_logits.py: missing python package: {e}", file=sys.stderr)
        sys.exit(3)

    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}")
    model = onnx.load(model_path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # noqa: BLE001 - report any checker failure with the file name
        sys.exit(f"onnx_logits.py: {model_path}: onnx.checker rejects the model: {e}")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    print(f"{model_path}: ir_version {model.ir_version}, opsets {opsets}, "
          f"{len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_path, sess_options=so, providers=["CPUExecutionProvider"])

    out = {}
    for k, seq in enumerate(read_ids(ids_path, "onnx_logits.py")):
        ids = np.asarray([seq], dtype=np.int64)                      # [1, T]
        (logits,) = sess.run(["logits"], {"input_ids": ids})          # [1, T, V]
        if logits.shape[:2] != (1, len(seq)):
            sys.exit(f"onnx_logits.py: sequence {k}: logits shape {logits.shape}, "
                     f"expected (1, {len(seq)}, V)")
        out[f"logits.{k}"] = np.ascontiguousarray(logits[0], dtype=np.float32)
        out[f"input_ids.{k}"] = np.asarray(seq, dtype=np.int64)
        print(f"sequence {k}: T={len(seq)}, argmax(last)={int(logits[0, -1].argmax())}")
    save_file(out, out_path)


if __name__ == "__main__":
    main()
