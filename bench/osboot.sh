#!/usr/bin/env bash
# osboot.sh measures a systemd boot on the Debian root of images/debian:
# the time from the kernel's start to multi-user.target and the share of it
# spent in abboot's init (its own work and its module loading), from the
# same boots; see bench/osboot/main.go. Needs root (build.sh). On a shared
# machine run it under `flock /tmp/abboot-heavy.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
exec go run ./bench/osboot "$@"
