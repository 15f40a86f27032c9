#!/usr/bin/env bash
# test.sh - the whole test suite from a fresh machine: install, build, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh build
cd build
ctest --output-on-failure --timeout 900 "$@"
