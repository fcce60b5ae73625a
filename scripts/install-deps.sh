#!/usr/bin/env bash
# Installs the Debian 12 packages llmprune needs, only those missing, then the npm ones (tools/llamacpp).
set -euo pipefail
PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libsentencepiece-dev
      nlohmann-json3-dev libpcre2-dev libcli11-dev libgtest-dev libbenchmark-dev
      chromium fonts-dejavu-core)  # chromium: the HTML report is rendered headless in a test
# node and npm (tools/llamacpp) are not in the list: Debian 12's nodejs is 18, node-llama-cpp 3
# needs >= 20; install-llamacpp.sh skips (and the test says so) when they are missing.
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# npm packages: tools/llamacpp (llama.cpp through node-llama-cpp, for the client test).
bash "$(dirname "$0")/install-llamacpp.sh"
