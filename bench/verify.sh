#!/usr/bin/env bash
# verify.sh measures what Secure Boot verification and the measured
# handover of a kexec target cost: it boots the e2e tests
# TestSecureBootTampered/.initrd (the init refuses B's UKI at boot) and
# TestSecureBootUpdate (abctl reboot verifies B, measures it into PCR 11
# with swtpm attached, and kexecs it) with their serial logs kept, builds a
# UKI as those tests do, and reports (bench/verify/main.go) the medians of
# the check's and the measurement's times as shares of the kernel's boot
# and of the init's own time, next to the same work timed on this host in
# the same run. Run it alone: each boot takes the heavy-job lock.
#
#   bench/verify.sh [CPUS [BANKS]]
#
# CPUS is the machines' vCPUs, default 1 (as the e2e tests); BANKS the
# TPM's active PCR banks (swtpm_setup --pcr-banks, default sha256 as
# libvirt and most PC TPMs have; "-" for swtpm's own four, as the e2e
# tests have).
set -euo pipefail
cd "$(dirname "$0")/.."
cpus=${1:-1}
banks=${2:-sha256}
[ "$banks" = - ] && banks=
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
for t in 'TestSecureBootTampered/\.initrd' 'TestSecureBootUpdate$'; do
	ABBOOT_E2E_CPUS=$cpus ABBOOT_E2E_TPM_BANKS=$banks ABBOOT_E2E_LOGS=$logs flock /tmp/abboot-heavy.lock \
		go test ./qemu/e2e -run "$t" -count=1 -timeout 30m >"$logs/test.out" 2>&1 ||
		{ cat "$logs/test.out" >&2; exit 1; }
done
# The e2e tests' s2: the same mkuimage.sh call and key set (their cache).
keys=${ABBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/abboot}/sbkeys-test
ABBOOT_SB_KEYS=$keys ./mkuimage.sh -v 2 -c abboot.watchdog=30 -o "$logs/s2.efi" >"$logs/mkuimage.out" 2>&1 ||
	{ cat "$logs/mkuimage.out" >&2; exit 1; }
go build -o "$logs/verify" ./bench/verify
flock /tmp/abboot-heavy.lock "$logs/verify" -cpus "$cpus" -uki "$logs/s2.efi" -keys "$keys" \
	"$logs/TestSecureBootTampered/.initrd.log" "$logs/TestSecureBootUpdate.log"
