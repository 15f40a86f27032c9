#!/usr/bin/env bash
# crash_soak.sh - the long version of the crash and corruption tests: many more kill -9
# trials of a 2-rank training (each followed by --resume and a bit-for-bit comparison with an
# uninterrupted run), over several seeds, then many more damaged files.
#
#   tests/faults/crash_soak.sh [TRIALS_PER_SEED] [SEEDS]     default 60 trials x 5 seeds
#   GT_BUILD=build-asan tests/faults/crash_soak.sh 20 2      the same on sanitized tools
#
# About 2.5 s per trial on 2 cores. Exit 0 when every trial passed; the first failing seed's
# output is printed (rerun one with GT_CRASH_SEED=S GT_CRASH_TRIALS=N test_crash_resume.py;
# GT_KEEP_TMP=1 keeps the run directories).
set -uo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export GT_BUILD=${GT_BUILD:-$SRC/build}
TRIALS=${1:-60}
SEEDS=${2:-5}
failed=0
for ((s = 1; s <= SEEDS; s++)); do
    seed=$((1000 + s))
    log=$(mktemp)
    t0=$SECONDS
    GT_CRASH_SEED=$seed GT_CRASH_TRIALS=$TRIALS /usr/bin/python3 "$SRC/tests/faults/test_crash_resume.py" >"$log" 2>&1
    rc=$?
    echo "crash seed $seed: $(tail -1 "$log") ($((SECONDS - t0)) s; $(grep '^kills:' "$log"))"
    if ((rc != 0 && rc != 77)); then failed=1; grep -A6 '^FAIL' "$log" | head -60; fi
    rm -f "$log"
    GT_FAULT_ALLOW_EXIT2=${GT_FAULT_ALLOW_EXIT2:-} GT_FAULT_SEED=$seed GT_FAULT_TRIALS=$((TRIALS * 2)) /usr/bin/python3 "$SRC/tests/faults/test_corrupt_files.py" \
        >"$log" 2>&1
    rc=$?
    echo "corrupt seed $seed: $(tail -1 "$log")"
    if ((rc != 0 && rc != 77)); then failed=1; grep -A6 '^FAIL' "$log" | head -60; fi
    rm -f "$log"
done
exit $failed
