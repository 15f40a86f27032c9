#!/usr/bin/env bash
# valgrind.sh - a short training under valgrind memcheck must be clean: no invalid read or
# write, no use of uninitialised values, no bad free (a tiny model, 1 rank, a few steps with
# a checkpoint, an attention record and a resume), and gpt-bpe train/encode/decode with full
# leak checking. Open MPI / OpenBLAS / HDF5 noise that is not ours is suppressed by
# tests/faults/valgrind.supp (each entry says why).
#
#   tests/faults/valgrind.sh         uses $GT_BUILD (default build/), about a minute
# Exit 0 clean, 1 on any memcheck error (the report is printed), 77 when valgrind or the
# tools are missing.
set -uo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
B=${GT_BUILD:-$SRC/build}
command -v valgrind >/dev/null || { echo "SKIP: valgrind not installed (scripts/setup.sh --tests)"; exit 77; }
for t in gpt-bpe gpt-train; do
    [[ -x $B/$t ]] || { echo "SKIP: $B/$t not built"; exit 77; }
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# valgrind does not emulate AVX-512: keep OpenBLAS on AVX2 kernels.
export OPENBLAS_CORETYPE=Haswell
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
VG=(valgrind -q --error-exitcode=99 --track-origins=yes --suppressions="$SRC/tests/faults/valgrind.supp"
    --gen-suppressions=all)
failures=0
check() {  # name rc log
    if (($2 == 99)) || grep -qE "^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|.*definitely lost)" "$3"; then
        echo "FAIL: $1: memcheck errors:"; grep -E "^==[0-9]+==" "$3" | head -60; failures=$((failures + 1))
    elif (($2 != 0)); then
        echo "FAIL: $1 exited $2:"; tail -20 "$3"; failures=$((failures + 1))
    else
        echo "ok: $1 clean under memcheck"
    fi
}

/usr/bin/python3 -c "import sys; sys.path.insert(0, '$SRC/tests/faults'); import faultlib; faultlib.make_corpus('$w/corpus.txt', 12000)"
t0=$SECONDS
"${VG[@]}" --leak-check=full --errors-for-leak-kinds=definite "$B/gpt-bpe" train --input "$w/corpus.txt" \
    --out "$w/vocab.h5" --vocab-size 300 >"$w/bpe-train.log" 2>&1
check "gpt-bpe train" $? "$w/bpe-train.log"
"${VG[@]}" --leak-check=full --errors-for-leak-kinds=definite "$B/gpt-bpe" encode --vocab "$w/vocab.h5" \
    --input "$w/corpus.txt" --out "$w/tokens.h5" >"$w/bpe-encode.log" 2>&1
check "gpt-bpe encode" $? "$w/bpe-encode.log"
"${VG[@]}" --leak-check=full --errors-for-leak-kinds=definite "$B/gpt-bpe" decode --vocab "$w/vocab.h5" \
    --tokens "$w/tokens.h5" --split val >"$w/bpe-decode.log" 2>&1
check "gpt-bpe decode" $? "$w/bpe-decode.log"

# Training: leaks not checked (Open MPI keeps its allocations until exit by design).
common=(--n-layer 1 --n-head 2 --n-embd 16 --block-size 8 --batch-size 2 --eval-every 2 --eval-batches 1
        --ckpt-every 2 --log-every 1 --attn-every 2 --dropout 0.1)
timeout 600 mpirun -np 1 "${VG[@]}" --leak-check=no "$B/gpt-train" --data "$w/tokens.h5" --out "$w/run" \
    --steps 3 "${common[@]}" >"$w/train.log" 2>&1
check "gpt-train (3 steps, checkpoint, attention)" $? "$w/train.log"
timeout 600 mpirun -np 1 "${VG[@]}" --leak-check=no "$B/gpt-train" --data "$w/tokens.h5" --out "$w/run" \
    --steps 4 --resume "${common[@]}" >"$w/resume.log" 2>&1
check "gpt-train --resume" $? "$w/resume.log"
if [[ -x $B/gpt-sample ]]; then
    "${VG[@]}" --leak-check=no "$B/gpt-sample" --checkpoint "$w/run" --prompt "The fox" --max-new-tokens 8 \
        --attn-out "$w/gen.h5" >"$w/sample.log" 2>&1
    check "gpt-sample" $? "$w/sample.log"
fi
echo "valgrind: $((SECONDS - t0)) s"
if ((failures)); then echo "valgrind: $failures failed"; exit 1; fi
echo "valgrind: 0 failed"
