#!/usr/bin/python3
"""test_checksums.py - the numbers inside the files are checked, not only their structure.

Every tensor of /model, /optimizer/m and /optimizer/v carries an attribute "checksum" (the
sum of its 32-bit words and the sum of (i+1) * word i, modulo 2^64). A flipped byte inside a
tensor's data used to load silently (the structure is intact) and surface, if ever, as a NaN
many steps later. Checked here, through the real tools:
  - io/python/gpt_checkpoint.py computes the same checksum as the C writer (verify_checksums
    of a fresh checkpoint is empty, and every tensor has one);
  - one byte flipped inside the data of a weight, and of an AdamW moment: gpt-sample and
    gpt-train --resume exit 1 with one message naming the checkpoint and the tensor;
  - an edit made on purpose with h5py is refused the same way until update_checksums(),
    after which both tools load it;
  - a checkpoint without checksums (earlier versions) still loads;
  - tokens.h5 and vocab.h5: every chunk of /train, /val and the vocabulary's datasets has a
    Fletcher-32 checksum that HDF5 verifies on read: a flipped byte inside the token data of a
    rank's shard makes gpt-train --data (under mpirun -np 2) exit 1 naming the file, and gpt-bpe
    decode too; a flipped byte in the merges makes gpt-bpe refuse the vocabulary.
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2",
         "--eval-batches", "1", "--log-every", "1"]


def flip_byte(path, dataset, index):
    """Flips the low bit of one byte inside a dataset's data (contiguous, or in its first chunk),
    in the file itself."""
    import h5py
    with h5py.File(path, "r") as f:
        d = f[dataset]
        off = d.id.get_offset() if d.chunks is None else d.id.get_chunk_info(0).byte_offset
    assert off is not None, dataset + " has no data on disk"
    with open(path, "r+b") as fh:
        fh.seek(off + index)
        b = fh.read(1)[0]
        fh.seek(off + index)
        fh.write(bytes([b ^ 1]))


def main():
    bpe, train, sample = tl.require("gpt-bpe", "gpt-train", "gpt-sample")
    try:
        import h5py
        import gpt_checkpoint as gc
    except ImportError as e:
        tl.skip("%s (python3-h5py, python3-numpy)" % e)
    d = tl.tmpdir("gt-checksum-")
    ck = tl.Checks("test_checksums")
    _, _, tokens = fl.make_tokens(bpe, d, 30000)
    run = os.path.join(d, "run")
    r = fl.run([train, "--data", tokens, "--out", run, "--steps", "3", "--ckpt-every", "1", *MODEL], timeout=120)
    if r.rc != 0:
        print("fixture run failed\n" + r.describe())
        sys.exit(1)
    good = os.path.join(run, "ckpt-00000003.h5")

    with h5py.File(good, "r") as f:
        n = sum(1 for g in ("model", "optimizer/m", "optimizer/v") for k in f[g] if "checksum" in f[g][k].attrs)
        total = sum(len(f[g]) for g in ("model", "optimizer/m", "optimizer/v"))
    ck.ok(n == total, "every tensor of the checkpoint has a checksum", "%d of %d" % (n, total))
    bad = gc.verify_checksums(good)
    ck.ok(bad == [], "gpt_checkpoint.py's checksum equals the C writer's on every tensor", str(bad))

    def resume_copy(ckpt, name):
        """A run directory whose latest checkpoint is `ckpt`, resumed to step 4."""
        rd = os.path.join(d, name)
        os.makedirs(rd)
        shutil.copy(ckpt, os.path.join(rd, "ckpt-00000003.h5"))
        with open(os.path.join(rd, "latest"), "w") as fh:
            fh.write("ckpt-00000003.h5\n")
        return fl.run([train, "--data", tokens, "--out", rd, "--resume", "--steps", "4"], timeout=120)

    def refused(r, what, *needles):
        errs = r.error_lines("error:")
        ck.ok(r.rc == 1 and len(errs) == 1 and all(s in errs[0] for s in needles), what, r.describe())

    for dataset, index in (("model/transformer.h.0.mlp.c_fc.weight", 301), ("optimizer/v/transformer.wpe.weight", 17)):
        p = os.path.join(d, "flip-%s.h5" % dataset.split("/")[-1])
        shutil.copy(good, p)
        flip_byte(p, dataset, index)
        name = dataset.split("/")[-1]
        ck.ok(gc.verify_checksums(p) == [dataset], "gpt_checkpoint.verify_checksums names the flipped tensor %s" % name,
              str(gc.verify_checksums(p)))
        if dataset.startswith("model/"):
            refused(fl.run([sample, "--checkpoint", p, "--prompt", "The", "--max-new-tokens", "2"], timeout=60),
                    "gpt-sample: a flipped byte in %s is refused (exit 1, one message naming it)" % name,
                    p, name, "checksum")
        refused(resume_copy(p, "resume-" + name), "gpt-train --resume: a flipped byte in %s is refused" % name,
                name, "checksum")

    # An edit on purpose: refused until the checksums are updated.
    p = os.path.join(d, "edited.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        w = f["model/transformer.ln_f.weight"]
        w[...] = w[()] * 2
    refused(fl.run([sample, "--checkpoint", p, "--prompt", "The", "--max-new-tokens", "2"], timeout=60),
            "gpt-sample: tensors edited with h5py without update_checksums are refused", "transformer.ln_f.weight")
    gc.update_checksums(p)
    r = fl.run([sample, "--checkpoint", p, "--prompt", "The", "--max-new-tokens", "2"], timeout=60)
    ck.ok(r.rc == 0, "gpt-sample loads the edited checkpoint after update_checksums", r.describe())
    r = resume_copy(p, "resume-edited")
    ck.ok(r.rc == 0, "gpt-train --resume loads it too", r.describe())

    # Checkpoints written before checksums existed load as before.
    p = os.path.join(d, "old.h5")
    shutil.copy(good, p)
    with h5py.File(p, "r+") as f:
        for g in ("model", "optimizer/m", "optimizer/v"):
            for k in f[g]:
                if "checksum" in f[g][k].attrs:
                    del f[g][k].attrs["checksum"]
    r = fl.run([sample, "--checkpoint", p, "--prompt", "The", "--max-new-tokens", "2"], timeout=60)
    ck.ok(r.rc == 0, "a checkpoint without checksums (earlier versions) still loads", r.describe())
    ck.ok(gc.verify_checksums(p) == [], "verify_checksums skips tensors without one")

    # tokens.h5 and vocab.h5: HDF5's own per-chunk checksums.
    vocab = os.path.join(d, "vocab.h5")
    with h5py.File(tokens, "r") as f, h5py.File(vocab, "r") as v:
        filtered = [f[s].id.get_create_plist().get_filter(0)[0] for s in ("train", "val")] + \
            [v["tokenizer"][k].id.get_create_plist().get_filter(0)[0] for k in ("merges", "token_bytes",
                                                                                 "token_offsets")]
    ck.ok(all(x == h5py.h5z.FILTER_FLETCHER32 for x in filtered),
          "tokens.h5 /train, /val and vocab.h5's datasets carry Fletcher-32 checksums", str(filtered))
    p = os.path.join(d, "tokens-flip.h5")
    shutil.copy(tokens, p)
    flip_byte(p, "train", 1001)
    r = fl.run(tl.mpirun(2, train, "--data", p, "--out", os.path.join(d, "run-flip"), "--steps", "2", *MODEL),
               timeout=120)
    refused(r, "gpt-train --data (2 ranks): a flipped byte inside /train is exit 1, one message naming the file",
            p, "/train")
    r = fl.run([bpe, "decode", "--vocab", vocab, "--tokens", p, "--split", "train"], timeout=60)
    refused(r, "gpt-bpe decode: a flipped byte inside /train is refused", p)
    r = fl.run([bpe, "decode", "--vocab", vocab, "--tokens", p, "--split", "val"], timeout=60)
    ck.ok(r.rc == 0, "gpt-bpe decode of the intact /val of the same file still works", r.describe())
    p = os.path.join(d, "vocab-flip.h5")
    shutil.copy(vocab, p)
    flip_byte(p, "tokenizer/merges", 6)
    r = fl.run([bpe, "decode", "--vocab", p, "--ids", "1,2,3"], timeout=60)
    refused(r, "gpt-bpe: a flipped byte inside the merges of vocab.h5 is refused", p)
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
