#!/usr/bin/env bash
# reboot.sh measures the fast reboot: the time from abctl's reboot
# decision to the next init's start, through kexec and through the
# firmware, as a ratio from one run; see bench/reboot/main.go.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec go run ./bench/reboot "$@"
