#!/usr/bin/env bash
# Installs tools/llamacpp: node-llama-cpp 3.21.1 and its prebuilt CPU llama.cpp for linux-x64
# (@node-llama-cpp/linux-x64), exactly as package-lock.json pins them, with `npm ci`. Used by
# tests/llamacpp_client_test.cpp (llama.cpp as a real client of our GGUF files) and by
# bench/ programs that compare against llama.cpp. The install path, tools/llamacpp/node_modules,
# is stable: `node tools/llamacpp/<script>.mjs` resolves `node-llama-cpp` from there.
#
# Run by scripts/install-deps.sh (make deps/build/test) and by the build (CMake target
# llamacpp_client), so a fresh clone or a worktree gets it. It reinstalls only when package-lock.json
# changed since the last install. Never fatal: without npm or the registry, it says so and exits 0;
# the test then skips with that reason.
#   --optional (the build's call): also skip quietly when npm is not installed.
set -uo pipefail
dir="$(cd "$(dirname "$0")/../tools/llamacpp" && pwd)"
stamp="$dir/node_modules/.llmprune-lock"
if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then exit 0; fi
if ! command -v npm > /dev/null || ! command -v node > /dev/null; then
  echo "install-llamacpp: node/npm not found; the llama.cpp client test will be skipped" >&2
  exit 0
fi
echo "install-llamacpp: npm ci in $dir (node-llama-cpp, CPU build for linux-x64 only)" >&2
# --omit=optional: node-llama-cpp lists every platform's prebuilt binaries (CUDA, Vulkan, ...;
# 730 MB) as optional dependencies; package.json names the linux-x64 CPU one directly (83 MB).
# --ignore-scripts: its postinstall would try to download or build llama.cpp when no prebuilt
# binary fits; we only ever use the prebuilt one.
if (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
      --fetch-retries=1 --fetch-timeout=30000 >&2); then
  cp "$dir/package-lock.json" "$stamp"
else
  echo "install-llamacpp: npm ci failed (registry unreachable?); the llama.cpp client test will be skipped" >&2
  rm -rf "$dir/node_modules"
fi
exit 0
