#!/usr/bin/python3
"""bench_bpe_corpus.py OUT BYTES FILE...: concatenates the (UTF-8) files, repeating them if
needed, and trims to BYTES at a line end: a benchmark corpus of a given size."""
import os
import sys

out, size, files = sys.argv[1], int(sys.argv[2]), [f for f in sys.argv[3:] if os.path.exists(f)]
parts = [open(f, "rb").read().decode("utf-8", errors="replace").encode("utf-8") for f in files]
buf = bytearray()
while len(buf) < size:
    for p in parts:
        buf += p
        if len(buf) >= size:
            break
cut = buf.rfind(b"\n", 0, size)
open(out, "wb").write(bytes(buf[:cut + 1 if cut > 0 else size]))
