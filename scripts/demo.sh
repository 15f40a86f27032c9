#!/usr/bin/env bash
# demo.sh - the main job, from a fresh Debian 12 checkout to a trained model and its pictures:
# installs what is missing, builds, makes a corpus from Debian's fortunes package (no
# download), trains a small GPT-2 on 4 MPI ranks for a minute or two (tokenizing the text
# first: --data corpus.txt), streams a sample from the final checkpoint, draws the
# attention heatmaps and the loss curve into demo-run/figs/, and writes the attention
# explorer, demo-run/explorer.html (one self-contained page: open it in a browser).
#
#   scripts/demo.sh            # everything lands in demo-run/ (replaced if it exists)
#   DEMO_STEPS=300 DEMO_NP=2 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=demo-run
STEPS=${DEMO_STEPS:-600}
NP=${DEMO_NP:-4}

scripts/setup.sh
scripts/build.sh build

# Open MPI refuses to run as root unless told; containers and fresh VMs often are root.
if [[ $(id -u) == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

rm -rf "$RUN"
mkdir -p "$RUN"
# The corpus: fortune cookies, quotations and riddles, without the '%' separator lines.
FORTUNES=/usr/share/games/fortunes
for f in fortunes literature riddles people wisdom science humorists love platitudes songs-poems; do
    [[ -f $FORTUNES/$f ]] && grep -v '^%$' "$FORTUNES/$f"
done | iconv -f utf-8 -t utf-8 -c >"$RUN/corpus.txt"
echo "demo: corpus $RUN/corpus.txt: $(wc -c <"$RUN/corpus.txt") bytes from $FORTUNES"

# Train: rank 0 tokenizes the text into $RUN/vocab.h5 and $RUN/tokens.h5, then all ranks
# train; the probe's attention is recorded every 20 steps into $RUN/attention.h5.
mpirun --oversubscribe -np "$NP" build/gpt-train --data "$RUN/corpus.txt" --out "$RUN" \
    --vocab-size 2000 --block-size 32 --batch-size 16 --dropout 0.1 --lr 2e-3 --steps "$STEPS" \
    --eval-every 100 --eval-batches 8 --log-every 50 --ckpt-every 200 \
    --attn-every 20 --attn-prompt "The best way to predict the future is to"

# Sample from the final checkpoint (RUN means its latest), streamed token by token, and keep
# the generation's attention for the heatmaps.
echo "demo: sampling from $RUN"
build/gpt-sample --checkpoint "$RUN" --prompt "A man who" --max-new-tokens 60 --temperature 0.8 \
    --top-k 40 --seed 1337 --attn-out "$RUN/gen.h5"
echo

# Heatmaps per layer and head, over training steps and generated tokens, the loss curve,
# and the explorer: training, reading and generation views in one offline HTML file.
/usr/bin/python3 io/python/gpt_viz.py "$RUN" --out "$RUN/figs" --gen "$RUN/gen.h5" --html "$RUN/explorer.html"
echo "demo: done. Checkpoints, metrics.csv and train.log in $RUN/, pictures in $RUN/figs/,"
echo "      the attention explorer in $RUN/explorer.html"
