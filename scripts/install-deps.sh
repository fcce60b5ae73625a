#!/usr/bin/env bash
# Installs the Debian 12 packages llmprune needs, only those missing.
set -euo pipefail
PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libsentencepiece-dev
      nlohmann-json3-dev libpcre2-dev libcli11-dev libgtest-dev libbenchmark-dev
      chromium fonts-dejavu-core)  # chromium: the HTML report is rendered headless in a test
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
