#!/usr/bin/env bash
# sanitize.sh - the project built with AddressSanitizer + UndefinedBehaviorSanitizer
# (cmake -DGT_SANITIZE=ON, its own build directory) and a subset of the suite run on it:
#   1. the tokenizer's ctest tests, with LeakSanitizer ON (gpt-bpe uses no MPI, so any leak
#      it reports is ours; tests/faults/lsan.supp exempts only the C test helpers of tests/*.c);
#   2. a 2-rank training (mpirun -np 2), a --resume of it, gpt-sample, and the bad-input
#      table of tests/faults (short), with leak detection OFF: Open MPI's own allocations are
#      reported as leaks under ASan, so MPI programs run with ASAN_OPTIONS=detect_leaks=0;
#   3. the corrupted-file test of tests/faults on the sanitized tools (fewer trials).
# Any sanitizer report fails the run: ASan/UBSan exit with 86/87 (so they are never mistaken
# for our exit 1 on bad input), UBSan halts on the first error, and the logs are scanned.
#
#   tests/faults/sanitize.sh         everything above (a few minutes on 2 cores)
#   tests/faults/sanitize.sh --ci    without the bad-command-line table, fewer damaged files
#   tests/faults/sanitize.sh --all   the whole ctest suite on the sanitized build (long)
# Env: GT_ASAN_BUILD (default $GT_BUILD/asan under ctest, else build-asan/ in the checkout).
set -uo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
# Under ctest the sanitized build lives inside the ctest build directory, so parallel
# checkouts/builds never share it; by hand it is build-asan/ in the checkout.
if [[ -n ${GT_ASAN_BUILD:-} ]]; then B=$GT_ASAN_BUILD
elif [[ -n ${GT_BUILD:-} ]]; then B=$GT_BUILD/asan
else B=$SRC/build-asan; fi
MODE=${1:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
SAN_COMMON="abort_on_error=0:exitcode=86:symbolize=1:detect_stack_use_after_return=0:suppressions=$SRC/tests/faults/asan.supp"
export UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1"
log=$B/sanitize-logs
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

echo "== configure and build $B (GT_SANITIZE=ON)"
t0=$SECONDS
mkdir -p "$B"
cmake -S "$SRC" -B "$B" -DGT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$B/configure.log" 2>&1 ||
    { cat "$B/configure.log"; echo "FAIL: cmake configure"; exit 1; }
if ! cmake --build "$B" -j2 >"$B/build.log" 2>&1; then
    # Build what builds (another component may be half-written): the tools are what we need.
    cmake --build "$B" -j2 --target gpt-bpe gpt-train gpt-sample -- -k >>"$B/build.log" 2>&1
fi
echo "   built in $((SECONDS - t0)) s"
mkdir -p "$log"
rm -f "$log"/*

# Scans a log (or a directory of logs) for sanitizer reports.
scan() {
    if grep -rlE "ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:" "$@" 2>/dev/null; then
        return 1
    fi
    return 0
}

# ---- 1. tokenizer tests with LSan on
if [[ -x $B/gpt-bpe ]]; then
    echo "== tokenizer tests (ASan+UBSan+LSan)"
    t0=$SECONDS
    (cd "$B" && ASAN_OPTIONS="$SAN_COMMON:detect_leaks=1" LSAN_OPTIONS="suppressions=$SRC/tests/faults/lsan.supp" ctest -R "tokenizer|bpe" -E "^faults_" --output-on-failure \
        >"$log/ctest-tokenizer.log" 2>&1)
    rc=$?
    tail -3 "$log/ctest-tokenizer.log"
    ((rc == 0)) || { grep -E "Failed|\*\*\*" "$log/ctest-tokenizer.log" | head -20; fail "tokenizer tests under ASan"; }
    scan "$log/ctest-tokenizer.log" >/dev/null || fail "sanitizer report in tokenizer tests"
    echo "   $((SECONDS - t0)) s"
else
    fail "gpt-bpe did not build with GT_SANITIZE=ON (see $B/build.log)"
fi

# ---- 2. a short 2-rank training, resume and sample (leaks off for MPI programs)
export ASAN_OPTIONS="$SAN_COMMON:detect_leaks=0"
if [[ $MODE == --all ]]; then  # every other test of the suite, leaks off (most run mpirun)
    echo "== the whole ctest suite (but faults_*) on the sanitized build"
    t0=$SECONDS
    (cd "$B" && ctest -E "^faults_" --output-on-failure >"$log/ctest-all.log" 2>&1)
    rc=$?
    tail -3 "$log/ctest-all.log"
    ((rc == 0)) || { grep -E "^\s+[0-9]+ - " "$log/ctest-all.log" | head -30; fail "ctest suite under ASan"; }
    scan "$log/ctest-all.log" >/dev/null || fail "sanitizer report in the ctest suite"
    echo "   $((SECONDS - t0)) s"
fi
if [[ -x $B/gpt-train && -x $B/gpt-bpe ]]; then
    echo "== 2-rank training, resume, sample (ASan+UBSan, detect_leaks=0 for Open MPI)"
    t0=$SECONDS
    w=$(mktemp -d)
    /usr/bin/python3 -c "import sys; sys.path.insert(0, '$SRC/tests/faults'); import faultlib; faultlib.make_corpus('$w/corpus.txt', 40000)"
    common=(--n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 4 --vocab-size 300
            --eval-every 4 --eval-batches 2 --ckpt-every 3 --log-every 2 --attn-every 2 --dropout 0.1)
    timeout 300 mpirun --oversubscribe -np 2 "$B/gpt-train" --data "$w/corpus.txt" --out "$w/run" --steps 6 \
        "${common[@]}" >"$log/train.log" 2>&1 || fail "2-rank training under ASan exited $? (log: $log/train.log)"
    timeout 300 mpirun --oversubscribe -np 2 "$B/gpt-train" --data "$w/corpus.txt" --out "$w/run" --steps 9 --resume \
        "${common[@]}" >"$log/resume.log" 2>&1 || fail "--resume under ASan exited $? (log: $log/resume.log)"
    if [[ -x $B/gpt-sample ]]; then
        timeout 120 "$B/gpt-sample" --checkpoint "$w/run" --prompt "The fox" --max-new-tokens 20 --top-k 5 \
            --attn-out "$w/gen.h5" >"$log/sample.log" 2>&1 || fail "gpt-sample under ASan exited $? (log: $log/sample.log)"
    fi
    scan "$log/train.log" "$log/resume.log" "$log/sample.log" >/dev/null || fail "sanitizer report in training/sampling"
    tail -2 "$log/resume.log"
    rm -rf "$w"
    echo "   $((SECONDS - t0)) s"
fi

# ---- 3. bad command lines and corrupted files on the sanitized tools
echo "== bad command lines and corrupted files on the sanitized tools"
t0=$SECONDS
trials=${GT_SAN_TRIALS:-12}
[[ $MODE == --ci ]] && trials=${GT_SAN_TRIALS:-4}
if [[ $MODE != --ci ]]; then  # about a minute more; CI runs the table on the Release build
    GT_BUILD=$B GT_CLI_QUICK=1 /usr/bin/python3 "$SRC/tests/faults/test_cli_table.py" >"$log/cli.log" 2>&1
    rc=$?
    tail -1 "$log/cli.log"
    ((rc == 0 || rc == 77)) || { grep -A8 "^FAIL" "$log/cli.log" | head -40; fail "bad command lines under ASan"; }
fi
GT_BUILD=$B GT_FAULT_TRIALS=$trials /usr/bin/python3 "$SRC/tests/faults/test_corrupt_files.py" >"$log/corrupt.log" 2>&1
rc=$?
tail -1 "$log/corrupt.log"
((rc == 0 || rc == 77)) || { grep -A8 "^FAIL" "$log/corrupt.log" | head -40; fail "corrupted files under ASan"; }
scan "$log"/cli.log "$log/corrupt.log" >/dev/null || fail "sanitizer report with bad input"
echo "   $((SECONDS - t0)) s"

if ((failures)); then
    echo "sanitize: $failures failed (logs in $log)"
    exit 1
fi
echo "sanitize: 0 failed, no sanitizer report (logs in $log)"
