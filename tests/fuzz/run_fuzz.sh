#!/usr/bin/env bash
# run_fuzz.sh - builds the libFuzzer harnesses (clang, ASan + UBSan) and fuzzes each one
# for a bounded time, after replaying the regression corpus.
#
#   tests/fuzz/run_fuzz.sh                 60 s per harness (the long version)
#   tests/fuzz/run_fuzz.sh --ci            replay tests/fuzz/corpus/, then 20 s per harness (seed 1)
#   tests/fuzz/run_fuzz.sh --time 600 fuzz_h5load    one harness, ten minutes
#   tests/fuzz/run_fuzz.sh --replay-only   only replay the committed corpus
#
# Harnesses (tests/fuzz/*.c): fuzz_tokenizer (encode/decode of arbitrary bytes, training on
# arbitrary small texts) and fuzz_h5load (the input written to a file and loaded as vocab.h5,
# tokens.h5, a checkpoint and attention.h5). The loaders' "exit 1 with a message" is correct
# behaviour; error.c is compiled with -Dexit=gt_fuzz_exit so that exit returns to the harness
# (see fuzz_common.h). Crashes, sanitizer reports, hangs and failed harness checks are bugs.
# Fuzzing runs in libFuzzer's fork mode, so a crash does not stop it; afterwards each saved
# input ($OUT/artifacts-<harness>/) is replayed and classified by classify_crash.py: a crash
# inside libhdf5 itself on a damaged file (HDF5 1.10 trusts some sizes read from the file; h5py
# crashes on the same files) is reported as a note, anything else fails the run. Fix it, then
# keep the input in tests/fuzz/corpus/<harness>/ (replayed by every run: must not crash);
# inputs that crash libhdf5 go to tests/fuzz/known-hdf5/<harness>/ (replayed: must stay HDF5's).
#
# Env: GT_FUZZ_BUILD (default $GT_BUILD/fuzz under ctest, else build-fuzz/), CC (default clang).
# Needs Debian clang and libclang-rt-14-dev (scripts/setup.sh --tests installs them).
# Exit 0 when every harness ran clean; 1 on a crash; 77 when clang/libFuzzer is missing.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
# Under ctest the fuzz build lives inside the ctest build directory ($GT_BUILD/fuzz), so
# parallel builds never share it; by hand it is build-fuzz/ in the checkout.
if [[ -n ${GT_FUZZ_BUILD:-} ]]; then OUT=$GT_FUZZ_BUILD
elif [[ -n ${GT_BUILD:-} ]]; then OUT=$GT_BUILD/fuzz
else OUT=$SRC/build-fuzz; fi
CC=${CC:-clang}
[[ $CC == cc || $CC == gcc || $CC == */gcc ]] && CC=clang   # libFuzzer is clang's
SECS=60
# CI fuzzes from a fixed seed, so a run there explores the same inputs as the last one (a new
# finding then comes from a code change, not from chance); the long runs take a fresh seed.
SEED_OPT=()
REPLAY_ONLY=0
HARNESSES=()
while (($#)); do
    case $1 in
        --ci) SECS=20; SEED_OPT=(-seed=1); shift ;;
        --time) SECS=$2; shift 2 ;;
        --replay-only) REPLAY_ONLY=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        fuzz_*) HARNESSES+=("$1"); shift ;;
        *) echo "run_fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
    esac
done
((${#HARNESSES[@]})) || HARNESSES=(fuzz_tokenizer fuzz_h5load)

if ! command -v "$CC" >/dev/null; then
    echo "SKIP: $CC not found (apt-get install clang libclang-rt-14-dev, or scripts/setup.sh --tests)"; exit 77
fi
mkdir -p "$OUT/obj"
probe=$OUT/probe.c
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }' >"$probe"
if ! "$CC" -fsanitize=fuzzer,address "$probe" -o "$OUT/probe" 2>/dev/null; then
    echo "SKIP: $CC cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)"; exit 77
fi

# ---- build: every library source (no *_main.c) into one archive; the linker takes what each
# harness needs, so new modules are picked up without editing this script.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
PKG="$(pkg-config --cflags hdf5 libpcre2-8 openblas ompi-c)"
LIBS="$(pkg-config --libs hdf5 libpcre2-8 openblas ompi-c) -ldnnl -lm"   # oneDNN: the bf16 matmuls (no .pc file in Debian)
OMP=""
if echo 'int main(void){return 0;}' | "$CC" -fopenmp -x c - -o "$OUT/probe-omp" 2>/dev/null; then OMP=-fopenmp; fi
CFLAGS="-std=gnu11 -O1 -g $SAN $OMP $(for d in "$SRC"/src/*/; do printf -- "-I%s " "${d%/}"; done)-I$SRC/io -I$SRC/mpi $PKG -DGT_VERSION=\"fuzz\" -fmacro-prefix-map=$SRC/= -Wno-unused-parameter -Werror=implicit-function-declaration"
objs=()
for f in "$SRC"/src/*/*.c "$SRC"/io/*.c "$SRC"/mpi/*.c; do
    [[ -e $f ]] || continue
    case $(basename "$f") in *_main.c) continue ;; esac
    o=$OUT/obj/$(basename "${f%.c}").o
    extra=""
    [[ $(basename "$f") == error.c ]] && extra="-Dexit=gt_fuzz_exit"
    if [[ ! -e $o || $f -nt $o || $0 -nt $o ]]; then
        # shellcheck disable=SC2086
        if ! "$CC" $CFLAGS -fsanitize=fuzzer-no-link $extra -c "$f" -o "$o" 2>"$o.log"; then
            echo "run_fuzz.sh: warning: $f does not compile, left out:"; head -5 "$o.log"; rm -f "$o"; continue
        fi
    fi
    objs+=("$o")
done
rm -f "$OUT/libgt_fuzz.a"
ar rcs "$OUT/libgt_fuzz.a" "${objs[@]}"
for h in "${HARNESSES[@]}"; do
    # shellcheck disable=SC2086
    "$CC" $CFLAGS -fsanitize=fuzzer "$SRC/tests/fuzz/$h.c" "$OUT/libgt_fuzz.a" $LIBS -o "$OUT/$h"
done
echo "run_fuzz.sh: built ${HARNESSES[*]} in $OUT"

# ---- run
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# h5util's watchdog turns a libhdf5 crash or hang while opening a damaged file into exit 1
# after GT_H5_OPEN_TIMEOUT s: keep that short here (it replaces libFuzzer's own timer).
export GT_H5_OPEN_TIMEOUT=${GT_H5_OPEN_TIMEOUT:-3}
status=0
for h in "${HARNESSES[@]}"; do
    reg=$SRC/tests/fuzz/corpus/$h
    work=$OUT/corpus-$h
    mkdir -p "$reg" "$work"
    # The loaders leave buffers behind when they end through gt_fail (the process would exit);
    # only the tokenizer is held to LSan's standard inside the fuzzing loop.
    leaks=1
    [[ $h == fuzz_h5load ]] && leaks=0
    # HDF5 allocates whatever length a damaged variable-length string claims (up to 4 GiB)
    # before it fails the read; our loaders then exit 1. Memory really used is capped at 6 GiB.
    opts=(-timeout=10 -rss_limit_mb=6144 -malloc_limit_mb=65536 -detect_leaks=$leaks -print_final_stats=0)
    # allocator_may_return_null: a huge allocation fails as in production (gt_malloc then reports it).
    export ASAN_OPTIONS="${GT_ASAN_BASE:-abort_on_error=1:symbolize=1:allocator_may_return_null=1}:detect_leaks=$leaks"
    files=("$reg"/*)
    if [[ -e ${files[0]} ]]; then
        echo "== $h: replaying ${#files[@]} inputs of tests/fuzz/corpus/$h"
        # A generous watchdog here: the 4 GiB string of one regression input takes seconds under ASan.
        if ! GT_H5_OPEN_TIMEOUT=60 "$OUT/$h" "${opts[@]}" -runs=1 "${files[@]}" >"$OUT/$h-replay.log" 2>&1; then
            echo "FAIL: $h crashes on the regression corpus:"; tail -40 "$OUT/$h-replay.log"; status=1; continue
        fi
    fi
    known=$SRC/tests/fuzz/known-hdf5/$h
    for k in "$known"/*; do  # crashes inside libhdf5 on damaged files: must stay HDF5's
        [[ -e $k ]] || continue
        if ! /usr/bin/python3 "$SRC/tests/fuzz/classify_crash.py" "$OUT/$h" "$k" >"$OUT/$h-known.log" 2>&1; then
            echo "FAIL: $h: known HDF5 crash $(basename "$k") is no longer only HDF5's:"; cat "$OUT/$h-known.log"; status=1
        fi
    done
    ((REPLAY_ONLY)) && continue
    echo "== $h: fuzzing for $SECS s"
    # Fork mode: a crash does not end the run; every input that crashed is classified after.
    art=$OUT/artifacts-$h
    rm -rf "$art"
    mkdir -p "$art"
    # The outer timeout is a backstop: the watchdog's alarm(0) also cancels libFuzzer's timer.
    timeout -k 5 $((SECS + 120)) "$OUT/$h" "${opts[@]}" "${SEED_OPT[@]}" -fork=1 -ignore_crashes=1 -ignore_ooms=1 \
        -ignore_timeouts=1 -close_fd_mask=2 -max_total_time="$SECS" -artifact_prefix="$art/" "$work" "$reg" \
        >"$OUT/$h-fuzz.log" 2>&1 || true
    { grep -E "^#[0-9]+: cov" "$OUT/$h-fuzz.log" || true; } | tail -1
    for c in "$art"/*; do
        [[ -e $c ]] || continue
        if /usr/bin/python3 "$SRC/tests/fuzz/classify_crash.py" "$OUT/$h" "$c" >"$c.txt" 2>&1; then
            echo "note: $h: a damaged file crashes libhdf5 itself (not our code; h5py crashes on it too):"
            sed 's/^/    /' "$c.txt"
        else
            echo "FAIL: $h found a bug ($c):"; sed 's/^/    /' "$c.txt"; status=1
            echo "    replay: $OUT/$h $c ; keep it: cp $c tests/fuzz/corpus/$h/ once fixed"
        fi
    done
done
exit $status
