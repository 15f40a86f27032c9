#!/usr/bin/python3
"""io/python/gpt_attention.py and gpt_viz.py on files written by our C writers
(tests/attn_write_check.c): the arrays read and the matrices plotted equal the HDF5 data,
rows sum to 1, upper triangle 0, steps increase, the generation matrix rebuilt from rows
equals a full forward of the window, bertviz's structure, PNGs/GIF decode at the
expected size, and the command writes every figure."""
import os
import sys

import h5py
import matplotlib.image as mpimg
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402
import gpt_viz as gv  # noqa: E402

TOOL = os.path.join(tl.BUILD, "attn_write_check")
VIZ = os.path.join(tl.PYDIR, "gpt_viz.py")
TMP = tl.tmpdir("attn_viz_")
L, H, T, N = 2, 3, 9, 7


def fixture_run():
    run = os.path.join(TMP, "run")
    os.makedirs(run, exist_ok=True)
    tl.run_ok([TOOL, "write", f"out={run}/attention.h5", f"raw={run}/raw.bin", f"L={L}", f"H={H}", f"T={T}",
               f"records={N}", "every=5"])
    with open(os.path.join(run, "metrics.csv"), "w") as f:
        f.write("step,tokens,train_loss,val_loss,lr,grad_norm,ms_per_step,tokens_per_s\n")
        for s in range(1, 36):
            val = f"{6.0 - s * 0.05:.4f}" if s % 10 == 0 else ""
            f.write(f"{s},{s * 512},{6.0 - s * 0.06:.4f},{val},0.001,1.5,12.0,40000\n")
    gen = os.path.join(TMP, "gen.h5")
    if os.path.exists(gen):
        os.remove(gen)
    tl.run_ok([TOOL, "gen", f"out={gen}", f"raw={TMP}/gen.bin", "P=5", "N=10", "block=8"])
    return run, gen


def png_size(path):
    img = mpimg.imread(path)
    return img.shape[1], img.shape[0]


def check_probabilities(a):
    Tq, Tk = a.shape[-2:]
    assert np.allclose(a.sum(-1), 1.0, atol=1e-5)
    assert (np.triu(np.ones((Tq, Tk)), k=Tk - Tq + 1).astype(bool) <= (a == 0)).all(), "upper triangle not 0"


def test_reader(run):
    rec = ga.read_attention(run)
    raw = np.fromfile(os.path.join(run, "raw.bin"), np.float32).reshape(N, L, H, T, T)
    assert len(rec) == N and (rec.n_layer, rec.n_head, rec.T, rec.every) == (L, H, T, 5)
    assert (np.diff(rec.steps) > 0).all() and rec.steps.tolist() == list(range(5, 5 * N + 1, 5))
    np.testing.assert_array_equal(rec.all(), raw)
    np.testing.assert_array_equal(rec.record(-1), raw[-1])
    np.testing.assert_array_equal(rec.head_series(1, 2), raw[:, 1, 2])
    assert rec.index_of_step(15) == 2
    check_probabilities(rec.all())
    assert rec.tokens[:8] == list("Hello, w") and rec.tokens[8] == "Hé"
    hv = rec.head_view(3)
    assert isinstance(hv, list) and len(hv) == L
    for l in range(L):
        assert hv[l].shape == (1, H, T, T)
        np.testing.assert_array_equal(hv[l][0], raw[3, l])
    try:
        import torch
        hv = rec.head_view(3, as_torch=True)
        assert isinstance(hv[0], torch.Tensor) and tuple(hv[0].shape) == (1, H, T, T)
    except ImportError:
        pass


def test_plots(run):
    rec = ga.read_attention(run)
    raw = rec.all()
    out = os.path.join(TMP, "figs")
    os.makedirs(out, exist_ok=True)
    r = gv.plot_head(rec, 4, 1, 2, os.path.join(out, "head.png"), figsize=(6.0, 5.0), dpi=50)
    np.testing.assert_array_equal(r["data"], raw[4, 1, 2])
    check_probabilities(r["data"])
    assert png_size(r["path"]) == (300, 250) == r["size"]
    r = gv.plot_grid(rec, -1, os.path.join(out, "grid.png"), figsize=(8.0, 5.0), dpi=60)
    np.testing.assert_array_equal(r["data"], raw[-1])
    assert png_size(r["path"]) == (480, 300)
    r = gv.plot_head_steps(rec, 0, 1, os.path.join(out, "steps.png"), max_panels=4, figsize=(9.0, 3.0), dpi=40)
    assert r["indices"] == [0, 2, 4, 6]
    np.testing.assert_array_equal(r["data"], raw[[0, 2, 4, 6], 0, 1])
    assert (np.diff(rec.steps[r["indices"]]) > 0).all()
    assert png_size(r["path"]) == (360, 120)
    g = gv.animate_head(rec, 0, 1, os.path.join(out, "steps.gif"), figsize=(4.0, 4.0), dpi=50)
    if g is not None:
        from PIL import Image
        im = Image.open(g["path"])
        assert im.n_frames == N == g["frames"], (im.n_frames, g["frames"])
        assert im.size == (200, 200)
        np.testing.assert_array_equal(g["data"], raw[:, 0, 1])
    m = ga.read_metrics(os.path.join(run, "metrics.csv"))
    r = gv.plot_loss(m, os.path.join(out, "loss.png"), figsize=(5.0, 3.0), dpi=80)
    steps, train = r["data"]["train_loss"]
    assert steps.tolist() == list(range(1, 36)) and np.allclose(train, [6.0 - s * 0.06 for s in range(1, 36)])
    vsteps, val = r["data"]["val_loss"]
    assert vsteps.tolist() == [10, 20, 30], vsteps  # empty cells skipped
    assert png_size(r["path"]) == (400, 240)


def test_generation(gen):
    g = ga.read_generation(gen)
    P, Ng = g.n_prompt, g.n_generated
    assert (P, Ng, g.block_size) == (5, 10, 8)
    assert len(g.tokens) == len(g.token_ids) == P + Ng
    assert g.attrs["prompt"] == "Hello" and g.attrs["step"] == 42 and g.attrs["seed"] == 1337
    assert g.context_start.tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    check_probabilities(g.prompt_attention)
    # stored rows: zero-padded to the block size, each a distribution over its window
    for i in range(Ng):
        W = P + i - g.context_start[i]
        assert np.allclose(g.attention[i, :, :, :W].sum(-1), 1, atol=1e-5)
        assert (g.attention[i, :, :, W:] == 0).all()
    # the matrix rebuilt from rows equals a full forward of the window (before the window
    # slides); the drawing query's row always does
    raw = np.fromfile(os.path.join(TMP, "gen.bin"), np.float32)
    off = 0
    for i in range(Ng):
        m, labels = g.matrix(i)
        W = m.shape[-1]
        full = raw[off: off + 2 * 2 * W * W].reshape(2, 2, W, W)
        off += 2 * 2 * W * W
        assert labels == g.tokens[g.context_start[i]: P + i]
        np.testing.assert_allclose(m[:, :, -1], full[:, :, -1], atol=1e-6)  # cache vs full forward
        if g.context_start[i] == 0:
            np.testing.assert_allclose(m, full, atol=1e-6)
            check_probabilities(m)
        hv = g.head_view(i)
        assert len(hv) == 2 and hv[0].shape == (1, 2, W, W)
    assert off == raw.size
    out = os.path.join(TMP, "figs")
    r = gv.plot_generation_token(g, 2, 1, 0, os.path.join(out, "tok.png"), figsize=(5.0, 5.0), dpi=40)
    np.testing.assert_array_equal(r["data"], g.matrix(2)[0][1, 0])
    assert png_size(r["path"]) == (200, 200)
    r = gv.plot_generation_tokens(g, 0, 1, os.path.join(out, "toks.png"), n=4, figsize=(12.0, 4.0), dpi=30)
    for i in range(4):
        np.testing.assert_array_equal(r["data"][i], g.matrix(i)[0][0, 1])
    assert png_size(r["path"]) == (360, 120)
    pv = g.prompt_head_view()
    np.testing.assert_array_equal(pv[1][0], g.prompt_attention[1])


def test_command(run, gen):
    out = os.path.join(TMP, "cmd")
    # gen has 2 heads, the run 3: --head 2 is one error naming the file, not head 0 (it wrapped once)
    p = tl.run([tl.PYTHON, VIZ, run, "--out", out, "--gen", gen, "--head", "2"])
    assert p.rc == 1 and p.err.count("\n") == 1 and "--head 2" in p.err and gen in p.err, p.err
    assert not os.path.exists(out) or os.listdir(out) == []
    p = tl.run_ok([tl.PYTHON, VIZ, run, "--out", out, "--gen", gen, "--gen-tokens", "3", "--layer", "1", "--head", "1",
                   "--dpi", "40"])
    files = sorted(os.listdir(out))
    want = ["attn_L1H1_steps.gif", "attn_L1H1_steps.png", "attn_grid_step00000035.png",
            "attn_step00000035_L1H1.png", "gen_prompt_grid.png", "gen_tok000_L1H1.png", "gen_tok001_L1H1.png",
            "gen_tok002_L1H1.png", "gen_tokens_L1H1.png", "loss.png"]
    assert files == sorted(want), files
    assert sorted(os.path.basename(x) for x in p.out.split()) == sorted(want)
    for f in files:
        if f.endswith(".png"):
            w, h = png_size(os.path.join(out, f))
            assert w > 50 and h > 50, (f, w, h)
    # --step picks a record; an unknown one is one clear error
    tl.run_ok([tl.PYTHON, VIZ, os.path.join(run, "attention.h5"), "--out", out, "--step", "10", "--dpi", "30"])
    assert os.path.exists(os.path.join(out, "attn_step00000010_L1H0.png"))
    p = tl.run([tl.PYTHON, VIZ, run, "--out", out, "--step", "11"])
    assert p.rc == 1 and "step 11" in p.err and "Traceback" not in p.err, p.err
    # out of range: one error line, no wrap-around, no traceback
    for args, needle in ((["--layer", "7"], "--layer 7"), (["--head", "-4"], "--head -4"),
                         (["--max-frames", "0"], "--max-frames 0")):
        p = tl.run([tl.PYTHON, VIZ, run, "--out", out, *args])
        assert p.rc == 1 and p.err.count("\n") == 1 and needle in p.err, p.err
    p = tl.run([tl.PYTHON, VIZ, os.path.join(TMP, "nope"), "--out", out])
    assert p.rc == 1 and "nope" in p.err and "Traceback" not in p.err, p.err
    with h5py.File(os.path.join(TMP, "other.h5"), "w") as f:
        f.attrs["format"] = "gpt-train/tokens"
        f.attrs["format_version"] = 1
    p = tl.run([tl.PYTHON, VIZ, os.path.join(TMP, "other.h5"), "--out", out])
    assert p.rc == 1 and "gpt-train/attention" in p.err and "Traceback" not in p.err, p.err


if __name__ == "__main__":
    tl.require("attn_write_check", fail=True)
    run, gen = fixture_run()
    for t, args in ((test_reader, (run,)), (test_plots, (run,)), (test_generation, (gen,)),
                    (test_command, (run, gen))):
        tl.timed(t, *args)
    tl.rmtree(TMP)  # kept when a test fails, for a look
