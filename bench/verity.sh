#!/usr/bin/env bash
# verity.sh times `abimage verity format` and `verify` against veritysetup
# (Debian cryptsetup-bin) on a 1 GiB pseudo-random image with the same salt
# and uuid, checks that both build the same tree, and reports the speed
# ratio and each tool's peak memory from one run; see bench/verity/main.go.
# Flags go to it: -size MiB (default 1024), -small MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./bench/verity "$@"
