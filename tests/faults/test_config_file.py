#!/usr/bin/python3
"""test_config_file.py - gpt-train's --config files and number parsing (issue 15), as a user
meets them: each mistake is exit 1 with ONE message naming the file or flag, printable
(never raw bytes from the file), and no hang or unbounded read; what is valid works.

- a UTF-8 byte order mark is accepted; a key given twice is an error naming both lines;
- a directory, a FIFO, /dev/zero, a socket or a file over 4 MiB is refused at once;
- binary content, a NUL byte, a bad quote or escape: one printable line naming the line;
- an overflowing number is "out of range" (the range), not "not an integer";
- --loss-spike is 0 (off) or in (1, 1e6]; --block-size stops at 46340 (T*T in an int);
- a non-UTF-8 --attn-prompt is refused as gpt-sample refuses a non-UTF-8 --prompt;
- the printed "effective configuration" read back with --config continues the same run:
  nasty --out paths and probe texts (quotes, #, backslashes, newlines, blanks at the ends,
  non-ASCII) come back exactly (attention.h5 accepts the probe as its own).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

TINY = ["--steps", "1", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--block-size", "32",
        "--batch-size", "2", "--eval-batches", "1"]


def one_error(ck, what, r, *needles, rc=1):
    """exit rc, exactly one printable error line, containing every needle."""
    if not ck.ok(not r.crashed(), what + ": no crash or hang", r.describe()):
        return
    ck.ok(r.rc == rc, what + ": exit status %d" % rc, r.describe())
    lines = r.error_lines()
    ck.ok(len(lines) == 1, what + ": one error line (got %d)" % len(lines), r.describe())
    line = lines[0] if lines else ""
    for n in needles:
        ck.ok(n in line, what + ": the message names %r" % n, line)
    ck.ok(all(ch >= " " and ch != "\x7f" and not ("\x80" <= ch <= "\x9f") and ch != "\ufffd" for ch in line),
          what + ": the message is printable", repr(line))


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


def printed_config(out):
    """The '# effective configuration' block of gpt-train's stdout."""
    start = out.index("# effective configuration")
    return out[start:out.index("\ndata: ", start) + 1]


def main():
    bpe, train = tl.require("gpt-bpe", "gpt-train")
    sample = tl.tool("gpt-sample")
    d = tl.tmpdir("gt-config-")
    ck = tl.Checks("test_config_file")
    _, vocab, tokens = fl.make_tokens(bpe, d, 30000)
    base = ["--data", tokens, "--out", os.path.join(d, "run")]

    def gt(*args, timeout=60):
        return fl.run([train, *[str(a) for a in args]], timeout=timeout)

    # ---- the file itself
    bom = write(os.path.join(d, "bom.conf"), b"\xef\xbb\xbf# saved by a Windows editor\r\nn_layer = 1\r\nlr = 2e-3\r\n")
    r = gt(*base, *TINY, "--config", bom, "--out", os.path.join(d, "bom-run"))
    ck.ok(r.rc == 0 and "n_layer = 1" in r.out and "lr = 0.002" in r.out,
          "a config file with a UTF-8 BOM and CRLF lines is read", r.describe())

    dup = write(os.path.join(d, "dup.conf"), "n_layer = 1\nlr = 1e-3\n\nn-layer = 2  # again\n")
    one_error(ck, "a key given twice", gt(*base, "--config", dup), "dup.conf", "line 4", "line 1", "n-layer")

    os.mkdir(os.path.join(d, "conf.d"))
    one_error(ck, "--config a directory", gt(*base, "--config", os.path.join(d, "conf.d")), "conf.d", "directory")
    fifo = os.path.join(d, "conf.fifo")
    os.mkfifo(fifo)
    one_error(ck, "--config a FIFO (nobody writes)", gt(*base, "--config", fifo, timeout=20), "conf.fifo", "FIFO")
    one_error(ck, "--config /dev/zero", gt(*base, "--config", "/dev/zero", timeout=20), "/dev/zero", "device")
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(d, "conf.sock"))  # was "cannot open: No such device or address"
    one_error(ck, "--config a socket", gt(*base, "--config", os.path.join(d, "conf.sock")), "conf.sock", "socket")
    sock.close()
    big = write(os.path.join(d, "big.conf"), b"# padding\n" * 500000)
    one_error(ck, "--config over 4 MiB", gt(*base, "--config", big, timeout=20), "big.conf", "4 MiB")

    binary = write(os.path.join(d, "bin.conf"), b"\x7fELF\x02\x01\x01\x1b[2J\xc2\x9b31m\xff\xfe = 3\n")
    one_error(ck, "a binary config file", gt(*base, "--config", binary), "bin.conf", "line 1", "\\x1B", "\\xFF")
    nul = write(os.path.join(d, "nul.conf"), b"n_layer = 1\nlr = 1\x00e-3\n")
    one_error(ck, "a NUL byte in a config file", gt(*base, "--config", nul), "nul.conf", "line 2", "NUL")
    for name, text, needle in (("open-quote", 'attn_prompt = "say hi\n', "closing quote"),
                               ("bad-escape", 'attn_prompt = "a\\qb"\n', "escape"),
                               ("after-quote", 'attn_prompt = "a" b\n', "after the closing quote"),
                               ("nul-escape", 'attn_prompt = "a\\x00"\n', "NUL"),
                               ("no-equals", "n_layer 2\n", "key = value")):
        p = write(os.path.join(d, name + ".conf"), "n_layer = 1\n" + text)
        one_error(ck, "config file: " + name, gt(*base, "--config", p), name + ".conf", "line 2", needle)

    # ---- numbers: an overflow is out of range, with the range
    one_error(ck, "--seed overflowing", gt(*base, "--seed", "99999999999999999999"), "--seed", "must be between 0 and")
    one_error(ck, "--lr overflowing", gt(*base, "--lr", "1e999"), "--lr", "must be between 0 and 10")
    ovf = write(os.path.join(d, "ovf.conf"), "steps = 123456789012345678901234567890\n")
    one_error(ck, "steps overflowing in a config file", gt(*base, "--config", ovf), "ovf.conf", "steps",
              "must be between 1 and")
    r = fl.run([bpe, "train", "--input", tokens, "--out", os.path.join(d, "x.h5"), "--threads",
                "99999999999999999999"])
    one_error(ck, "gpt-bpe --threads overflowing", r, "--threads", "must be between 1 and 1024")
    if sample:
        r = fl.run([sample, "--checkpoint", d, "--prompt", "x", "--max-new-tokens", "99999999999999999999"])
        one_error(ck, "gpt-sample --max-new-tokens overflowing", r, "--max-new-tokens", "must be between 0 and")

    # ---- --loss-spike: 0 (off) or a factor above 1. Accepted values pass the option table:
    # the run then stops at a later check (--min-lr above --lr), which names --min-lr instead.
    later = ["--lr", "1e-4", "--min-lr", "1e-3"]
    for v in ("1", "0.5", "-1", "1000001"):
        one_error(ck, "--loss-spike %s" % v, gt(*base, "--loss-spike", v), "--loss-spike", "0 (off) or in (1, 1e+06]")
    for v in ("0", "1.01", "1e6"):
        one_error(ck, "--loss-spike %s is accepted" % v, gt(*base, "--loss-spike", v, *later), "--min-lr")

    # ---- --block-size: T*T must fit BLAS's int, so 46340; the help says so
    one_error(ck, "--block-size 46341", gt(*base, "--block-size", "46341"), "--block-size", "between 1 and 46340")
    one_error(ck, "--block-size 65536", gt(*base, "--block-size", "65536"), "--block-size", "between 1 and 46340")
    r = gt(*base, "--block-size", "46340", "--n-layer", "1", "--n-embd", "8", "--n-head", "1", "--batch-size", "1")
    what = "--block-size 46340 passes the table and the engine's check (fails on the data's size)"
    one_error(ck, what, r, "46340")
    ck.ok(not any("must be between" in l or "too large" in l for l in r.error_lines()), what + ": not a range error",
          r.describe())

    # ---- text options: UTF-8, as gpt-sample's --prompt
    r = fl.run([train] + base + ["--attn-every", "1", "--attn-prompt", os.fsdecode(b"caf\xe9")])
    one_error(ck, "--attn-prompt not UTF-8", r, "--attn-prompt", "UTF-8")
    latin = write(os.path.join(d, "latin1.conf"), b"attn_prompt = caf\xe9\n")
    one_error(ck, "attn_prompt not UTF-8 in a config file", gt(*base, "--config", latin), "latin1.conf",
              "attn_prompt", "UTF-8")
    esc = write(os.path.join(d, "esc.conf"), 'attn_prompt = "caf\\xe9"\n')
    one_error(ck, "attn_prompt escaping to non-UTF-8", gt(*base, "--config", esc), "esc.conf", "UTF-8")

    # ---- the printed configuration is a config file that continues the same run exactly
    nasty = [
        ('r "q" # h', ' say "hi" # not a comment '),
        ("r\\back\\slash\\", "line one\nline two\\n\ttab\\"),
        ("r 'single' é 你好\t", "'quoted' café 🙂 \\x41 = #"),
    ]
    for i, (out_name, prompt) in enumerate(nasty):
        run_dir = os.path.join(d, "%d %s" % (i, out_name))
        first = gt("--data", tokens, "--out", run_dir, *TINY, "--attn-every", "1", "--attn-prompt", prompt)
        if not ck.ok(first.rc == 0, "round trip %d: the first run" % i, first.describe()):
            continue
        conf = write(os.path.join(d, "printed-%d.conf" % i), printed_config(first.out))
        again = gt("--config", conf, "--resume", "--steps", "2")
        ck.ok(again.rc == 0 and "resuming from" in again.out and "at step 1 of 2" in again.out,
              "round trip %d: the printed configuration resumes the same run directory" % i, again.describe())
        # attention.h5 refuses a resume with another probe: the text came back exactly
        ck.ok(again.rc == 0 and not again.error_lines(), "round trip %d: the probe text is the same" % i,
              again.describe())
        if again.rc == 0:
            text2 = printed_config(again.out).replace("steps = 2", "steps = 1")
            ck.ok(text2 == printed_config(first.out), "round trip %d: printed again identically" % i,
                  "first:\n%s\nagain:\n%s" % (printed_config(first.out), printed_config(again.out)))

    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
