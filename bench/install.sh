#!/usr/bin/env bash
# install.sh measures abctl's installer writing a 1 GiB root into a
# file-backed slot against dd of the same bytes plus sha256sum, as a ratio
# from one run; see bench/install/main.go.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec go run ./bench/install "$@"
