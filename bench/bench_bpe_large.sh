#!/usr/bin/env bash
# bench_bpe_large.sh [BUILD_DIR] [CORPUS_DIR] - BPE training on a corpus of many files: gpt-bpe
# train --vocab-size 32000 --input CORPUS_DIR against SentencePiece's spm_train
# --model_type=bpe --vocab_size=32000 on the same bytes, one run each (each takes minutes):
# wall time, CPU time (user + sys) and peak RSS from /usr/bin/time (docs/benchmarks.md).
#
# CORPUS_DIR (default /tmp/gt-debian-corpus) is built by bench/make_debian_corpus.py when absent:
# CORPUS_MB (default 1000) megabytes of man pages, /usr/share/doc, Python, C and other sources.
# spm_train reads files, not directories, so it gets the corpus's files concatenated in
# gpt-bpe's reading order (the same bytes; the concatenation is not timed). Its settings are its
# defaults but --input_sentence_size=0 (every line: no sampling) and --num_threads=$(nproc);
# its default --max_sentence_length=4192 skips longer lines, which gpt-bpe keeps.
# SPM_MAX_S (default 2400) bounds spm_train's wall time: past it spm_train is stopped and its
# row says so, with the time and memory it had used (on the 1 GB corpus it needs longer).
#   bench/bench_bpe_large.sh build /tmp/gt-debian-corpus
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(realpath "${1:-build}")
C=${2:-/tmp/gt-debian-corpus}
MB=${CORPUS_MB:-1000}
for tool in spm_train /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_bpe_large: $tool missing (scripts/setup.sh --tests installs sentencepiece and time)" >&2; exit 1; }
done
[[ -x $B/gpt-bpe ]] || { echo "bench_bpe_large: $B/gpt-bpe not built (scripts/build.sh)" >&2; exit 1; }
[[ -d $C ]] || /usr/bin/python3 bench/make_debian_corpus.py "$C" --mb "$MB"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
files=$(find -L "$C" -type f | wc -l)
bytes=$(find -L "$C" -type f -print0 | du -cb --files0-from=- | tail -1 | cut -f1)

# timed NAME [MAX_S] CMD...: one run (stopped after MAX_S seconds when given); prints
# "NAME wall_s cpu_s peak_MB done|stopped" and keeps stderr in $W/NAME.err
timed() {
    local name=$1 t u s m rc=0 end=done
    shift
    local lim=()
    [[ $1 =~ ^[0-9]+$ ]] && { lim=(timeout -s INT "$1"); shift; }
    "${lim[@]}" /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" >/dev/null 2>"$W/$name.err" || rc=$?
    if ((rc == 124)); then end=stopped; elif ((rc != 0)); then cat "$W/$name.err" >&2; exit 1; fi
    read -r t u s m < <(tail -1 "$W/time")
    awk -v n="$name" -v t="$t" -v u="$u" -v s="$s" -v m="$m" -v e="$end" 'BEGIN { printf "%s %.2f %.2f %.0f %s\n", n, t, u + s, m / 1024, e }'
}

echo "BPE training, vocab 32000, on $C: $files files, $bytes bytes; $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')),"
echo "load $(cut -d' ' -f1 /proc/loadavg), SentencePiece $(dpkg-query -W -f='${Version}' sentencepiece 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
res=()
res+=("$(timed gpt-bpe-1-thread "$B/gpt-bpe" train --input "$C" --out "$W/v1.h5" --vocab-size 32000)")
res+=("$(timed gpt-bpe-$(nproc)-threads "$B/gpt-bpe" train --input "$C" --out "$W/v2.h5" --vocab-size 32000 --threads "$(nproc)")")
find -L "$C" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat >"$W/all.txt"
res+=("$(timed spm_train "${SPM_MAX_S:-2400}" spm_train --input="$W/all.txt" --model_prefix="$W/spm" --vocab_size=32000 --model_type=bpe \
    --input_sentence_size=0 --num_threads="$(nproc)" --minloglevel=1)")
rm -f "$W/all.txt"
spm_wall=$(echo "${res[2]}" | cut -d' ' -f2)
spm_cpu=$(echo "${res[2]}" | cut -d' ' -f3)
spm_end=$(echo "${res[2]}" | cut -d' ' -f5)
[[ $spm_end == stopped ]] && at_least="at least " || at_least=""
printf "%-24s %10s %10s %10s %14s\n" "" "wall s" "CPU s" "peak MB" "spm / this"
for r in "${res[@]}"; do
    read -r n t c m e <<<"$r"
    awk -v n="$n" -v t="$t" -v c="$c" -v m="$m" -v st="$spm_wall" -v sc="$spm_cpu" -v al="$at_least" -v e="$e" \
        'BEGIN { printf "%-24s %10.1f %10.1f %10.0f %s%6.1fx wall %5.1fx CPU%s\n", n, t, c, m, al, st / t, sc / c,
                 e == "stopped" ? "  (stopped unfinished: SPM_MAX_S)" : "" }'
done
grep -h "distinct chunks\|merges in" "$W/gpt-bpe-1-thread.err" | sed 's/^/  /'
