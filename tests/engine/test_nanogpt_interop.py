#!/usr/bin/python3
"""nanoGPT interop, both directions (io/python/gpt_checkpoint.py), against models built as
upstream nanoGPT's model.py builds them (nanogpt_model.GPT.like_upstream): on torch < 2.0 its
causal masks transformer.h.<i>.attn.bias are persistent buffers in the state_dict, on torch
>= 2.0 there are none; exact erf GELU; bias=False too.

load_into     a gpt-train checkpoint into each kind: every weight equals the file, the masks
              stay the model's, the logits equal a plain strict load's; plain strict loading
              fails on the torch < 2.0 kind (why load_into exists); a bias=False model takes
              zero biases only; anything missing, unexpected or of the wrong shape raises,
              naming the tensor, and leaves the model as it was.
from-nanogpt  a torch.save checkpoint in train.py's layout (model under torch.compile's
              `_orig_mod.` keys, optimizer, model_args, iter_num, best_val_loss, config) after
              nanoGPT-style AdamW training on the tokens of a gpt-bpe vocabulary: the weights,
              moments, step and settings arrive; the converted model's logits equal the nanoGPT
              model's; the C engine's logits on it equal the twin's; gpt-train --resume under
              mpirun continues at nanoGPT's loss; gpt-sample's greedy text is the twin's. Once
              with bias, exact vocab and masks in the state_dict; once with bias=False, vocab
              padded to a multiple of 64 and no masks, into a RUN directory. Bad input: exit 1
              and one line naming the problem, no file written.
"""
import math
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

torch = tl.require_module("torch", "python3-torch: the models are PyTorch")
import h5py  # noqa: E402
import gpt_checkpoint as gc  # noqa: E402
from nanogpt_model import GPT, GPTConfig  # noqa: E402

BPE, TRAIN, SAMPLE, CHECK = tl.require("gpt-bpe", "gpt-train", "gpt-sample", "engine_check")
CONVERT = os.path.join(tl.PYDIR, "gpt_checkpoint.py")
TMP = tl.tmpdir("nanogpt_interop_")
ck = tl.Checks("test_nanogpt_interop", verbose=True)
V, L, H, C, T, B = 300, 2, 2, 32, 16, 8
ITERS = 150


def path(name):
    return os.path.join(TMP, name)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def logits_of(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)[0]


def windows(data, n, rng):
    ix = rng.integers(0, len(data) - T - 1, n)
    x = np.stack([data[i:i + T] for i in ix]).astype(np.int64)
    y = np.stack([data[i + 1:i + T + 1] for i in ix]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


def raises(fn, *needles):
    """(ok, what fn raised): a MismatchError whose message holds every needle."""
    try:
        fn()
    except gc.MismatchError as e:
        return all(n in str(e) for n in needles), str(e)
    return False, "nothing raised"


# ---------------------------------------------------------------- fixtures
def fixtures():
    text = tl.shared_data("taylorswift.txt", fallback=os.path.join(tl.SRC, "README.md"))
    vocab, tokens = path("vocab.h5"), path("tokens.h5")
    tl.run_ok([BPE, "train", "--input", text, "--out", vocab, "--vocab-size", V])
    tl.run_ok([BPE, "encode", "--vocab", vocab, "--input", text, "--out", tokens])
    with h5py.File(tokens, "r") as f:
        train, val = f["train"][()].astype(np.int64), f["val"][()].astype(np.int64)
    return vocab, tokens, train, val


def nanogpt_checkpoint(name, train, val, vocab_size, bias, flash, seed):
    """What nanoGPT's train.py saves after ITERS steps (AdamW from configure_optimizers, grad
    clip 1, constant lr), its model built as upstream builds it on torch < 2.0 (flash=False)
    or >= 2.0, its keys prefixed as torch.compile's wrapper prefixes them."""
    torch.manual_seed(seed)
    args = dict(n_layer=L, n_head=H, n_embd=C, block_size=T, bias=bias, vocab_size=vocab_size, dropout=0.0)
    model = GPT.like_upstream(GPTConfig(**args), flash=flash)
    opt = model.configure_optimizers(0.1, 3e-3, (0.9, 0.95))
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(ITERS):
        x, y = windows(train, B, rng)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        val_loss = torch.stack([model(*windows(val, B, rng))[1] for _ in range(10)]).mean()
        train_loss = float(torch.stack([model(*windows(train, B, rng))[1] for _ in range(10)]).mean())
    config = dict(out_dir="out-" + name, eval_interval=1000, log_interval=1, eval_iters=20, eval_only=False,
                  always_save_checkpoint=True, init_from="scratch", dataset="taylorswift",
                  gradient_accumulation_steps=1, batch_size=B, block_size=T, n_layer=L, n_head=H, n_embd=C,
                  dropout=0.0, bias=bias, learning_rate=3e-3, max_iters=ITERS + 50, weight_decay=0.1, beta1=0.9,
                  beta2=0.95, grad_clip=1.0, decay_lr=False, warmup_iters=0, lr_decay_iters=ITERS + 50,
                  min_lr=3e-4, backend="nccl", device="cpu", dtype="float32", compile=True)
    saved = {"model": {gc.COMPILE_PREFIX + k: t for k, t in model.state_dict().items()},
             "optimizer": opt.state_dict(), "model_args": args, "iter_num": ITERS, "best_val_loss": val_loss,
             "config": config}
    pt = path(name + ".pt")
    torch.save(saved, pt)
    return pt, model, opt, train_loss, float(val_loss)


# ---------------------------------------------------------------- load_into
def test_load_into(tokens, vocab):
    run = path("gt-run")
    tl.run_ok([TRAIN, "--data", tokens, "--out", run, "--steps", 5, "--n-layer", L, "--n-head", H, "--n-embd", C,
               "--block-size", T, "--batch-size", 4, "--dropout", 0, "--log-every", 5])
    ckpt = tl.latest(run)
    sd = gc.load_state_dict(ckpt)
    cfg = GPTConfig(**gc.load_config(ckpt))
    x = torch.from_numpy(np.random.default_rng(1).integers(0, V, (3, T)))
    plain = GPT(cfg, gelu="none")  # upstream's math, the twin's mask: loads strict
    plain.load_state_dict(sd, strict=True)
    for flash in (False, True):
        kind = "torch >= 2.0 (flash, no mask buffer)" if flash else "torch < 2.0 (attn.bias masks persistent)"
        m = GPT.like_upstream(cfg, flash=flash)
        masks = [k for k in m.state_dict() if k.endswith(".attn.bias")]
        ck.ok(len(masks) == (0 if flash else L), f"upstream on {kind}: {len(masks)} mask buffers in the state_dict")
        if not flash:
            try:
                m.load_state_dict(sd, strict=True)
                ck.ok(False, "plain load_state_dict(strict=True) fails on upstream's torch < 2.0 model")
            except RuntimeError as e:
                ck.ok("attn.bias" in str(e), "plain load_state_dict(strict=True) fails on upstream's torch < 2.0 "
                      "model, naming the masks", str(e)[:300])
            m = GPT.like_upstream(cfg, flash=flash)
        gc.load_into(m, ckpt)
        own = m.state_dict()
        ck.ok(all(torch.equal(own[k], sd[k]) for k in sd) and set(own) == set(sd) | set(masks),
              f"load_into, upstream on {kind}: every tensor equals the checkpoint's, nothing else but the masks")
        ck.ok(all(torch.equal(own[k], torch.tril(torch.ones(T, T)).view(1, 1, T, T)) for k in masks),
              f"load_into, upstream on {kind}: the causal masks are the model's own, unchanged")
        ck.ok(torch.equal(logits_of(m, x), logits_of(plain, x)),
              f"load_into, upstream on {kind}: logits equal those of a strict load")
    twin = gc.load_into(GPT(cfg), ckpt)
    ck.ok(torch.equal(logits_of(twin, x), logits_of(GPT.from_checkpoint(ckpt), x)),
          "load_into the twin: logits equal GPT.from_checkpoint's")

    class Compiled(torch.nn.Module):  # what torch.compile returns: the model under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner
    inner = GPT.like_upstream(cfg, flash=False)
    gc.load_into(Compiled(inner), ckpt)
    ck.ok(torch.equal(inner.transformer.wpe.weight, sd["transformer.wpe.weight"]),
          "load_into a torch.compile-style wrapper fills the module under _orig_mod")

    # mismatches: named, and the model left as it was
    m = GPT.like_upstream(GPTConfig(**{**gc.load_config(ckpt), "block_size": 2 * T}), flash=False)
    before = m.transformer.wte.weight.detach().clone()
    ok, msg = raises(lambda: gc.load_into(m, ckpt), "transformer.wpe.weight", f"({T}, {C})", f"({2 * T}, {C})")
    ck.ok(ok, "load_into: a tensor of another shape raises, naming it and both shapes", msg)
    ck.ok(torch.equal(m.transformer.wte.weight, before), "load_into: the model is untouched after a mismatch")
    one_layer = GPT.like_upstream(GPTConfig(**{**gc.load_config(ckpt), "n_layer": 1}))
    ok, msg = raises(lambda: gc.load_into(one_layer, ckpt), "tensors the model lacks", "transformer.h.1.")
    ck.ok(ok, "load_into: tensors the model lacks (a 1-layer model) raise, naming them", msg)
    cut = path("cut.h5")
    shutil.copy(ckpt, cut)
    with h5py.File(cut, "r+") as f:
        del f["model/transformer.h.1.mlp.c_fc.bias"]
    ok, msg = raises(lambda: gc.load_into(GPT.like_upstream(cfg), cut), "the checkpoint lacks",
                     "transformer.h.1.mlp.c_fc.bias")
    ck.ok(ok, "load_into: a tensor the checkpoint lacks raises, naming it", msg)
    nobias = GPT.like_upstream(GPTConfig(**{**gc.load_config(ckpt), "bias": False}), flash=True)
    ok, msg = raises(lambda: gc.load_into(nobias, ckpt), ".bias", "bias=False")
    ck.ok(ok, "load_into: a bias=False model refuses trained (non-zero) biases, naming them", msg)


# ---------------------------------------------------------------- from-nanogpt
def convert(*args):
    return tl.run([tl.PYTHON, CONVERT, "from-nanogpt", *args])


def test_convert(tag, pt, model, opt, val_loss, vocab, out=None, run=None, tokens=None, train=None):
    flash = not any(k.endswith(".attn.bias") for k in model.state_dict())
    bias = model.config.bias
    r = convert(pt, *([out] if out else ["--run", run]), "--vocab", vocab, *(["--data", tokens] if tokens else []))
    if not ck.ok(r.rc == 0, f"{tag}: from-nanogpt converts", r.describe()):
        return None
    if run:
        out = tl.latest(run)
        ck.ok(os.path.basename(out) == f"ckpt-{ITERS:08d}.h5" and f"--out {run} --resume" in r.out,
              f"{tag}: --run writes RUN/ckpt-<iter_num>.h5 and RUN/latest, and says how to resume", r.out)
    if model.config.vocab_size != V:
        ck.ok("padded" in r.err, f"{tag}: the padded vocabulary is noted", r.err)
    ck.ok(gc.verify_checksums(out) == [], f"{tag}: every tensor's checksum is right")
    with h5py.File(out, "r") as f, h5py.File(vocab, "r") as v:
        a, s, c = dict(f.attrs), dict(f["state"].attrs), dict(f["config"].attrs)
        ck.ok(a["format"] == "gpt-train/checkpoint" and a["step"] == ITERS and a["world_size"] == 1
              and s["adam_t"] == ITERS and s["best_val_loss"] == val_loss,
              f"{tag}: root attrs and /state (step = adam_t = iter_num, best_val_loss, one rank)", f"{a} {s}")
        windows = (len(train) - 1) // T if tokens else 1
        ck.ok((s["data_epoch"], s["data_pos"], s["data_windows"]) == (0, 0, windows),
              f"{tag}: the data cursor at the start of epoch 0 of {windows} windows"
              + (" (--data's /train)" if tokens else ""), str(s))
        ck.ok(c["lr"] == 3e-3 and c["steps"] == ITERS + 50 and c["batch_size"] == B and c["beta2"] == 0.95
              and c["weight_decay"] == 0.1 and c["lr_schedule"] == "constant" and c["eval_every"] == 1000,
              f"{tag}: train.py's settings in /config", str(c))
        ck.ok(np.array_equal(f["tokenizer/merges"][()], v["tokenizer/merges"][()]),
              f"{tag}: /tokenizer is the vocabulary's")
        ck.ok(f["model/lm_head.weight"].id == f["model/transformer.wte.weight"].id, f"{tag}: lm_head.weight is a link")
    ck.ok(gc.load_config(out) == dict(n_layer=L, n_head=H, n_embd=C, block_size=T, vocab_size=V, dropout=0.0),
          f"{tag}: model config", str(gc.load_config(out)))
    # weights and AdamW moments under the right names (the optimizer state is by position)
    sd = gc.load_state_dict(out)
    mom_m, mom_v = gc.load_optimizer(out)
    worst_w = worst_m = 0.0
    for name, p in model.named_parameters():
        st = opt.state[p]
        crop = (lambda t: t[:V]) if name == "transformer.wte.weight" else (lambda t: t)  # a padded vocabulary
        worst_w = max(worst_w, float((sd[name] - crop(p.detach())).abs().max()))
        worst_m = max(worst_m, float(np.abs(mom_m[name] - crop(st["exp_avg"]).numpy()).max()),
                      float(np.abs(mom_v[name] - crop(st["exp_avg_sq"]).numpy()).max()))
    ck.ok(worst_w == 0 and worst_m == 0, f"{tag}: weights and AdamW moments equal nanoGPT's, name by name",
          f"worst {worst_w} {worst_m}")
    if not bias:
        ck.ok(all(not sd[k].any() and not mom_m[k].any() for k in sd if k.endswith(".bias")),
              f"{tag}: bias=False: biases and their moments are 0")
    # the converted model: logits equal nanoGPT's (as upstream builds it, through load_into)
    x = torch.from_numpy(np.random.default_rng(2).integers(0, V, (4, T)))
    back = gc.load_into(GPT.like_upstream(GPTConfig(**{**gc.load_config(out), "bias": bias}), flash=flash), out)
    nano = logits_of(model, x)[..., :V]
    conv = logits_of(back, x)
    same = torch.equal(conv, nano) if model.config.vocab_size == V else rel_err(conv, nano) < 1e-6
    ck.ok(same, f"{tag}: logits of the converted model (load_into) equal the nanoGPT model's",
          f"rel {rel_err(conv, nano):.1e}")
    # the C engine on the converted checkpoint: the twin's logits (tanh GELU), near nanoGPT's (erf)
    tok = path(tag + "-x.h5")
    with h5py.File(tok, "w") as f:
        f.attrs["format"] = "gpt-train/engine-tokens"
        f.attrs["format_version"] = 1
        f["inputs"] = x.numpy().astype(np.int32)
        f["targets"] = x.numpy().astype(np.int32)
    fb = path(tag + "-fb.h5")
    tl.run_ok([CHECK, "fwdbwd", "--ckpt", out, "--tokens", tok, "--out", fb, "--threads", 1])
    with h5py.File(fb, "r") as f:
        c_logits = f["logits"][()]
    twin = logits_of(GPT.from_checkpoint(out), x)
    e_twin, e_nano = rel_err(c_logits, twin), rel_err(c_logits, conv)
    ck.ok(e_twin < 1e-5, f"{tag}: the C engine's logits equal the twin's (rel {e_twin:.1e})")
    ck.ok(e_nano < 1e-3, f"{tag}: ... and nanoGPT's within the GELU difference (tanh vs erf: rel {e_nano:.1e})")
    return out


def test_sample(tag, ckpt, run_or_ckpt):
    gen = path(tag + "-gen.h5")
    r = tl.run([SAMPLE, "--checkpoint", run_or_ckpt, "--prompt", " Hello", "--temperature", "0",
                "--max-new-tokens", "20", "--attn-out", gen])
    if not ck.ok(r.rc == 0, f"{tag}: gpt-sample loads the converted checkpoint", r.describe()):
        return
    with h5py.File(gen, "r") as f:
        ids, P = f["token_ids"][()].tolist(), int(f.attrs["n_prompt"])
    model = GPT.from_checkpoint(ckpt)
    model.eval()
    idx, gap, why = ids[:P], 0.0, ""
    with torch.no_grad():
        for i in range(20):
            logits = model(torch.tensor([idx[-T:]]))[0][0, -1].double()
            want, got = int(torch.argmax(logits)), ids[P + i]
            if want != got:  # only a genuine near-tie may differ (float32 sums in another order)
                gap = float(abs(logits[want] - logits[got]))
                why = f"token {i}: C {got}, twin {want}, logit gap {gap:.1e}"
                break
            idx.append(want)
    ck.ok(gap < 1e-4, f"{tag}: gpt-sample's greedy tokens are the twin's", why)


def test_resume(run, tokens, nano_loss):
    r = tl.run(tl.mpirun(2, TRAIN, "--data", tokens, "--out", run, "--resume", "--steps", ITERS + 4, "--log-every", 1),
               extra_env={"GT_PROGRESS": "0"})
    if not ck.ok(r.rc == 0 and "resuming from" in r.out, "gpt-train --resume (2 ranks) continues the nanoGPT run",
                 r.describe()):
        return
    import csv
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    steps = [int(x["step"]) for x in rows]
    first = float(rows[0]["train_loss"]) if rows else float("nan")
    last = os.path.join(run, f"ckpt-{ITERS + 4:08d}.h5")
    ck.ok(steps[:4] == list(range(ITERS + 1, ITERS + 5)) and os.path.exists(last),
          "--resume: steps iter_num+1 .. on, and a checkpoint at the end", str(steps))
    ck.ok("training windows" not in r.out, "--resume: the cursor's window count is --data's (no note)", r.out[-1500:])
    ck.ok(abs(first - nano_loss) < 0.35 and first < math.log(V) - 0.5,
          f"--resume: the first step's loss {first:.3f} is nanoGPT's ({nano_loss:.3f}), not a fresh model's "
          f"({math.log(V):.2f})")


def test_bad_input(pt, vocab, tokens, run):
    base = torch.load(pt)

    def saved(name, edit):
        d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
        edit(d)
        p = path(name)
        torch.save(d, p)
        return p

    def drop(key):
        return lambda d: d["model"].pop(gc.COMPILE_PREFIX + key)

    def reshape(d):
        d["model"][gc.COMPILE_PREFIX + "transformer.wpe.weight"] = torch.zeros(T // 2, C)

    def untie(d):
        d["model"][gc.COMPILE_PREFIX + "lm_head.weight"] = torch.zeros(V, C)

    def pad_odd(d):  # 384 is no multiple-of-64 padding of 300
        d["model_args"] = dict(d["model_args"], vocab_size=384)
        for k in ("transformer.wte.weight", "lm_head.weight"):
            d["model"][gc.COMPILE_PREFIX + k] = torch.zeros(384, C)

    class Code:  # a pickle that would run code when loaded (here: create a file)
        def __reduce__(self):
            return (open, (path("pwned"), "w"))

    small_vocab, small_tokens = path("vocab280.h5"), path("tokens280.h5")
    text = os.path.join(tl.SRC, "README.md")
    tl.run_ok([BPE, "train", "--input", text, "--out", small_vocab, "--vocab-size", 280])
    tl.run_ok([BPE, "encode", "--vocab", small_vocab, "--input", text, "--out", small_tokens])
    txt = path("notes.txt")
    with open(txt, "w") as f:
        f.write("not a checkpoint\n")
    exists = path("exists.h5")
    open(exists, "w").close()
    nothing = path("never.h5")
    cases = [
        ("missing file", [path("nope.pt"), nothing, "--vocab", vocab], ["nope.pt", "no such file"]),
        ("a text file", [txt, nothing, "--vocab", vocab], ["notes.txt", "not a torch.save checkpoint"]),
        ("no model_args", [saved("noargs.pt", lambda d: d.pop("model_args")), nothing, "--vocab", vocab],
         ["noargs.pt", "model_args"]),
        ("a pickle that runs code", [saved("code.pt", lambda d: d.update(x=Code())), nothing, "--vocab", vocab],
         ["code.pt", "not a torch.save checkpoint of tensors and plain data"]),
        ("a missing tensor", [saved("drop.pt", drop("transformer.h.1.mlp.c_fc.weight")), nothing, "--vocab", vocab],
         ["drop.pt", "transformer.h.1.mlp.c_fc.weight"]),
        ("a tensor of another shape", [saved("shape.pt", reshape), nothing, "--vocab", vocab],
         ["transformer.wpe.weight", f"({T // 2}, {C})", f"({T}, {C})"]),
        ("lm_head not tied", [saved("untied.pt", untie), nothing, "--vocab", vocab], ["lm_head.weight", "ties"]),
        ("vocabulary of another size", [pt, nothing, "--vocab", small_vocab], ["vocab280.h5", "280", "300"]),
        ("vocab_size no padding of the vocabulary's", [saved("pad.pt", pad_odd), nothing, "--vocab", vocab],
         ["384", "300", "padded"]),
        ("--vocab is tokens.h5", [pt, nothing, "--vocab", tokens], ["tokens.h5", "gpt-train/vocab"]),
        ("--data of another vocabulary", [pt, nothing, "--vocab", vocab, "--data", small_tokens],
         ["tokens280.h5", "another vocabulary", "vocab.h5"]),
        ("--data is vocab.h5", [pt, nothing, "--vocab", vocab, "--data", vocab], ["--data", "gpt-train/tokens"]),
        ("--vocab missing", [pt, nothing], ["--vocab"]),
        ("OUT exists", [pt, exists, "--vocab", vocab], ["exists.h5", "--force"]),
        ("neither OUT nor --run", [pt, "--vocab", vocab], ["OUT.h5", "--run"]),
        ("--run holds a run", [pt, "--run", run, "--vocab", vocab], [run, "already holds a run"]),
    ]
    for name, args, needles in cases:
        r = convert(*args)
        why = tl.refusal(r, *needles, prog="gpt_checkpoint.py")
        ck.ok(not why, f"from-nanogpt, {name}: exit 1, one line naming it", why)
        ck.ok(not os.path.exists(nothing) and not [n for n in os.listdir(TMP) if ".tmp-" in n],
              f"from-nanogpt, {name}: no file written")
    ck.ok(not os.path.exists(path("pwned")), "from-nanogpt: the code in a pickle did not run")
    r = convert(pt, exists, "--vocab", vocab, "--force")
    ck.ok(r.rc == 0 and gc.verify_checksums(exists) == [], "from-nanogpt --force replaces OUT", r.describe())
    # no optimizer state: AdamW starts afresh (zero moments, step count 0), and says so
    r = convert(saved("noopt.pt", lambda d: d.pop("optimizer")), path("noopt.h5"), "--vocab", vocab)
    if ck.ok(r.rc == 0 and "no AdamW state" in r.err, "from-nanogpt without optimizer state: converts, with a note",
             r.describe()):
        m, v = gc.load_optimizer(path("noopt.h5"))
        with h5py.File(path("noopt.h5"), "r") as f:
            t = int(f["state"].attrs["adam_t"])
        ck.ok(t == 0 and not any(a.any() for a in list(m.values()) + list(v.values())),
              "... its moments are 0 and adam_t 0", f"adam_t {t}")


if __name__ == "__main__":
    vocab, tokens, train, val = fixtures()
    tl.timed(test_load_into, tokens, vocab)
    # torch < 2.0 layout (masks in the state_dict), biases, the exact vocabulary: to a file
    pt_a, model_a, opt_a, _, val_a = nanogpt_checkpoint("a", train, val, V, bias=True, flash=False, seed=1)
    out_a = tl.timed(test_convert, "with biases, masks saved", pt_a, model_a, opt_a, val_a, vocab, path("a.h5"),
                     train=train)
    if out_a:
        test_sample("with biases, masks saved", out_a, out_a)
    # torch >= 2.0 layout, bias=False, vocab padded to 320: into a run directory, resumed
    pt_b, model_b, opt_b, loss_b, val_b = nanogpt_checkpoint("b", train, val, 320, bias=False, flash=True, seed=2)
    run_b = path("run-b")
    out_b = tl.timed(test_convert, "bias=False, padded vocab", pt_b, model_b, opt_b, val_b, vocab, None, run_b, tokens,
                     train)
    if out_b:
        tl.timed(test_resume, run_b, tokens, loss_b)
        test_sample("bias=False, padded vocab, resumed", tl.latest(run_b), run_b)
    tl.timed(test_bad_input, pt_a, vocab, tokens, run_b)
    if not ck.failed:
        tl.rmtree(TMP)  # kept when a check fails, for a look
    ck.finish()
