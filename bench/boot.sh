#!/usr/bin/env bash
# boot.sh measures one UKI boot in QEMU: the UKI's size, the kernel's own
# boot time (until abboot's init starts) and the init's time until it execs
# the OS, split into module loading and the rest. Everything is reported as
# ratios from the same run; see bench/boot/main.go.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec go run ./bench/boot "$@"
