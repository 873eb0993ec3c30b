#!/usr/bin/env bash
# README command 2: install dependencies, build, run the whole ctest suite. Non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mkdir -p "${BUILD_DIR:-build}/ompi-tmp"
export TMPDIR="$PWD/${BUILD_DIR:-build}/ompi-tmp"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" "$@"
