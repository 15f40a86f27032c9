#!/usr/bin/python3
"""The attention explorer in a real browser: gpt_viz.py --html pages of runs written by our C
writers (attn_write_check, gpt-train, gpt-sample), opened in Debian's headless Chromium by
explorer_check.mjs (puppeteer-core). The expected values come from the HDF5 files (h5py).

  static  every view, opened by hash and by clicking; heatmap pixels, tooltips, text shading,
          surprise and candidates equal the HDF5 values up to the quantization
  old     files without /token_loss and /top_ids: the views say what is missing
  live    gpt_viz.py --serve while gpt-train runs: the page follows new records; Ctrl-C
          (SIGINT) stops the server cleanly
The static checks run in Firefox too when /usr/bin/firefox-esr (GT_FIREFOX) is installed.

Skips (exit 77) only when chromium, node or puppeteer-core are not installed
(scripts/setup.sh --tests installs all three)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402

HERE = os.path.join(tl.SRC, "tests", "browser")
TOOL = os.path.join(tl.BUILD, "attn_write_check")
TRAIN = os.path.join(tl.BUILD, "gpt-train")
SAMPLE = os.path.join(tl.BUILD, "gpt-sample")
VIZ = os.path.join(tl.PYDIR, "gpt_viz.py")
CHROMIUM = os.environ.get("GT_CHROMIUM", "/usr/bin/chromium")
FIREFOX = os.environ.get("GT_FIREFOX", "/usr/bin/firefox-esr")
TMP = tl.tmpdir("explorer_")


def sh(*args):
    return tl.run_ok(list(args))


def missing():
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (Debian package chromium; scripts/setup.sh --tests installs it)"
    if not shutil.which("node"):
        return "node not found (Debian package nodejs; scripts/setup.sh --tests installs it)"
    if not os.path.isfile(os.path.join(HERE, "node_modules", "puppeteer-core", "package.json")):
        return "tests/browser/node_modules/puppeteer-core missing (scripts/setup.sh --tests runs npm ci there)"
    return None


def node_check(expect, name):
    path = os.path.join(TMP, f"expect-{name}.json")
    with open(path, "w") as f:
        json.dump(expect, f)
    p = subprocess.run(["node", os.path.join(HERE, "explorer_check.mjs"), path], capture_output=True, text=True,
                       timeout=600)
    sys.stdout.write(p.stdout)
    assert p.returncode == 0, f"{name}: the browser checks failed (exit {p.returncode})\n{p.stderr[-3000:]}"


def cmap_hex():
    from matplotlib import colormaps
    return (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8).tobytes().hex()


def fixture(name, L=2, H=2, T=12, records=7, with_extras=True):
    run = os.path.join(TMP, name)
    os.makedirs(run)
    sh(TOOL, "write", f"out={run}/attention.h5", f"raw={run}/raw.bin", f"L={L}", f"H={H}", f"T={T}",
       f"records={records}", "every=5", "block=16")
    with open(os.path.join(run, "metrics.csv"), "w") as f:
        f.write("step,tokens,train_loss,val_loss,lr,grad_norm,ms_per_step,tokens_per_s\n")
        for s in range(1, 5 * records + 1):
            val = f"{6.0 - s * 0.04:.4f}" if s % 10 == 0 else ""
            f.write(f"{s},{s * 512},{6.0 - s * 0.05 + 0.1 * np.sin(s):.4f},{val},0.001,1.5,12.0,40000\n")
    gens = []
    for g, (P, N, block) in enumerate(((5, 10, 8), (3, 6, 16))):
        gen = os.path.join(run, f"gen{g}.h5")
        sh(TOOL, "gen", f"out={gen}", f"raw={TMP}/{name}-gen{g}.bin", f"P={P}", f"N={N}", f"block={block}")
        gens.append(gen)
    if not with_extras:  # files of an older gpt-train and gpt-sample: no /token_loss, no candidates
        with h5py.File(os.path.join(run, "attention.h5"), "a") as f:
            del f["token_loss"]
        for gen in gens:
            with h5py.File(gen, "a") as f:
                for k in ("top_ids", "top_probs", "top_tokens"):
                    del f[k]
    return run, gens


def expectations(run, gens, html):
    rec = ga.read_attention(run)
    with open(html, encoding="utf-8") as f:
        text = f.read()
    start = text.index('<script type="application/json" id="explorer-data">') + 51
    data = json.loads(text[start: text.index("</script>", start)])
    idx = data["records"]["index"]
    e = {"mode": "static", "url": "file://" + os.path.abspath(html), "chromium": CHROMIUM, "cmap": cmap_hex(),
         "L": rec.n_layer, "H": rec.n_head, "T": rec.T, "tokens": rec.tokens,
         "steps": [int(rec.steps[i]) for i in idx], "att": rec.records(idx).tolist(),
         "token_loss": rec.token_loss[idx].tolist() if rec.token_loss is not None else None, "gens": []}
    assert data["records"]["step"] == e["steps"]
    for path in gens:
        g = ga.read_generation(path)
        P = g.n_prompt
        rows = [g.attention[i, :, :, : P + i - int(g.context_start[i])].tolist() for i in range(g.n_generated)]
        e["gens"].append({"tokens": g.tokens, "n_prompt": P, "context_start": g.context_start.tolist(), "rows": rows,
                          "top_ids": g.top_ids.tolist() if g.top_ids is not None else [],
                          "top_probs": g.top_probs.tolist() if g.top_probs is not None else [],
                          "top_tokens": g.top_tokens or []})
    return e


def test_static():
    run, gens = fixture("run")
    html = os.path.join(TMP, "explorer.html")
    sh(tl.PYTHON, VIZ, run, "--gen", gens[0], "--gen", gens[1], "--html", html)
    node_check(expectations(run, gens, html), "static")
    # the same checks in Firefox, where it is installed (Debian's firefox-esr; not by setup.sh)
    if os.access(FIREFOX, os.X_OK):
        node_check(dict(expectations(run, gens, html), firefox=FIREFOX), "static-firefox")
    else:
        print(f"note: {FIREFOX} not installed: the page was checked in Chromium only")


def test_old_files():
    run, gens = fixture("old", with_extras=False)
    html = os.path.join(TMP, "old.html")
    sh(tl.PYTHON, VIZ, run, "--gen", gens[0], "--html", html)
    e = expectations(run, gens[:1], html)
    e["mode"] = "old"
    node_check(e, "old")


def corpus():
    return tl.shared_data("taylorswift.txt", fallback=os.path.join(tl.SRC, "README.md"))


def test_live():
    run = os.path.join(TMP, "live")
    env = tl.env({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    train = subprocess.Popen([TRAIN, "--data", corpus(), "--out", run, "--vocab-size", "300", "--n-layer", "2",
                              "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
                              "--eval-every", "0", "--log-every", "5", "--steps", "100000", "--attn-every", "20",
                              "--attn-prompt", " Hello, this is"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    server = None
    try:
        deadline = time.time() + 120
        while not os.path.isdir(run) and time.time() < deadline:
            time.sleep(0.05)
        # started before attention.h5 exists: the page waits for it
        server = subprocess.Popen([tl.PYTHON, VIZ, run, "--serve", "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line + server.stderr.read()
        url = line.split("at ", 1)[1].split()[0]
        h5 = os.path.join(run, "attention.h5")
        while time.time() < deadline:
            try:
                if os.path.exists(h5) and len(ga.read_attention(h5)) >= 2:
                    break
            except (OSError, KeyError):
                pass
            time.sleep(0.2)
        assert train.poll() is None, train.stderr.read()[-2000:]
        node_check({"mode": "live", "url": url, "server": url, "chromium": CHROMIUM, "cmap": cmap_hex(),
                    "live_wait_s": 90}, "live")
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=20)
        assert server.returncode == 0 and "stopped" in out and "Traceback" not in err, (server.returncode, out, err)
    finally:
        for p in (server, train):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    why = missing()
    if why:
        tl.skip(why)
    tl.require("attn_write_check", "gpt-train", "gpt-sample", fail=True)
    for t in (test_static, test_old_files, test_live):
        tl.timed(t)
    tl.rmtree(TMP)  # kept when a test fails, for a look
