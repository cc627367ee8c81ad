#!/usr/bin/env bash
# verify.sh measures what Secure Boot verification of a handover target
# costs the init: it boots the e2e test TestSecureBootTampered/.initrd
# (OVMF's Secure Boot build, test keys enrolled, B's UKI refused by the
# init) with its serial log kept, and reports from that boot the check's
# time as a share of the kernel's boot time and of the init's own time;
# see bench/verify/main.go. Run it alone: it takes the heavy-job lock.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
ABBOOT_E2E_LOGS=$logs flock /tmp/abboot-heavy.lock \
	go test ./qemu/e2e -run 'TestSecureBootTampered/\.initrd' -count=1 -timeout 30m >"$logs/test.out" 2>&1 ||
	{ cat "$logs/test.out" >&2; exit 1; }
exec go run ./bench/verify "$logs/TestSecureBootTampered/.initrd.log"
