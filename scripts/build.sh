#!/usr/bin/env bash
# build.sh [BUILD_DIR] - configure and build (Release) into BUILD_DIR (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j "$(nproc)"
