#!/usr/bin/env python3
"""Turns a mobilequant/quant/*_cuda.cu into C++ the CUDA emulation (emu.h) compiles: the
kernels and their helpers (everything up to the end of the file's anonymous namespace), the
CUDA-only includes dropped, dynamic shared memory taken from the emulation.
Usage: emu_source.py SRC.cu OUT.inc"""
import sys

src, out = sys.argv[1], sys.argv[2]
text = open(src).read()
end = text.index('\n}  // namespace\n')  # the anonymous namespace closes before the host code
text = text[:end] + '\n}  // namespace\n}  // namespace mq\n'
lines = [l for l in text.split('\n') if not l.startswith('#include <c10/cuda')]
text = '#include "emu.h"\n' + '\n'.join(lines)
text = text.replace('extern __shared__ float buf[];', 'float* buf = emu_dynamic_shared();')
open(out, 'w').write(text)
