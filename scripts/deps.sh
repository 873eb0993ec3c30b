#!/usr/bin/env bash
# Installs the Debian 12 packages safeclip needs, only when something is missing (idempotent).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
      openmpi-bin libopenmpi-dev libboost-mpi-dev libboost-serialization-dev
      libhdf5-openmpi-dev libcfitsio-dev libspdlog-dev libfmt-dev
      libgtest-dev googletest libcli11-dev nlohmann-json3-dev libtoml11-dev
      libcairo2-dev zlib1g-dev libisal-dev python3-numpy python3-astropy
      clang libclang-rt-14-dev  # clang + libFuzzer: scripts/fuzz.sh (~53 MB, ~20 s)
      clang-format clang-tidy)  # ctest -L lint: the format and tidy tests (Debian 12: version 14)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
fi
