#!/usr/bin/python3
"""make_debian_corpus.py OUT_DIR [--mb 1024] - a corpus of many files from the Debian text this
machine has, for bench/bench_bpe_corpus.sh (docs/benchmarks.md, tokenizer on a corpus of many files).

Sources, in this order, until --mb megabytes (10^6 bytes) are written: man pages
(/usr/share/man, gzipped roff), /usr/share/doc (text files and their .gz), Python sources
(/usr/lib/python3*), C headers (/usr/include), Perl modules (/usr/share/perl*,
/usr/lib/x86_64-linux-gnu/perl*), Free Pascal sources (/usr/share/fpcsrc, from fpc-source) and
Vim's runtime files (/usr/share/vim). Each source file becomes one file OUT_DIR/<kind>/<its path>
(a .gz decompressed, its name without .gz). Files holding a NUL byte (binary) are left out;
bytes that are not UTF-8 become U+FFFD, so the corpus is valid UTF-8 for every tokenizer.
Files are visited in byte order of their paths, so the same machine gives the same corpus.
Prints the files, bytes and the corpus's SHA-256 over all files in gpt-bpe's reading order.
"""
import argparse
import glob
import gzip
import hashlib
import os
import sys

SOURCES = [
    ("man", ["/usr/share/man"]),
    ("doc", ["/usr/share/doc"]),
    ("python", sorted(glob.glob("/usr/lib/python3*"))),
    ("include", ["/usr/include"]),
    ("perl", sorted(glob.glob("/usr/share/perl*") + glob.glob("/usr/lib/x86_64-linux-gnu/perl*"))),
    ("pascal", ["/usr/share/fpcsrc"]),
    ("vim", ["/usr/share/vim"]),
]
TEXT_EXT = {"python": (".py",), "include": (".h", ".hpp", ".hh", ".hxx", ".inc", ".def"),
            "perl": (".pm", ".pl", ".pod"), "pascal": (".pp", ".pas", ".inc"), "vim": (".vim", ".txt")}


def files_below(root):
    out = []
    for d, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return sorted(out)


def text_of(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError):
        return None
    if b"\0" in data or not data:
        return None
    return data.decode("utf-8", errors="replace").encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=1024)
    a = ap.parse_args()
    limit = int(a.mb * 1e6)
    if os.path.exists(a.out) and os.listdir(a.out):
        sys.exit("make_debian_corpus.py: %s exists and is not empty" % a.out)
    total, nfiles = 0, 0
    for kind, roots in SOURCES:
        for root in roots:
            for p in files_below(root):
                if total >= limit:
                    break
                ext = TEXT_EXT.get(kind)
                if ext and not p.endswith(ext):
                    continue
                data = text_of(p)
                if data is None:
                    continue
                data = data[: limit - total].decode("utf-8", errors="ignore").encode("utf-8")
                rel = p.lstrip("/")
                if rel.endswith(".gz"):
                    rel = rel[:-3]
                dst = os.path.join(a.out, kind, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(data)
                total += len(data)
                nfiles += 1
    # The SHA-256 of all bytes in gpt-bpe's order (find -L OUT -type f | LC_ALL=C sort).
    h = hashlib.sha256()
    for p in sorted(os.path.join(d, n).encode() for d, _, ns in os.walk(a.out) for n in ns):
        with open(p, "rb") as f:
            h.update(f.read())
    print("%s: %d files, %d bytes (%.1f MB), sha256 %s" % (a.out, nfiles, total, total / 1e6, h.hexdigest()))
    if total < limit:
        print("note: this machine has only %.1f MB of such text (asked for %.1f MB)" % (total / 1e6, a.mb))


if __name__ == "__main__":
    main()
