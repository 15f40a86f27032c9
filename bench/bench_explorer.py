#!/usr/bin/python3
"""bench_explorer.py - the attention explorer's budget (docs/attention.md, the explorer):
the gpt2-124M shape (12 layers x 12 heads), a 64-token probe and 60 records must make a page
of at most 25 MB that is interactive in under 3 s in headless Chromium.

Two attention.h5 files of that shape:
  random   attn_write_check's random causal softmax rows (u^3 weights): they compress worst,
           so this is the upper bound of the page's size
  trained  a real gpt-train run, 12 layers x 12 heads (n_embd 96, block 64, 600 steps,
           --attn-every 10 on a 64-token probe of the validation text)
For each: the page's size, the time gpt_viz.py --html takes to build it, and in Debian's
headless Chromium (tests/browser/explorer_check.mjs, mode "time", puppeteer-core) the time
to interactive: from navigation start to the first complete drawing of the training view
(the page's window.explorerReady: the HTML parsed, the first record inflated, all 156
heatmaps and the head view drawn), each load in a fresh tab; also the time until every
record is decoded (window.explorerDecoded) and the JS heap. Medians of --repeats loads.

    /usr/bin/python3 bench/bench_explorer.py [--build build] [--repeats 5] [--skip-trained]

Needs what the browser tests need (scripts/setup.sh --tests: chromium, node, puppeteer-core).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
VIZ = os.path.join(SRC, "io", "python", "gpt_viz.py")
CHECK = os.path.join(SRC, "tests", "browser", "explorer_check.mjs")
DATA = os.path.join(SRC, "..", "shared", "data", "taylorswift.txt")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1")


def sh(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV)
    if p.returncode != 0:
        sys.exit(f"bench_explorer: {' '.join(map(str, args))}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return p


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def random_run(build, d):
    run = os.path.join(d, "random")
    os.makedirs(run)
    sh(os.path.join(build, "attn_write_check"), "write", f"out={run}/attention.h5", "raw=/dev/null", "L=12", "H=12",
       "T=64", "block=64", "records=60", "every=10")
    return run


def trained_run(build, d):
    run = os.path.join(d, "trained")
    data = DATA if os.path.isfile(DATA) else os.path.join(SRC, "README.md")
    sh(os.path.join(build, "gpt-train"), "--data", data, "--out", run, "--vocab-size", "1000", "--n-layer", "12",
       "--n-head", "12", "--n-embd", "96", "--block-size", "64", "--batch-size", "4", "--steps", "600",
       "--eval-every", "100", "--log-every", "50", "--attn-every", "10", "--dropout", "0")
    return run


def measure(run, d, repeats):
    html = os.path.join(d, os.path.basename(run) + ".html")
    t0 = time.time()
    sh(sys.executable, VIZ, run, "--html", html)
    build_s = time.time() - t0
    expect = os.path.join(d, "time.json")
    with open(expect, "w") as f:
        json.dump({"mode": "time", "url": "file://" + html, "repeat": repeats}, f)
    out = sh("node", CHECK, expect).stdout
    times = json.loads(out.split("TIMES ", 1)[1].split("\n", 1)[0])
    return {"size_mb": os.path.getsize(html) / 1e6, "build_s": build_s,
            "interactive_ms": statistics.median(t["interactive_ms"] for t in times),
            "interactive_max_ms": max(t["interactive_ms"] for t in times),
            "decoded_ms": statistics.median(t["decoded_ms"] for t in times),
            "heap_mb": statistics.median(t["heap_mb"] for t in times) if times[0]["heap_mb"] else float("nan")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-trained", action="store_true", help="only the random (worst-case) file")
    a = ap.parse_args()
    chromium = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_explorer_") as d:
        runs = [("random (worst case)", random_run(a.build, d))]
        if not a.skip_trained:
            runs.append(("trained, 600 steps", trained_run(a.build, d)))
        print(f"{cpu_name()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {chromium}; "
              f"12 layers x 12 heads, 64-token probe, 60 records; {a.repeats} loads each\n")
        print("| attention | page | built in | interactive (median, max) | all records decoded | JS heap |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, run in runs:
            m = measure(run, d, a.repeats)
            print(f"| {name} | {m['size_mb']:.1f} MB | {m['build_s']:.1f} s | {m['interactive_ms'] / 1000:.2f} s, "
                  f"{m['interactive_max_ms'] / 1000:.2f} s | {m['decoded_ms'] / 1000:.2f} s | {m['heap_mb']:.0f} MB |",
                  flush=True)


if __name__ == "__main__":
    main()
