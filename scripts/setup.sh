#!/usr/bin/env bash
# setup.sh - installs the Debian packages gpt-train needs, only those missing.
#   scripts/setup.sh           build + run dependencies (and the demo corpus)
#   scripts/setup.sh --tests   also what the test suite uses (PyTorch, python3-regex, clang + libFuzzer,
#                              SentencePiece for the benchmark, Slurm + munge, Chromium + node and
#                              puppeteer-core for the explorer's browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libopenblas-dev
      libhdf5-dev hdf5-tools libpcre2-dev libdnnl-dev python3-h5py python3-numpy python3-matplotlib
      fortunes)
if [[ ${1:-} == --tests ]]; then
    PKGS+=(python3-torch python3-regex sentencepiece slurm-wlm munge valgrind)
    # fuzzing (tests/fuzz): clang's libFuzzer runtime, and LLVM's OpenMP for clang builds
    PKGS+=(clang libclang-rt-14-dev libomp-dev)
    # benchmarks (bench/bench_bpe.sh): /usr/bin/time for wall time and peak RSS
    PKGS+=(time)
    # the attention explorer's browser tests (tests/browser): Debian's Chromium, driven by
    # puppeteer-core under node (a node already on PATH, e.g. from NodeSource, is kept)
    PKGS+=(chromium)
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi
fi

# puppeteer-core, pinned by tests/browser/package-lock.json; it downloads no browser. Installed
# again only when the lock file changed (its SHA-256 is kept in node_modules).
browser_deps() {
    [[ ${1:-} == --tests ]] || return 0
    local dir=tests/browser stamp=tests/browser/node_modules/.lock-sha256 want
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return 0; fi
    echo "setup: npm ci in $dir (puppeteer-core)"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" >"$stamp"
}
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if ((${#missing[@]} == 0)); then echo "setup: all ${#PKGS[@]} packages present"; browser_deps "${1:-}"; exit 0; fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
echo "setup: done"
browser_deps "${1:-}"
