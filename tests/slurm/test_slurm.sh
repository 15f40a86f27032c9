#!/usr/bin/env bash
# test_slurm.sh - the job scripts in jobs/ on a real throw-away single-host Slurm cluster
# (munged, slurmctld and two slurmd from Debian's slurm-wlm + munge, via
# tests/slurm/local-slurm.sh: nodes node1 and node2, 8 CPUs each, on this host's cores).
#
# Submits the real scripts unchanged with small settings and checks:
#   - tokenize.sbatch trains a vocabulary and encodes a corpus;
#   - train.sbatch with 8 tasks on the 2 cores completes and writes its checkpoint, on one
#     node (srun) and across both (mpirun), with bit-identical weights;
#   - a job preempted with `scancel --signal=USR1 --batch` checkpoints, requeues itself and
#     ends at the same final step with bit-identical weights as an uninterrupted job
#     (once launched with srun --mpi=pmix, once with mpirun);
#   - a job whose data is missing fails with gpt-train's message in its log and exit code 1;
#   - sweep.sbatch (job array) trains one run per value; sample.sbatch samples a checkpoint;
#   - the cluster stops cleanly afterwards (no munged/slurmctld/slurmd/slurmstepd left).
# Exit 77 (skip) only when Slurm cannot run here: not root, or slurm-wlm/munge missing.
#
# Environment: GT_BUILD (binaries), GT_SRC (checkout), GT_KEEP=1 keeps the cluster
# directory for a post-mortem, LOCAL_SLURM_PORT forces the port (default: first free 68xx).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${GT_SRC:-$(cd "$HERE/../.." && pwd)}
BUILD=${GT_BUILD:-$SRC/build}
PY=${GT_PYTHON:-/usr/bin/python3}
LS=$HERE/local-slurm.sh
T0=$(date +%s)

say()  { echo "[test_slurm +$(($(date +%s) - T0))s] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
ok()   { echo "ok: $*"; }
fatal() { echo "FAIL: $*"; exit 1; }

# ---------- can Slurm run here? ----------
[[ $(id -u) == 0 ]] || skip "needs root to start munged, slurmctld and slurmd (run as root or with sudo)"
for c in munged munge unmunge slurmctld slurmd sbatch scontrol scancel squeue sinfo srun; do
    command -v "$c" >/dev/null || skip "$c not installed: scripts/setup.sh --tests installs slurm-wlm and munge"
done
command -v mpirun >/dev/null || fatal "mpirun not found (openmpi-bin is a build dependency)"
for b in gpt-train gpt-bpe gpt-sample; do
    [[ -x $BUILD/$b ]] || fatal "$BUILD/$b not built (GT_BUILD=$BUILD)"
done

# jobs inherit this environment (sbatch --export=ALL): Open MPI as root, one thread per rank,
# binaries from GT_BUILD; nothing from an outer Slurm job may leak into ours
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SLURM|SBATCH|SALLOC|SRUN)_' || true)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# Two slurmd on one host (our fake 2-node cluster): Open MPI's shared-memory transport is
# not reliable there (a 2-rank job segfaulted in mca_btl_vader once; ../shared/notes/slurm.md
# saw the same), so every job talks TCP, as ranks on different real nodes would
export OMPI_MCA_btl=self,tcp
export GT_BUILD=$BUILD
unset GPT_TRAIN_BIN GPT_BPE_BIN GPT_SAMPLE_BIN GPT_TRAIN_ARGS GPT_SAMPLE_ARGS LAUNCHER LAUNCHER_ARGS \
      SRUN_MPI DATA RUN CONFIG INPUT TOKENS VOCAB REUSE_VOCAB VOCAB_SIZE PATTERN VAL_FRACTION \
      BPE_TRAIN_ARGS BPE_ENCODE_ARGS CKPT PROMPT PROMPT_FILE MAX_NEW_TOKENS TEMPERATURE TOP_K TOP_P \
      SEED ATTN_DIR SWEEP_PARAM SWEEP_VALUES SWEEP_DIR TRAIN_SBATCH

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${LOCAL_SLURM_PORT:-} ]]; then
    for ((p = 6850; p < 6900; p += 3)); do   # slurmctld, then one slurmd per node
        if ! port_busy "$p" && ! port_busy $((p + 1)) && ! port_busy $((p + 2)); then LOCAL_SLURM_PORT=$p; break; fi
    done
    [[ -n ${LOCAL_SLURM_PORT:-} ]] || fatal "no 3 free ports in 6850-6899 for slurmctld and 2 slurmd"
fi
export LOCAL_SLURM_PORT LOCAL_SLURM_CPUS=8 LOCAL_SLURM_NODES=2 LOCAL_SLURM_TIMEOUT=60
unset LOCAL_SLURM_PARTITIONS LOCAL_SLURM_MPI LOCAL_SLURM_GPUS

# short path under /tmp: munge's socket path has a length limit
DIR=$(mktemp -d /tmp/gts.XXXXXX) || fatal "mktemp failed"
W=$DIR/work
mkdir -p "$W"
export SLURM_CONF=$DIR/etc/slurm.conf

# processes of our cluster still alive: daemons whose command line names DIR, job steps
# whose working directory is inside it
our_procs() {
    local p comm
    for p in /proc/[0-9]*; do
        comm=$(cat "$p/comm" 2>/dev/null) || continue
        case $comm in munged|slurmctld|slurmd|slurmstepd) ;; *) continue ;; esac
        if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -qF "$DIR" ||
           [[ $(readlink "$p/cwd" 2>/dev/null) == "$DIR"/* ]]; then
            [[ $(awk '{print $3}' "$p/stat" 2>/dev/null) == Z ]] || echo "${p#/proc/} $comm"
        fi
    done
}
STOPPED=0 WATCHDOG="" PP="" PM=""
cleanup() {
    local rc=$? p
    for p in $WATCHDOG $PP $PM; do kill "$p" 2>/dev/null; done   # our own background helpers
    if ((!STOPPED)); then "$LS" stop "$DIR" >/dev/null 2>&1 || true; fi
    if ((rc != 0)) || [[ ${GT_KEEP:-0} == 1 ]]; then
        echo "cluster directory kept for inspection: $DIR (logs in $DIR/log, jobs in $W)"
    else
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# ctest's TIMEOUT kills with SIGKILL and no trap runs, but the daemons would outlive us: stop
# the cluster ourselves well before (its client commands then fail and the test ends)
DEADLINE=${GT_SLURM_DEADLINE:-480}
(
    for ((i = 0; i < DEADLINE * 2; i++)); do sleep 0.5; done
    echo "FAIL: still running after ${DEADLINE}s: stopping the cluster"
    "$LS" stop "$DIR" >/dev/null 2>&1
    kill -TERM $$
) &
WATCHDOG=$!

show_log() {  # file: the job's log, for a failure report
    echo "----- $1"; if [[ -f $1 ]]; then tail -n 40 "$1"; else echo "(missing)"; fi; echo "-----"
}
job_field() { scontrol show job -o "$1" 2>/dev/null | grep -o " $2=[^ ]*" | head -n 1 | cut -d= -f2; }
wait_jobs() { LOCAL_SLURM_WAIT_TIMEOUT=${WAIT_TIMEOUT:-150} "$LS" wait "$@"; }
# submit from the work directory so relative paths and the default --output land there
submit() { (cd "$W" && sbatch --parsable "$@") | cut -d';' -f1; }
h5attr() {  # file object attr
    "$PY" - "$@" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    v = f[sys.argv[2]].attrs[sys.argv[3]]
    print(v.decode() if isinstance(v, bytes) else v)
EOF
}
same_weights() {  # a.h5 b.h5 -> "N tensors" when step, world_size, /model and Adam moments match bit for bit
    "$PY" - "$1" "$2" <<'EOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
bad = []
for k in ("step", "world_size"):
    if a.attrs[k] != b.attrs[k]:
        bad.append(f"{k} {a.attrs[k]} vs {b.attrs[k]}")
for grp in ("model", "optimizer/m", "optimizer/v"):
    if grp not in a:
        continue
    ka, kb = sorted(a[grp].keys()), sorted(b[grp].keys())
    if ka != kb:
        bad.append(f"{grp}: different names")
        continue
    for k in ka:
        x, y = a[grp][k][()], b[grp][k][()]
        if x.shape != y.shape or x.tobytes() != y.tobytes():
            bad.append(f"{grp}/{k} max|diff|={np.abs(x.astype(np.float64) - y).max():.3g}")
print(f"{len(a['model'])} tensors" if not bad else "DIFFERENT: " + "; ".join(bad[:5]))
EOF
}
latest() { local n; n=$(head -n 1 "$1/latest" 2>/dev/null | tr -d '[:space:]'); [[ -n $n ]] && echo "$1/${n##*/}"; }

# ---------- cluster ----------
say "starting a cluster in $DIR (ports $LOCAL_SLURM_PORT-$((LOCAL_SLURM_PORT + 2)), 2 nodes x 8 CPUs on $(nproc --all) cores)"
"$LS" start "$DIR" > "$W/start.log" 2>&1 || { cat "$W/start.log"; fatal "the local Slurm cluster did not start"; }
sinfo -h -o '%P %D %c %T' | sed 's/^/  sinfo: /'

# ---------- corpus and tokenizer job ----------
CORPUS=$W/corpus.txt
if [[ -r $SRC/../shared/data/taylorswift.txt ]]; then
    head -c 40000 "$SRC/../shared/data/taylorswift.txt" > "$CORPUS"
    say "corpus: first 40 kB of ../shared/data/taylorswift.txt"
elif compgen -G "/usr/share/games/fortunes/*.u8" >/dev/null; then
    cat /usr/share/games/fortunes/*.u8 | head -c 40000 > "$CORPUS"
    say "corpus: 40 kB of Debian's fortunes"
else
    "$PY" - "$CORPUS" <<'EOF'
import random, sys
random.seed(7)
words = "the a cat dog sat on mat ran far away and then we saw it in town by night".split()
with open(sys.argv[1], "w") as f:
    for _ in range(4000):
        f.write(" ".join(random.choice(words) for _ in range(random.randint(4, 12))).capitalize() + ".\n")
EOF
    say "corpus: generated text (no ../shared/data, no fortunes)"
fi

JT=$(VOCAB_SIZE=320 VAL_FRACTION=0.1 submit "$SRC/jobs/tokenize.sbatch" "$CORPUS" data/tokens.h5)
say "tokenize job $JT"
wait_jobs "$JT" || { show_log "$W/gpt-bpe-$JT.out"; fatal "tokenize.sbatch failed"; }
[[ -f $W/data/tokens.h5 && -f $W/data/vocab.h5 ]] || { show_log "$W/gpt-bpe-$JT.out"; fatal "tokenize.sbatch wrote no data/tokens.h5 + data/vocab.h5"; }
ok "tokenize.sbatch: data/vocab.h5 + data/tokens.h5 ($(h5attr "$W/data/vocab.h5" /tokenizer vocab_size) tokens)"
export DATA=$W/data/tokens.h5

# tiny models; the preempted ones also sleep after each step (below) to be caught mid-run
MODEL="--n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --seed 1234 --log-every 1 --eval-every 1000 --eval-batches 1"
MODEL_PRE="--n-layer 2 --n-head 2 --n-embd 64 --block-size 64 --batch-size 8 --seed 1234 --log-every 1 --eval-every 1000 --eval-batches 1"

# ---------- 8 tasks on 2 cores: one node (srun), and two nodes (mpirun) ----------
J8=$(GPT_TRAIN_ARGS="$MODEL --steps 6" submit --job-name=t8 --nodes=1 --ntasks-per-node=8 --cpus-per-task=1 \
     "$SRC/jobs/train.sbatch" --out runs/eight)
J8N=$(LAUNCHER=mpirun GPT_TRAIN_ARGS="$MODEL --steps 6" \
      submit --job-name=t8n --nodes=2 --ntasks-per-node=4 "$SRC/jobs/train.sbatch" --out runs/eight-2n)
say "8-task jobs $J8 (1 node, srun) and $J8N (2 nodes x 4, mpirun)"
wait_jobs "$J8" "$J8N"
for pair in "$J8:t8:runs/eight:1 node, srun" "$J8N:t8n:runs/eight-2n:2 nodes x 4 tasks, mpirun"; do
    IFS=: read -r j name run what <<< "$pair"
    c=$(latest "$W/$run")
    if [[ $(job_field "$j" JobState) == COMPLETED && -n $c && -f $c && $(h5attr "$c" / step) == 6 && $(h5attr "$c" / world_size) == 8 ]]; then
        ok "8-task train.sbatch job ($what) completed: $run/$(basename "$c"), step 6, world_size 8"
    else
        show_log "$W/$name-$j.out"; fail "8-task job ($what): $(job_field "$j" JobState), no checkpoint at step 6 with world_size 8 in $run"
    fi
done
if [[ -f $W/runs/eight/DONE && -f $W/runs/eight-2n/DONE ]]; then
    cmp=$(same_weights "$(latest "$W/runs/eight")" "$(latest "$W/runs/eight-2n")")
    if [[ $cmp == DIFFERENT* || -z $cmp ]]; then fail "8 ranks on 1 node vs 2 nodes: weights differ: $cmp"
    else ok "8 ranks on 1 node (srun) and on 2 nodes (mpirun): bit-identical weights ($cmp)"; fi
fi

# ---------- preemption: uninterrupted reference vs preempted (srun and mpirun) ----------
STEPS=80
PRE_AT=5
JR=$(GPT_TRAIN_ARGS="$MODEL_PRE --steps $STEPS" submit --job-name=ref -n 2 "$SRC/jobs/train.sbatch" --out runs/ref)
# The preempted jobs sleep 50 ms after each step (a test hook of gpt-train, src/train/faults.h):
# on an idle fast machine a step takes ~6 ms and the run would end before the signal arrives.
JP=$(GT_FAULT_STEP_SLEEP_MS=50 GPT_TRAIN_ARGS="$MODEL_PRE --steps $STEPS" submit --job-name=pre -n 2 "$SRC/jobs/train.sbatch" --out runs/pre)
JM=$(GT_FAULT_STEP_SLEEP_MS=50 LAUNCHER=mpirun GPT_TRAIN_ARGS="$MODEL_PRE --steps $STEPS" submit --job-name=prm -n 2 "$SRC/jobs/train.sbatch" --out runs/prm)
JX=$(DATA=$W/data/no-such-tokens.h5 GPT_TRAIN_ARGS="$MODEL --steps 5" submit --job-name=miss -n 2 "$SRC/jobs/train.sbatch" --out runs/miss)
say "reference $JR, preempted jobs $JP (srun) and $JM (mpirun), missing-data job $JX"

progress() {  # run dir -> last step in metrics.csv (0 if none)
    local s
    s=$(awk -F, 'NR > 1 && $1 ~ /^[0-9]+$/ {s = $1} END {print s + 0}' "$1/metrics.csv" 2>/dev/null)
    echo "${s:-0}"
}
preempt() {  # job run-dir: USR1 to the batch shell once training is past PRE_AT, then restart now
    local j=$1 run=$2 i st
    for ((i = 0; i < 1200; i++)); do
        (($(progress "$run") >= PRE_AT)) && break
        st=$(job_field "$j" JobState)
        [[ $st == RUNNING || $st == PENDING ]] || { echo "job $j is $st before reaching step $PRE_AT"; return 1; }
        sleep 0.1
    done
    (($(progress "$run") >= PRE_AT)) || { echo "job $j did not reach step $PRE_AT in 120 s"; return 1; }
    scancel --signal=USR1 --batch "$j" || return 1
    say "sent USR1 to job $j at step $(progress "$run")"
    # A requeued job waits 120 s unless told otherwise. Not at once, though: slurmd refuses
    # ("Job credential revoked") a restart within the same second as the requeue's kill.
    for ((i = 0; i < 600; i++)); do
        if [[ $(job_field "$j" Restarts) -ge 1 && $(job_field "$j" JobState) == PENDING ]]; then
            sleep 2
            scontrol update jobid="$j" StartTime=now && return 0
        fi
        st=$(job_field "$j" JobState)
        [[ $st == COMPLETED || $st == FAILED || $st == CANCELLED ]] && { echo "job $j ended ($st) instead of requeueing"; return 1; }
        sleep 0.1
    done
    echo "job $j was not requeued within 60 s"; return 1
}
PRE_OK=1   # both at once, so neither runs to its end while we handle the other
preempt "$JP" "$W/runs/pre" > "$W/preempt-$JP.txt" 2>&1 & PP=$!
preempt "$JM" "$W/runs/prm" > "$W/preempt-$JM.txt" 2>&1 & PM=$!
wait "$PP" || { fail "srun job $JP could not be preempted"; PRE_OK=0; }
wait "$PM" || { fail "mpirun job $JM could not be preempted"; PRE_OK=0; }
cat "$W/preempt-$JP.txt" "$W/preempt-$JM.txt"

# missing data: gpt-train's own message in the log, exit code 1, no requeue
wait_jobs "$JX" >/dev/null
st=$(job_field "$JX" JobState); ec=$(job_field "$JX" ExitCode)
if [[ $st == FAILED && $ec == 1:0 ]] && grep -v '^\[train.sbatch' "$W/miss-$JX.out" | grep -q 'no-such-tokens.h5'; then
    ok "missing data: job FAILED with exit code 1, log: $(grep -v '^\[train.sbatch' "$W/miss-$JX.out" | grep -m1 'no-such-tokens.h5')"
else
    show_log "$W/miss-$JX.out"; fail "missing-data job: state $st exit $ec (want FAILED 1:0 and gpt-train's message naming the file)"
fi

wait_jobs "$JR" "$JP" "$JM"
REF=$(latest "$W/runs/ref")
if [[ -z $REF || $(h5attr "$REF" / step) != "$STEPS" ]]; then
    show_log "$W/ref-$JR.out"; fail "reference job ended without a checkpoint at step $STEPS"; REF=""
fi
check_preempted() {  # name job run-dir log
    local name=$1 j=$2 run=$3 logf=$4 c cmp
    [[ $(job_field "$j" JobState) == COMPLETED ]] || { show_log "$logf"; fail "$name job $j: $(job_field "$j" JobState) $(job_field "$j" ExitCode)"; return; }
    [[ $(job_field "$j" Restarts) == 1 ]] || { show_log "$logf"; fail "$name job $j: Restarts=$(job_field "$j" Restarts), want 1"; return; }
    grep -q 'requeueing job' "$logf" && grep -q 'resuming from' "$logf" ||
        { show_log "$logf"; fail "$name job $j: log lacks the requeue and resume lines"; return; }
    c=$(latest "$run")
    [[ -n $c && $(h5attr "$c" / step) == "$STEPS" && -f $run/DONE ]] ||
        { show_log "$logf"; fail "$name job $j: did not end at step $STEPS with a DONE marker"; return; }
    [[ -n $REF ]] || return
    cmp=$(same_weights "$REF" "$c")
    if [[ $cmp == DIFFERENT* || -z $cmp ]]; then fail "$name job $j: final weights differ from the uninterrupted run: $cmp"
    else ok "$name: $(grep -m1 -o "stopped at step [0-9]*" "$logf"), requeued, resumed, step $STEPS, weights bit-identical to the uninterrupted run ($cmp)"; fi
}
if ((PRE_OK)); then
    check_preempted "srun --mpi=pmix" "$JP" "$W/runs/pre" "$W/pre-$JP.out"
    check_preempted "mpirun" "$JM" "$W/runs/prm" "$W/prm-$JM.out"
fi
# a job that finished must not requeue
if [[ $(job_field "$JR" Restarts) == 0 && -f $W/runs/ref/DONE ]]; then ok "the finished reference job did not requeue"
else fail "reference job: Restarts=$(job_field "$JR" Restarts), DONE marker $([[ -f $W/runs/ref/DONE ]] && echo present || echo missing)"; fi

# ---------- job array sweep and sampling ----------
JA=$(GPT_TRAIN_ARGS="$MODEL --steps 4" SWEEP_DIR=sweep TRAIN_SBATCH=$SRC/jobs/train.sbatch \
     submit --array=0-1 -n 1 "$SRC/jobs/sweep.sbatch" lr 0.001 0.003)
JS=$(CKPT=$W/runs/ref MAX_NEW_TOKENS=16 ATTN_DIR=gen submit "$SRC/jobs/sample.sbatch" "Love" "The night")
say "sweep array $JA, sample job $JS"
if wait_jobs "${JA}_0" "${JA}_1"; then
    good=1
    for v in 0.001 0.003; do
        c=$(latest "$W/sweep/lr-$v")
        if [[ -z $c ]] || ! "$PY" -c "import sys,h5py; f=h5py.File(sys.argv[1]); sys.exit(not(f.attrs['step']==4 and abs(float(f['config'].attrs['lr'])-$v)<1e-9))" "$c"; then
            good=0; fail "sweep run lr-$v: no checkpoint at step 4 with lr=$v"
        fi
    done
    ((good)) && ok "sweep.sbatch: array tasks trained sweep/lr-0.001 and sweep/lr-0.003 with their lr"
else
    show_log "$W/gpt-sweep-${JA}_0.out"; show_log "$W/gpt-sweep-${JA}_1.out"; fail "sweep array job failed"
fi
gen_ok() {  # generation file with 16 generated tokens
    "$PY" -c "import sys,h5py; f=h5py.File(sys.argv[1]); sys.exit(not(f.attrs['format'] in ('gpt-train/generation', b'gpt-train/generation') and len(f['token_ids']) - int(f.attrs['n_prompt']) == 16))" "$1" 2>/dev/null
}
if wait_jobs "$JS" && [[ $(grep -c '^=== sample' "$W/gpt-sample-$JS.out") == 2 ]] && gen_ok "$W/gen/gen-0.h5" && gen_ok "$W/gen/gen-1.h5"; then
    ok "sample.sbatch: 2 prompts sampled, 16 tokens each, attention in gen/gen-0.h5 and gen/gen-1.h5"
else
    show_log "$W/gpt-sample-$JS.out"; fail "sample.sbatch job failed"
fi

# ---------- the cluster stops cleanly ----------
say "stopping the cluster"
"$LS" stop "$DIR" > "$W/stop.log" 2>&1 || { cat "$W/stop.log"; fail "local-slurm.sh stop failed"; }
STOPPED=1
left=""
for ((i = 0; i < 50; i++)); do left=$(our_procs); [[ -z $left ]] && break; sleep 0.1; done
if [[ -z $left ]]; then ok "cluster stopped: no munged, slurmctld, slurmd or slurmstepd left"
else fail "processes left after stop: $(echo $left)"; fi

say "done: $FAILS failure(s)"
((FAILS == 0))
