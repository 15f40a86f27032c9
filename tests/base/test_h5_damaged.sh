#!/usr/bin/env bash
# Files on which libhdf5 1.10 itself hangs or crashes (tests/fuzz/known-hdf5) must still
# give one "damaged" message and exit 1, through io/h5util.c's open watchdog.
set -u
K="$GT_SRC/tests/fuzz/known-hdf5"
fail=0
check() {  # file expected-phrase
    local out rc
    out=$(GT_H5_OPEN_TIMEOUT=3 timeout 30 "$GT_BUILD/gpt-bpe" decode --vocab "$1" --ids 1 2>&1); rc=$?
    if [[ $rc != 1 || $out != *"$2"* || $(wc -l <<< "$out") != 1 ]]; then
        echo "FAIL: $1: rc=$rc output: $out"; fail=1
    else
        echo "ok: $(basename "$1"): $out"
    fi
}
check "$K/hangs/vocab-global-heap-loop.h5" "did not finish reading the file's metadata within 3 s"
check "$K/fuzz_h5load/vocab-global-heap-overread.h5" "HDF5 crashed reading the file's metadata"
exit $fail
