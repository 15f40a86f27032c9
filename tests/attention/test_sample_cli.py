#!/usr/bin/python3
"""gpt-sample end to end on a checkpoint made by gpt-train: greedy text equals greedy
decoding with the PyTorch twin (io/python/nanogpt_model.py) from the same checkpoint,
including after the context window slides; the attention rows of --attn-out equal the
twin's; seeds; top-k 1 = greedy; streamed stdout; the generation file's layout; prompts
longer than the block size; every bad input is one message and exit 1."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402
import gpt_checkpoint as gc  # noqa: E402

SAMPLE = os.path.join(tl.BUILD, "gpt-sample")
TRAIN = os.path.join(tl.BUILD, "gpt-train")
TMP = tl.tmpdir("sample_cli_")


def make_run():
    run = os.path.join(TMP, "run")
    # taylorswift.txt when present, else this repository's README (always there)
    data = tl.shared_data("taylorswift.txt", fallback=os.path.join(tl.SRC, "README.md"))
    tl.run_ok([TRAIN, "--data", data, "--out", run, "--vocab-size", "300", "--n-layer", "2", "--n-head", "2",
               "--n-embd", "32", "--block-size", "24", "--steps", "80", "--batch-size", "8", "--dropout", "0",
               "--eval-every", "0", "--log-every", "40", "--lr", "3e-3", "--warmup", "10"])
    return run


def sample(*args, expect=0):
    p = tl.run_ok([SAMPLE, *args], expect=expect)
    return p.stdout, p.err


def tokenizer_bytes(ckpt):
    with h5py.File(ckpt, "r") as f:
        tb, off = f["tokenizer/token_bytes"][()], f["tokenizer/token_offsets"][()]
    return [bytes(tb[off[i]: off[i + 1]]) for i in range(len(off) - 1)]


def tb_text(ckpt, i):
    return tokenizer_bytes(ckpt)[i].decode("utf-8", "replace")


def twin_greedy(ckpt, prompt_ids, n, keep_rows=False):
    """nanoGPT-style greedy decoding with full recompute of the last block_size tokens."""
    import torch
    from nanogpt_model import GPT
    model = GPT.from_checkpoint(ckpt)
    model.eval()
    T = model.config.block_size
    attn = [b.attn for b in model.transformer.h]
    for a in attn:
        a.keep_att = keep_rows
    idx = list(prompt_ids)
    rows, logits_all = [], []
    with torch.no_grad():
        for _ in range(n):
            cond = torch.tensor([idx[-T:]], dtype=torch.long)
            logits, _ = model(cond)
            last = logits[0, -1].double().numpy()
            logits_all.append(last)
            if keep_rows:  # (L, H, W) row of the last query
                rows.append(np.stack([a.last_att[0, :, -1, :].numpy() for a in attn]))
            idx.append(int(np.argmax(last)))
    return idx[len(prompt_ids):], logits_all, rows


def run_copy(run, name):
    """A new run directory TMP/name holding a copy of run's latest checkpoint as its latest;
    returns (directory, checkpoint path)."""
    out = os.path.join(TMP, name)
    os.makedirs(out, exist_ok=True)
    dst = os.path.join(out, "ckpt-00000080.h5")
    shutil.copy(tl.latest(run), dst)
    with open(os.path.join(out, "latest"), "w") as f:
        f.write("ckpt-00000080.h5\n")
    return out, dst


def randomized(run):
    """A copy of the checkpoint with large random weights: a short training run's greedy
    text is mostly one repeated token, random weights give varied tokens to compare."""
    out, dst = run_copy(run, "random_run")
    rng = np.random.default_rng(5)
    with h5py.File(dst, "r+") as f:
        for name, d in f["model"].items():
            if name != "lm_head.weight":  # a hard link to wte
                d[...] = d[()] + rng.normal(0, 0.5, d.shape).astype(np.float32)
    gc.update_checksums(dst)  # an edit on purpose: without this gpt-sample calls the file damaged
    return out


def test_greedy_matches_twin(run):
    check_greedy(run, min_distinct=1)
    check_greedy(randomized(run), min_distinct=5)


def check_greedy(run, min_distinct):
    ckpt = tl.latest(run)
    gen = os.path.join(run, "greedy.h5")
    out, err = sample("--checkpoint", run, "--prompt", " Hello, this is", "--temperature", "0",
                      "--max-new-tokens", "60", "--attn-out", gen)
    assert "window slid" in err
    g = ga.read_generation(gen)
    P = g.n_prompt
    ids_c = g.token_ids[P:].tolist()
    ids_t, logits_t, rows_t = twin_greedy(ckpt, g.token_ids[:P].tolist(), 60, keep_rows=True)
    for i, (a, b) in enumerate(zip(ids_c, ids_t)):
        if a != b:  # only a genuine near-tie may differ (float32 sums in another order)
            gap = abs(logits_t[i][a] - logits_t[i][b])
            assert gap < 1e-4, f"token {i}: C chose {a}, PyTorch {b}, logit gap {gap}"
            break
    else:
        assert ids_c == ids_t
    assert len(set(ids_c)) >= min_distinct, f"degenerate generation {ids_c}"
    assert P + 60 > 24, "the test must slide the window"
    # stored attention rows equal the twin's (each over its window)
    for i in range(len(ids_c)):
        W = rows_t[i].shape[-1]
        np.testing.assert_allclose(g.attention[i, :, :, :W], rows_t[i], atol=2e-5)
        assert (g.attention[i, :, :, W:] == 0).all()
        assert g.context_start[i] == max(0, P + i - 24)
    # stdout is the prompt then the tokens' bytes, whole UTF-8 characters (U+FFFD for bytes
    # that never form one), exactly as Python decodes the concatenation
    tb = tokenizer_bytes(ckpt)
    want = (" Hello, this is".encode() + b"".join(tb[i] for i in ids_c)).decode("utf-8", "replace")
    assert out.decode("utf-8") == want, (out, want)
    # the generation file's layout (docs/formats.md, generation file)
    with h5py.File(gen, "r") as f:
        assert f.attrs["format"] == "gpt-train/generation" and f.attrs["format_version"] == 1
        for k in ("n_prompt", "prompt", "temperature", "top_k", "top_p", "seed", "checkpoint", "step"):
            assert k in f.attrs, k
        assert f.attrs["prompt"] == " Hello, this is" and f.attrs["step"] == 80
        assert f.attrs["checkpoint"] == ckpt
        assert f["token_ids"].dtype == np.int32 and f["token_ids"].shape == (P + 60,)
        assert f["prompt_attention"].shape == (2, 2, P, P)
        assert f["attention"].shape == (60, 2, 2, 24) and f["context_start"].dtype == np.int64
        assert f["top_ids"].dtype == np.int32 and f["top_probs"].dtype == np.float32
        assert f["top_ids"].shape == f["top_probs"].shape == f["top_tokens"].shape == (60, 10)  # --record-top 10
    # the candidates: the twin's 10 likeliest tokens and softmax probabilities at each step,
    # before the greedy choice (which is the first of them)
    V = len(tokenizer_bytes(ckpt))
    for i in range(len(ids_c)):
        if ids_c[:i] != ids_t[:i]:
            break  # after a near-tie the contexts differ
        lt = logits_t[i][:V]
        p = np.exp(lt - lt.max())
        p /= p.sum()
        want = np.lexsort((np.arange(V), -lt))[:10]
        got = g.top_ids[i]
        np.testing.assert_allclose(g.top_probs[i], p[got], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.sort(p[got])[::-1], p[want], rtol=1e-4, atol=1e-6)
        assert got[0] == ids_c[i], (i, got, ids_c[i])
        assert (np.diff(g.top_probs[i]) <= 0).all()
        assert g.top_tokens[i] == [tb_text(ckpt, t) for t in got]
    pa = g.prompt_attention
    assert np.allclose(pa.sum(-1), 1, atol=1e-5) and (pa[..., np.triu_indices(P, 1)[0], np.triu_indices(P, 1)[1]] == 0).all()
    assert g.tokens == [tb[i].decode("utf-8", "replace") for i in g.token_ids]
    # the checkpoint as a state_dict, numpy or torch, loads into the twin with strict=True
    import torch
    from nanogpt_model import GPT, GPTConfig
    from gpt_checkpoint import load_config
    sd_np = ga.load_state_dict(ckpt, as_torch=False)
    assert isinstance(sd_np["lm_head.weight"], np.ndarray)
    np.testing.assert_array_equal(sd_np["lm_head.weight"], sd_np["transformer.wte.weight"])
    sd = ga.load_state_dict(ckpt)
    assert isinstance(sd["transformer.h.0.attn.c_attn.weight"], torch.Tensor)
    GPT(GPTConfig(**load_config(ckpt))).load_state_dict(sd, strict=True)
    # top-k 1 at any temperature is greedy
    out_k1, _ = sample("--checkpoint", ckpt, "--prompt", " Hello, this is", "--top-k", "1", "--temperature", "1.5",
                       "--max-new-tokens", "60")
    assert out_k1 == out


def test_precision(run):
    """--precision bf16: greedy text follows fp32's greedy text up to the first near-tie
    (the fp32 twin's logits of the two choices within 4 u of the largest logit, u = 2^-8),
    the attention rows are probabilities; a CPU without bf16 instructions is exit 1."""
    ckpt = os.path.join(run, open(os.path.join(run, "latest")).read().strip())
    p = subprocess.run([SAMPLE, "--checkpoint", run, "--prompt", "Hi", "--max-new-tokens", "2", "--precision", "bf16"],
                       capture_output=True, env=dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE"))
    err = p.stderr.decode()
    assert p.returncode == 1 and "AVX512-BF16" in err and err.count("error") == 1, (p.returncode, err)
    probe = subprocess.run([SAMPLE, "--checkpoint", run, "--prompt", "Hi", "--max-new-tokens", "1", "--precision", "bf16"],
                           capture_output=True)
    if probe.returncode == 1 and b"AVX512-BF16" in probe.stderr:
        print("note: this CPU can do no bf16; the bf16 sampling checks are skipped")
        return
    run = randomized(run)  # diverse text, so greedy decoding has choices to agree on
    ckpt = os.path.join(run, open(os.path.join(run, "latest")).read().strip())
    gen = os.path.join(run, "greedy-bf16.h5")
    sample("--checkpoint", run, "--prompt", " Hello, this is", "--temperature", "0", "--max-new-tokens", "40",
           "--attn-out", gen, "--precision", "bf16")
    g = ga.read_generation(gen)
    P = g.n_prompt
    ids_b = g.token_ids[P:].tolist()
    ids_t, logits_t, _ = twin_greedy(ckpt, g.token_ids[:P].tolist(), 40)
    for i, (a, b) in enumerate(zip(ids_b, ids_t)):
        if a != b:
            gap = abs(logits_t[i][a] - logits_t[i][b])
            assert gap < 4 / 256 * np.abs(logits_t[i]).max(), f"token {i}: bf16 chose {a}, fp32 {b}, logit gap {gap}"
            break
    assert np.allclose(g.attention.sum(-1), 1, atol=1e-5) and len(set(ids_b)) > 1


def test_seeds(run):
    a, _ = sample("--checkpoint", run, "--prompt", "She is one of the most", "--max-new-tokens", "50", "--seed", "7")
    b, _ = sample("--checkpoint", run, "--prompt", "She is one of the most", "--max-new-tokens", "50", "--seed", "7",
                  "--threads", "2")
    c, _ = sample("--checkpoint", run, "--prompt", "She is one of the most", "--max-new-tokens", "50", "--seed", "8")
    assert a == b, "same seed, different text"
    assert a != c, "different seeds gave the same 50 tokens"
    a.decode("utf-8")  # strict: whole characters only
    d, _ = sample("--checkpoint", run, "--prompt", "New", "--max-new-tokens", "30", "--top-p", "0.9", "--top-k", "20")
    assert d.startswith(b"New")
    e, _ = sample("--checkpoint", run, "--prompt", "Are you", "--max-new-tokens", "0")
    assert e == b"Are you"


def test_long_prompt(run):
    ckpt = tl.latest(run)
    prompt = "Are you ready for it? " * 8
    gen = os.path.join(TMP, "long.h5")
    out, err = sample("--checkpoint", run, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12",
                      "--attn-out", gen)
    assert "longer than the block size 24" in err, err
    assert out.decode().startswith(prompt)
    g = ga.read_generation(gen)
    assert g.n_prompt == 24 and g.attrs["prompt_dropped_tokens"] > 0 and g.attrs["prompt"] == prompt
    ids_t, logits_t, _ = twin_greedy(ckpt, g.token_ids[:24].tolist(), 12)  # the twin crops the same way
    assert g.token_ids[24:].tolist() == ids_t
    assert g.context_start.tolist() == list(range(0, 12))


def test_empty_prompt(run):
    out, err = sample("--checkpoint", run, "--prompt", "", "--max-new-tokens", "5", "--temperature", "0")
    assert "newline token" in err, err
    assert out.startswith(b"\n")


def test_bad_input(run):
    ckpt = tl.latest(run)
    empty_run = os.path.join(TMP, "empty_run")
    os.makedirs(empty_run, exist_ok=True)
    exists = os.path.join(TMP, "exists.h5")
    open(exists, "w").close()
    cases = [
        (["--checkpoint", os.path.join(TMP, "nope.h5"), "--prompt", "x"], "nope.h5"),
        (["--checkpoint", empty_run, "--prompt", "x"], "latest"),
        (["--checkpoint", os.path.join(run, "tokens.h5"), "--prompt", "x"], "format"),
        (["--checkpoint", os.path.join(run, "metrics.csv"), "--prompt", "x"], "metrics.csv"),
        (["--checkpoint", ckpt], "--prompt"),
        (["--prompt", "x"], "--checkpoint"),
        (["--checkpoint", ckpt, "--prompt", "x", "--top-p", "0"], "--top-p"),
        (["--checkpoint", ckpt, "--prompt", "x", "--top-p", "1.5"], "--top-p"),
        (["--checkpoint", ckpt, "--prompt", "x", "--temperature", "-1"], "--temperature"),
        (["--checkpoint", ckpt, "--prompt", "x", "--top-k", "-2"], "--top-k"),
        (["--checkpoint", ckpt, "--prompt", "x", "--max-new-tokens", "ten"], "--max-new-tokens"),
        (["--checkpoint", ckpt, "--prompt", "x", "--seed", "-1"], "--seed"),
        (["--checkpoint", ckpt, "--prompt", "x", "--threads", "0"], "--threads"),
        (["--checkpoint", ckpt, "--prompt", "x", "--record-top", "-1"], "--record-top"),
        (["--checkpoint", ckpt, "--prompt", "x", "--frobnicate"], "--frobnicate"),
        (["--checkpoint", ckpt, "--prompt", "x", "--attn-out", exists], "exists"),
        (["--checkpoint", ckpt, "--prompt", "x", "--attn-out", os.path.join(TMP, "no", "dir.h5")], "--attn-out"),
        (["--checkpoint", ckpt, "--prompt", b"caf\xe9".decode("latin-1")], "UTF-8"),
    ]
    for args, needle in cases:
        if args[-1] == "café":  # a prompt of invalid UTF-8 bytes (Latin-1 é)
            args = [a.encode("utf-8") for a in args[:-1]] + [b"caf\xe9"]
        r = tl.run([SAMPLE, *args])
        why = tl.refusal(r, needle, prog="gpt-sample")
        assert not why, (args, why)
        assert r.stdout == b"", (args, r.stdout)
    assert not os.path.exists(os.path.join(TMP, "no"))
    # a truncated checkpoint: one message, exit 1
    cut = os.path.join(TMP, "cut.h5")
    with open(ckpt, "rb") as f, open(cut, "wb") as g:
        g.write(f.read()[: os.path.getsize(ckpt) // 3])
    out, err = sample("--checkpoint", cut, "--prompt", "x", expect=1)
    assert err.count("\n") == 1 and "cut.h5" in err, err
    # a checkpoint whose vocabulary does not map a byte to itself: rejected when loading
    bad = os.path.join(TMP, "badvocab.h5")
    shutil.copy(ckpt, bad)
    with h5py.File(bad, "r+") as f:
        off = f["tokenizer/token_offsets"][()]
        f["tokenizer/token_bytes"][off[ord("z")]] = ord("y")
    out, err = sample("--checkpoint", bad, "--prompt", "a z", expect=1)
    assert err.count("\n") == 1 and "badvocab.h5" in err and out == b"", err
    out, err = sample("--help")
    assert b"--attn-out" in out and b"--top-p" in out and b"--record-top" in out
    # --record-top: K candidates, none with 0, at most the vocabulary
    gen = os.path.join(TMP, "top.h5")
    for k, want in (("3", 3), ("0", None), ("100000", len(tokenizer_bytes(ckpt)))):
        sample("--checkpoint", ckpt, "--prompt", "x", "--max-new-tokens", "4", "--record-top", k, "--attn-out", gen,
               "--force")
        g = ga.read_generation(gen)
        if want is None:
            assert g.top_ids is None and g.top_probs is None and g.top_tokens is None
        else:
            assert g.top_ids.shape == (4, want) and len(g.top_tokens[0]) == want
            assert abs(g.top_probs.sum(1) - 1).max() < 1e-3 if want > 100 else (g.top_probs.sum(1) <= 1 + 1e-5).all()


def byte_model(run):
    """A copy of the checkpoint whose next-token distribution is, whatever the context,
    uniform over three tokens: the bytes 0xC3 and 0xA9 ("é" is C3 A9) and "a". ln_f's weight
    is 0 and its bias a unit vector, so the last hidden state is constant and the logits are
    one column of the (tied) wte, which is set here."""
    out, dst = run_copy(run, "byte_run")
    with h5py.File(dst, "r+") as f:
        m = f["model"]
        m["transformer.ln_f.weight"][...] = 0
        bias = np.zeros(m["transformer.ln_f.bias"].shape, np.float32)
        bias[0] = 1
        m["transformer.ln_f.bias"][...] = bias
        wte = m["transformer.wte.weight"][()]
        wte[:, 0] = -20
        wte[[0xC3, 0xA9, ord("a")], 0] = 5
        m["transformer.wte.weight"][...] = wte
    gc.update_checksums(dst)
    return out


def test_utf8_stream(run):
    """Characters cut between tokens come out whole, bytes that never form one as U+FFFD,
    exactly as Python decodes the concatenated bytes."""
    brun = byte_model(run)
    tb = tokenizer_bytes(tl.latest(brun))
    gen = os.path.join(brun, "u.h5")
    out, _ = sample("--checkpoint", brun, "--prompt", "é", "--max-new-tokens", "300", "--attn-out", gen, "--force")
    g = ga.read_generation(gen)
    ids = g.token_ids[g.n_prompt:].tolist()
    assert set(ids) == {0xC3, 0xA9, ord("a")}, set(ids)
    raw = "é".encode() + b"".join(tb[i] for i in ids)
    text = out.decode("utf-8")  # strict: only whole characters were printed
    assert text == raw.decode("utf-8", "replace")
    assert text.count("é") > 20 and text.count("\ufffd") > 20, text[:80]


def test_streaming(run):
    """stdout is flushed per token: a reader gets many small pieces while gpt-sample runs,
    not 4 KiB blocks of a buffered stream"""
    p = subprocess.Popen([SAMPLE, "--checkpoint", run, "--prompt", "New", "--max-new-tokens", "4000"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reads, total, first = 0, 0, None
    while True:
        b = os.read(p.stdout.fileno(), 1 << 16)
        if not b:
            break
        if first is None:
            first = (len(b), p.poll() is None)
        reads += 1
        total += len(b)
    assert p.wait() == 0
    assert first[0] < 4096 and first[1], f"first read {first}: not streamed"
    assert reads > 2 * (total // 4096 + 1), f"{reads} reads for {total} bytes: not flushed per token"


def test_attn_out_temp_removed(run):
    # the generation file appears only complete: no temp files left after a run
    gen = os.path.join(TMP, "g2.h5")
    sample("--checkpoint", run, "--prompt", "New", "--max-new-tokens", "3", "--attn-out", gen)
    sample("--checkpoint", run, "--prompt", "New", "--max-new-tokens", "4", "--attn-out", gen, "--force")
    assert ga.read_generation(gen).n_generated == 4
    assert not [f for f in os.listdir(TMP) if ".tmp-" in f]


if __name__ == "__main__":
    tl.require("gpt-sample", "gpt-train", fail=True)
    tl.require_module("torch", "python3-torch is not installed: the PyTorch twin is the reference")
    run = tl.timed(make_run)
    for t in (test_greedy_matches_twin, test_seeds, test_long_prompt, test_empty_prompt, test_bad_input,
              test_utf8_stream, test_streaming, test_attn_out_temp_removed, test_precision):
        tl.timed(t, run)
    tl.rmtree(TMP)
