#!/usr/bin/env bash
# bench_bpe.sh [BUILD_DIR] - gpt-bpe against SentencePiece (Debian `sentencepiece`), same
# machine, same corpora, one run: BPE training at vocab 2000 (gpt-bpe train vs spm_train
# --model_type=bpe) on tinyshakespeare and on a 2.5 MB mixed text, then single-thread
# encoding throughput (gpt-bpe encode vs spm_encode) on 20 MB; wall time (best of
# $REPEAT runs) and peak RSS from /usr/bin/time.
#   REPEAT=3 bench/bench_bpe.sh build
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(realpath "${1:-build}")
REPEAT=${REPEAT:-3}
DATA=${GT_DATA:-../shared/data}
for tool in spm_train spm_encode /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_bpe: $tool missing (scripts/setup.sh --tests installs sentencepiece and time)" >&2; exit 1; }
done
[[ -x $B/gpt-bpe ]] || { echo "bench_bpe: $B/gpt-bpe not built (scripts/build.sh)" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# Corpora: tinyshakespeare (1.1 MB) and 2.5 MB of tinyshakespeare + taylorswift + fortunes.
if [[ -f $DATA/tinyshakespeare.txt ]]; then
    cp "$DATA/tinyshakespeare.txt" "$W/shakespeare.txt"
else
    echo "bench_bpe: $DATA/tinyshakespeare.txt absent; using fortunes instead" >&2
    cat /usr/share/games/fortunes/*.u8 | head -c 1115394 > "$W/shakespeare.txt"
fi
/usr/bin/python3 "$(dirname "$0")/bench_bpe_corpus.py" "$W/mixed.txt" 2500000 "$W/shakespeare.txt" \
    "$DATA/taylorswift.txt" /usr/share/games/fortunes/*.u8
/usr/bin/python3 "$(dirname "$0")/bench_bpe_corpus.py" "$W/big.txt" 20000000 "$W/mixed.txt"

# best_of CMD...: runs CMD $REPEAT times; prints "wall_s cpu_s peak_rss_kb" of the fastest
# run (CPU = user + system, all threads: steadier than wall time on a shared machine).
best_of() {
    local best="" cpu="" rss="" t u s m
    for ((i = 0; i < REPEAT; i++)); do
        /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
        read -r t u s m <"$W/time"
        if [[ -z $best ]] || awk "BEGIN{exit !($t < $best)}"; then
            best=$t; rss=$m; cpu=$(awk "BEGIN{print $u + $s}")
        fi
    done
    echo "$best $cpu $rss"
}

# row NAME GPT_WALL GPT_CPU GPT_RSS SPM_WALL SPM_CPU SPM_RSS [MB: print throughput]
row() {
    awk -v n="$1" -v g="$2" -v gc="$3" -v gr="$4" -v s="$5" -v sc="$6" -v sr="$7" -v mb="${8:-0}" 'BEGIN {
        if (g < 0.01) g = 0.01; if (s < 0.01) s = 0.01; if (gc < 0.01) gc = 0.01; if (sc < 0.01) sc = 0.01
        if (mb > 0) printf "%-40s %7.1f MB/s %7.1f MB/s %6.1fx | %7.1f MB/s %7.1f MB/s %6.1fx | %5.0f %5.0f\n",
                           n, mb/g, mb/s, s/g, mb/gc, mb/sc, sc/gc, gr/1024, sr/1024
        else printf "%-40s %9.2f s %9.2f s %6.1fx | %9.2f s %9.2f s %6.1fx | %5.0f %5.0f\n",
                    n, g, s, s/g, gc, sc, sc/gc, gr/1024, sr/1024 }'
}

echo "gpt-bpe vs SentencePiece $(dpkg-query -W -f='${Version}' sentencepiece 2>/dev/null || true), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), best of $REPEAT runs, $(date -u +%FT%TZ)"
printf "%-40s %11s %11s %7s | %11s %11s %7s | %5s %5s\n" "" "gpt-bpe" "spm" "ratio" "gpt-bpe" "spm" "ratio" "RSS" "spm"
printf "%-40s %31s | %31s | %11s\n" "" "wall time" "CPU time (user+sys)" "peak MB"
for c in shakespeare mixed; do
    f=$W/$c.txt
    mb=$(stat -c %s "$f")
    read -r gt gc gm < <(best_of "$B/gpt-bpe" train --input "$f" --out "$W/v.h5" --vocab-size 2000 --force --quiet)
    read -r st sc sm < <(best_of spm_train --input="$f" --model_prefix="$W/spm_$c" --vocab_size=2000 --model_type=bpe \
        --minloglevel=2)
    row "train vocab 2000, $c ($((mb / 1000)) kB)" "$gt" "$gc" "$gm" "$st" "$sc" "$sm"
done
# Encoding: vocabularies trained on the mixed text, 20 MB input, one thread each.
"$B/gpt-bpe" train --input "$W/mixed.txt" --out "$W/v.h5" --vocab-size 2000 --force --quiet
mb=$(awk -v b="$(stat -c %s "$W/big.txt")" 'BEGIN{print b/1e6}')
read -r gt gc gm < <(best_of "$B/gpt-bpe" encode --vocab "$W/v.h5" --input "$W/big.txt" --out "$W/t.h5" --force --quiet --threads 1)
read -r st sc sm < <(best_of spm_encode --model="$W/spm_mixed.model" --output_format=id --input="$W/big.txt" --output="$W/ids.txt")
row "encode 1 thread, $(printf %.0f "$mb") MB, whole command" "$gt" "$gc" "$gm" "$st" "$sc" "$sm" "$mb"
read -r gt gc gm < <(best_of "$B/gpt-bpe" encode --vocab "$W/v.h5" --input "$W/big.txt" --out "$W/t.h5" --force --quiet --threads 2)
row "encode gpt-bpe --threads 2" "$gt" "$gc" "$gm" "$st" "$sc" "$sm" "$mb"
