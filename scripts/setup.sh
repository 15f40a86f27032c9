#!/usr/bin/env bash
# setup.sh - installs the Debian packages gpt-train needs, only those missing.
#   scripts/setup.sh           build + run dependencies (and the demo corpus)
#   scripts/setup.sh --tests   also what the test suite uses (PyTorch, python3-regex, clang + libFuzzer,
#                              SentencePiece for the benchmark, Slurm + munge)
set -euo pipefail
PKGS=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libopenblas-dev
      libhdf5-dev hdf5-tools libpcre2-dev python3-h5py python3-numpy python3-matplotlib
      fortunes)
if [[ ${1:-} == --tests ]]; then
    PKGS+=(python3-torch python3-regex sentencepiece slurm-wlm munge valgrind)
    # fuzzing (tests/fuzz): clang's libFuzzer runtime, and LLVM's OpenMP for clang builds
    PKGS+=(clang libclang-rt-14-dev libomp-dev)
    # benchmarks (bench/bench_bpe.sh): /usr/bin/time for wall time and peak RSS
    PKGS+=(time)
fi
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if ((${#missing[@]} == 0)); then echo "setup: all ${#PKGS[@]} packages present"; exit 0; fi
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
