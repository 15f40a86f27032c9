#!/usr/bin/python3
"""classify_crash.py HARNESS INPUT - replays one input that libFuzzer saved and says whose bug
it is: "ours" (exit 1) or "hdf5" (exit 0), with the report's first lines.

HDF5 1.10 trusts sizes and offsets read from the file in a few places (global heap objects of
variable-length strings, for one): a damaged file can make libhdf5 itself read out of bounds,
crash or loop, before any check of ours can run; h5py does the same on those files. Such a
crash is "hdf5" when the faulting frame is inside libhdf5 and, for a bad heap access, the
buffer was also allocated inside libhdf5 (an overflow of a buffer WE passed, too small, is
ours), for an out-of-memory when libhdf5 made the allocation, and for a hang when libhdf5 is
spinning (not sleeping in H5_nanosleep: its SWMR read retries are ours to configure).
Everything else -- a frame of our code faulting, a failed harness check, UBSan, a leak -- is
ours.
"""
import os
import re
import subprocess
import sys

RUNTIME = re.compile(r" in (__interceptor_|__asan|__sanitizer|__lsan|__ubsan|fuzzer::|__libc_|raise|abort|"
                     r"__pthread_kill|_start|main |__GI_|malloc|calloc|realloc|free|operator)")


def frames(block):
    return [l for l in block.splitlines() if re.match(r"\s+#\d+ 0x", l)]


def first_real(fr):
    for l in fr:
        if not RUNTIME.search(l) and "libclang_rt" not in l and "/libc.so" not in l:
            return l
    return fr[0] if fr else ""


def main():
    harness, inp = sys.argv[1], sys.argv[2]
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=0:symbolize=1:abort_on_error=1:allocator_may_return_null=1"
    env.setdefault("GT_H5_OPEN_TIMEOUT", "3")
    try:
        r = subprocess.run([harness, "-rss_limit_mb=6144", "-malloc_limit_mb=65536", "-timeout=10", inp],
                           capture_output=True, text=True, env=env, timeout=90)
    except subprocess.TimeoutExpired:
        print("ours: the input hangs the harness for 90 s (no timer caught it)")
        return 1
    out = r.stderr
    if "HDF5 crashed reading the file's metadata" in out or "HDF5 did not finish reading the file's metadata" in out:
        # h5util's watchdog caught libhdf5 crashing or looping on the damaged file: exit 1, one message
        print("hdf5: caught by h5util's watchdog: " + [l for l in out.splitlines() if "HDF5 " in l][0].strip())
        return 0
    if r.returncode == 0:
        print("hdf5? no: the input no longer crashes (rc 0) -- counted as ours, to look at")
        return 1
    m = re.search(r"(ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): .*|runtime error: .*|FUZZ ASSERTION FAILED.*)",
                  out)
    title = m.group(1) if m else "exit %d without a sanitizer report" % r.returncode
    start = m.start() if m else 0
    block = out[start:]
    fr = frames(block.split("allocated by thread")[0].split("freed by thread")[0])
    fault = first_real(fr)
    verdict = "ours"
    if any(w in title for w in ("FUZZ ASSERTION", "runtime error", "LeakSanitizer")):
        verdict = "ours"
    elif "timeout" in title and ("H5_nanosleep" in block or "libhdf5" not in fault):
        # sleeping in libhdf5 is how we called it (SWMR read retries): ours to configure
        verdict = "ours"
    elif "libhdf5" in fault:
        verdict = "hdf5"
        if "allocated by thread" in block:  # a heap error: whose buffer?
            alloc = frames(block.split("allocated by thread", 1)[1])
            if "libhdf5" not in first_real(alloc):
                verdict = "ours"
                fault += "\n    buffer allocated by: " + first_real(alloc).strip()
    print("%s: %s\n    faulting frame: %s" % (verdict, title.strip(), fault.strip()))
    return 0 if verdict == "hdf5" else 1


if __name__ == "__main__":
    sys.exit(main())
