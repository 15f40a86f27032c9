"""Bad input to the engine: exit status 1 and one message that names the file or flag and
what is wrong (config checks, checkpoint shape/config/type mismatches, truncated or foreign
files, sequences longer than the block size, allocations beyond available memory)."""
import os
import resource
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

CHECK = os.path.join(tl.BUILD, "engine_check")
TMP = tl.tmpdir("engine-bad-")
ck = tl.Checks("test_engine_badinput", verbose=True)


# An AddressSanitizer build (tests/faults/sanitize.sh --all) reserves terabytes of shadow
# memory at start, so it cannot run under RLIMIT_AS; there the same limit is ASan's own
# allocation cap, under which malloc returns NULL as it would without memory.
SANITIZED = b"__asan_init" in open(CHECK, "rb").read() if os.path.exists(CHECK) else False


def run(*args, limit_as=None):
    env = {}
    if limit_as and SANITIZED:
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + \
            ":allocator_may_return_null=1:max_allocation_size_mb=%d" % (limit_as >> 20)

    def pre():
        if limit_as and not SANITIZED:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    return tl.run([CHECK, *args], extra_env=env, preexec_fn=pre)


def expect_fail(name, r, *needles):
    # (a sanitized build's own warnings about the failed allocation are not our output)
    why = tl.refusal(r, *needles, prog="engine_check", ignore="WARNING: AddressSanitizer" if SANITIZED else None)
    ck.ok(not why, f"{name}: {r.err.strip()}", why)


def good_ckpt(name="good.h5", V=300, T=32, L=2, H=4, C=64):
    p = os.path.join(TMP, name)
    tl.run_ok([CHECK, "init", "--out", p, "--vocab", V, "--block", T, "--layers", L, "--heads", H, "--embd", C])
    return p


def copy(src, name):
    dst = os.path.join(TMP, name)
    shutil.copy(src, dst)
    return dst


good = good_ckpt()
assert run("load", "--ckpt", good).rc == 0

expect_fail("n_embd not divisible by n_head",
            run("init", "--out", os.path.join(TMP, "x.h5"), "--vocab", 300, "--block", 32, "--layers", 2,
                "--heads", 3, "--embd", 100), "--n-embd 100 is not divisible by --n-head 3")
expect_fail("zero layers", run("init", "--out", os.path.join(TMP, "x.h5"), "--vocab", 300, "--block", 32,
                               "--layers", 0, "--heads", 4, "--embd", 64), "--n-layer 0")
expect_fail("negative block size", run("init", "--out", os.path.join(TMP, "x.h5"), "--vocab", 300, "--block", -1,
                                       "--layers", 2, "--heads", 4, "--embd", 64), "--block-size -1")
expect_fail("dropout 1.0", run("init", "--out", os.path.join(TMP, "x.h5"), "--vocab", 300, "--block", 32,
                               "--layers", 2, "--heads", 4, "--embd", 64, "--dropout", 1.0), "--dropout 1")
assert not os.path.exists(os.path.join(TMP, "x.h5")), "a failed init left a file behind"

p = copy(good, "wpe16.h5")
with h5py.File(p, "r+") as f:
    del f["model/transformer.wpe.weight"]
    f["model/transformer.wpe.weight"] = np.zeros((16, 64), np.float32)
expect_fail("tensor shape mismatch", run("load", "--ckpt", p), p, "transformer.wpe.weight", "(16, 64)", "(32, 64)")

p = copy(good, "cfg.h5")
with h5py.File(p, "r+") as f:
    f["config"].attrs["n_embd"] = 32
expect_fail("config disagrees with tensors", run("load", "--ckpt", p), p, "transformer.wte.weight",
            "(300, 64)", "(300, 32)")

p = copy(good, "cfgbad.h5")
with h5py.File(p, "r+") as f:
    f["config"].attrs["n_head"] = 5
expect_fail("invalid config in checkpoint", run("load", "--ckpt", p), p, "not divisible")

p = copy(good, "nolayer.h5")
with h5py.File(p, "r+") as f:
    del f["model/transformer.h.1.mlp.c_fc.bias"]
expect_fail("missing tensor", run("load", "--ckpt", p), p, "transformer.h.1.mlp.c_fc.bias", "missing")

p = copy(good, "f64.h5")
with h5py.File(p, "r+") as f:
    w = f["model/transformer.ln_f.weight"][()]
    del f["model/transformer.ln_f.weight"]
    f["model/transformer.ln_f.weight"] = w.astype(np.float64)
expect_fail("float64 tensor", run("load", "--ckpt", p), p, "transformer.ln_f.weight", "float32")

p = copy(good, "noconfig.h5")
with h5py.File(p, "r+") as f:
    del f["config"].attrs["vocab_size"]
expect_fail("config attribute missing", run("load", "--ckpt", p), p, "vocab_size")

p = os.path.join(TMP, "truncated.h5")
data = open(good, "rb").read()
for frac in (0.5, 0.97):
    with open(p, "wb") as f:
        f.write(data[:int(len(data) * frac)])
    expect_fail(f"truncated file ({frac:.0%})", run("load", "--ckpt", p), p)

p = os.path.join(TMP, "foreign.h5")
with h5py.File(p, "w") as f:
    f["data"] = np.arange(10)
expect_fail("foreign HDF5 file", run("load", "--ckpt", p), p, "not a gpt-train file")

p = os.path.join(TMP, "tokens.h5")
with h5py.File(p, "w") as f:
    f.attrs["format"] = "gpt-train/tokens"
    f.attrs["format_version"] = 1
expect_fail("another gpt-train format", run("load", "--ckpt", p), p, "gpt-train/tokens", "gpt-train/checkpoint")

p = os.path.join(TMP, "text.h5")
open(p, "w").write("hello\n" * 100)
expect_fail("not HDF5 at all", run("load", "--ckpt", p), p, "not an HDF5 file")
expect_fail("missing file", run("load", "--ckpt", os.path.join(TMP, "nope.h5")), "nope.h5")

tok = os.path.join(TMP, "long.h5")
with h5py.File(tok, "w") as f:
    f.attrs["format"] = "gpt-train/engine-tokens"
    f.attrs["format_version"] = 1
    f["inputs"] = np.zeros((1, 40), np.int32)
    f["targets"] = np.zeros((1, 40), np.int32)
expect_fail("sequence longer than block size", run("fwdbwd", "--ckpt", good, "--tokens", tok, "--out",
                                                   os.path.join(TMP, "o.h5")), "40", "block size 32")
with h5py.File(tok, "w") as f:
    f.attrs["format"] = "gpt-train/engine-tokens"
    f.attrs["format_version"] = 1
    f["inputs"] = np.full((1, 8), 300, np.int32)
    f["targets"] = np.zeros((1, 8), np.int32)
expect_fail("token id outside the vocabulary", run("fwdbwd", "--ckpt", good, "--tokens", tok, "--out",
                                                   os.path.join(TMP, "o.h5")), "300", "vocabulary")

# 12 layers of n_embd 4096 need ~10 GB of parameters; with 1 GiB of address space the
# allocation fails and the message says how much was needed.
expect_fail("allocation beyond available memory",
            run("init", "--out", os.path.join(TMP, "huge.h5"), "--vocab", 50257, "--block", 1024, "--layers", 12,
                "--heads", 32, "--embd", 4096, limit_as=1 << 30), "out of memory", "needs", "GiB")

if not ck.failed:
    tl.rmtree(TMP)  # kept when a check fails, for a look
ck.finish()
