#!/usr/bin/python3
"""gpt-train --attn-every end to end: RUN/attention.h5 under mpirun (rank 0 writes), read
with h5py while training runs (SWMR), records equal the PyTorch twin's attention for the
final checkpoint, --resume appends without duplicate steps, float16, bad probes, and
gpt_viz.py draws the run."""
import os
import sys
import time

import h5py
import matplotlib.image as mpimg
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402

TRAIN = os.path.join(tl.BUILD, "gpt-train")
SAMPLE = os.path.join(tl.BUILD, "gpt-sample")
VIZ = os.path.join(tl.PYDIR, "gpt_viz.py")
TMP = tl.tmpdir("attn_train_")
PROBE = " Hello, this is"
MODEL = ["--vocab-size", "300", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "24",
         "--batch-size", "8", "--eval-every", "0", "--log-every", "10", "--dropout", "0.1"]


def corpus():
    return tl.shared_data("taylorswift.txt", fallback=os.path.join(tl.SRC, "README.md"))


def train(run, *args, np_=1, expect=0, popen=False):
    cmd = [TRAIN, "--data", corpus(), "--out", run, *MODEL, *args]
    if np_ > 1:
        cmd = tl.mpirun(np_, *cmd)
    if popen:
        return tl.spawn(cmd)
    return tl.run_ok(cmd, expect=expect)


def check_probabilities(a):
    T = a.shape[-1]
    assert np.allclose(a.sum(-1), 1.0, atol=1e-5)
    iu = np.triu_indices(T, 1)
    assert (a[..., iu[0], iu[1]] == 0).all()


def twin_attention(ckpt, ids):
    """The PyTorch twin's attention (L, H, T, T) and loss on each token 1..T-1 for the probe."""
    import torch
    import torch.nn.functional as F
    from nanogpt_model import GPT
    model = GPT.from_checkpoint(ckpt)
    model.eval()
    for b in model.transformer.h:
        b.attn.keep_att = True
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits, _ = model(x, x)  # with targets: logits at every position
        token_loss = F.cross_entropy(logits[0, :-1].float(), x[0, 1:], reduction="none")
    return np.stack([b.attn.last_att[0].numpy() for b in model.transformer.h]), token_loss.numpy()


def test_train_attention_mpi():
    run = os.path.join(TMP, "run")
    train(run, "--steps", "40", "--attn-every", "10", "--attn-prompt", PROBE, np_=2)
    rec = ga.read_attention(run)
    assert rec.steps.tolist() == [10, 20, 30, 40] and rec.every == 10
    assert (rec.n_layer, rec.n_head) == (2, 2)
    assert "".join(rec.tokens) == PROBE
    a = rec.all()
    check_probabilities(a)
    assert not np.allclose(a[0], a[-1], atol=1e-4), "attention did not change over training"
    # the losses are the training losses logged at those steps
    m = ga.read_metrics(os.path.join(run, "metrics.csv"))
    for s, loss in zip(rec.steps, rec.loss):
        row = np.nonzero(m["step"] == s)[0]
        assert len(row) == 1 and abs(m["train_loss"][row[0]] - loss) < 1e-3, (s, loss)
    # the probe ids are the tokenizer's (gpt-sample encodes the same text the same way)
    gen = os.path.join(TMP, "g.h5")
    tl.run_ok([SAMPLE, "--checkpoint", run, "--prompt", PROBE, "--max-new-tokens", "1", "--attn-out", gen])
    g = ga.read_generation(gen)
    assert g.token_ids[: g.n_prompt].tolist() == rec.token_ids.tolist()
    # the last record is the final weights' eval-mode attention: the twin's, and the
    # sampler's prompt attention
    att, token_loss = twin_attention(tl.latest(run), rec.token_ids.tolist())
    np.testing.assert_allclose(rec.record(-1), att, atol=2e-5)
    assert rec.token_loss.shape == (4, len(rec.tokens) - 1)
    np.testing.assert_allclose(rec.token_loss[-1], token_loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rec.record(-1), g.prompt_attention, atol=2e-5)
    return run


def test_resume(run):
    train(run, "--steps", "60", "--resume", "--attn-every", "10", "--attn-prompt", PROBE)
    rec = ga.read_attention(run)
    assert rec.steps.tolist() == [10, 20, 30, 40, 50, 60], rec.steps
    check_probabilities(rec.all())


def test_crash_after_last_checkpoint(run):
    """A run killed after its last checkpoint leaves attention.h5 marked open for SWMR
    writing, perhaps with a record past that checkpoint. --resume with nothing left to
    train must still repair it, so that plain h5py opens it and each step is there once."""
    path = os.path.join(run, "attention.h5")
    crash = ("import h5py, numpy as np, os, sys\n"
             "f = h5py.File(sys.argv[1], 'a', libver='latest')\n"
             "f.swmr_mode = True\n"
             "n = f['step'].shape[0]\n"
             "for name in ('step', 'loss', 'attention'):\n"
             "    d = f[name]; d.resize(n + 1, axis=0); d[n] = d[n - 1]\n"
             "f['step'][n] = 70\n"
             "f.flush()\n"
             "os._exit(0)  # dies without closing: the file stays marked open for writing\n")
    tl.run_ok([tl.PYTHON, "-c", crash, path])
    try:
        h5py.File(path, "r").close()
        raise AssertionError("the simulated crash did not leave attention.h5 marked open for writing")
    except OSError:
        pass
    p = train(run, "--steps", "60", "--resume", "--attn-every", "10", "--attn-prompt", PROBE)
    assert "nothing to train" in p.out, p.out[-2000:]
    with h5py.File(path, "r") as f:  # plain h5py, no swmr=True: the mark is gone
        assert f["step"][()].tolist() == [10, 20, 30, 40, 50, 60], f["step"][()]
        assert f["attention"].shape[0] == 6 and f["loss"].shape[0] == 6
    check_probabilities(ga.read_attention(run).all())


def test_float16_and_default_probe():
    run = os.path.join(TMP, "f16")
    train(run, "--steps", "20", "--attn-every", "5", "--attn-dtype", "float16")
    with h5py.File(os.path.join(run, "attention.h5"), "r") as f:
        assert f["attention"].dtype == np.float16
        assert f["attention"].shape == (4, 2, 2, 24, 24)  # default probe: block_size tokens of /val
    a = ga.read_attention(run).all()
    assert np.allclose(a.sum(-1), 1.0, atol=2e-2)


def test_bad_probe():
    for args, needle in ((["--attn-prompt", "word " * 40], "--attn-prompt"),
                         (["--attn-prompt", ""], "--attn-prompt")):
        run = os.path.join(TMP, "bad")
        p = train(run, "--steps", "5", "--attn-every", "1", *args, expect=1)
        err = tl.error_lines(p.err, "error")
        assert len(err) == 1 and needle in err[0], p.err
        assert not os.path.exists(os.path.join(run, "attention.h5"))


def test_read_while_training():
    run = os.path.join(TMP, "live")
    w = train(run, "--steps", "600", "--attn-every", "5", "--attn-prompt", PROBE, popen=True)
    seen = []
    h5 = os.path.join(run, "attention.h5")
    while w.poll() is None:
        if os.path.exists(h5):
            try:
                rec = ga.read_attention(h5)
            except (OSError, KeyError):
                time.sleep(0.02)
                continue
            if len(rec) and (not seen or len(rec) != seen[-1]):
                seen.append(len(rec))
                assert (np.diff(rec.steps) > 0).all()
                check_probabilities(rec.record(-1))
        time.sleep(0.02)
    assert w.wait() == 0, w.stderr.read()[-2000:]
    final = len(ga.read_attention(h5))
    assert final == 120
    assert any(0 < n < final for n in seen), f"never saw a partial file while training: {seen}"


def test_viz(run):
    out = os.path.join(TMP, "figs")
    gen = os.path.join(TMP, "g.h5")
    tl.run_ok([tl.PYTHON, VIZ, run, "--out", out, "--gen", gen, "--gen-tokens", "1", "--dpi", "50"])
    files = sorted(os.listdir(out))
    for f in ("loss.png", "attn_grid_step00000060.png", "attn_step00000060_L1H0.png", "attn_L1H0_steps.png",
              "g_tok000_L1H0.png"):
        assert f in files, files
    for f in files:
        if f.endswith(".png"):
            assert mpimg.imread(os.path.join(out, f)).shape[0] > 50


if __name__ == "__main__":
    tl.require("gpt-train", "gpt-sample", fail=True)
    tl.require_module("torch", "python3-torch is not installed: the PyTorch twin is the reference")
    run = tl.timed(test_train_attention_mpi)
    for t, args in ((test_resume, (run,)), (test_crash_after_last_checkpoint, (run,)),
                    (test_float16_and_default_probe, ()), (test_bad_probe, ()), (test_read_while_training, ()),
                    (test_viz, (run,))):
        tl.timed(t, *args)
    tl.rmtree(TMP)  # kept when a test fails, for a look
