#!/usr/bin/python3
"""test_bf16.py - src/base/bf16.h against PyTorch: float32 -> bfloat16 with round to nearest
even on edge cases (ties, overflow to Inf, subnormals, NaN) and 200k seeded bit patterns.
NaN must stay NaN (PyTorch returns one canonical NaN; ours keeps the sign and payload top)."""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

torch = tl.require_module("torch", "python3-torch is not installed: nothing to compare bf16 rounding with")

with tempfile.TemporaryDirectory() as d:
    out = os.path.join(d, "bf16.bin")
    tl.run_ok([os.path.join(tl.BUILD, "bf16_dump"), out])
    pairs = np.fromfile(out, dtype=np.uint32).reshape(-1, 2)
x = pairs[:, 0].view(np.float32)
ours = pairs[:, 1].astype(np.uint16)
ref = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
nan = np.isnan(x)
ours_nan = ((ours & 0x7F80) == 0x7F80) & ((ours & 0x007F) != 0)
bad = np.flatnonzero(~nan & (ours != ref))
fails = 0
if len(bad):
    i = bad[0]
    print(f"FAIL {len(bad)} of {len(x)} values round differently from PyTorch; first: "
          f"{pairs[i, 0]:08x} -> ours {ours[i]:04x}, torch {ref[i]:04x}")
    fails += 1
if not np.array_equal(nan, ours_nan):
    print("FAIL NaN inputs must give NaN and only they")
    fails += 1
if not fails:
    print(f"ok   {len(x)} float32 values round to bfloat16 exactly as PyTorch ({nan.sum()} NaNs stay NaN)")
sys.exit(1 if fails else 0)
