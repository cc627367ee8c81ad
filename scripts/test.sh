#!/usr/bin/env bash
# test.sh runs every test: static checks, unit and interop tests, the e2e
# boots in QEMU, then each fuzz target for a short while (FUZZTIME, default
# 10s). A crash a fuzzer finds is saved under testdata/fuzz and from then
# on runs as a regression case with the unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
unformatted=$(gofmt -l $(git ls-files -co --exclude-standard -- '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi
go vet ./...
# Fetch the kernel (and build the initramfs) once up front: the e2e tests
# boot it, and the device-mapper tests run in a VM on it, since the machine
# running the tests may have no dm-verity of its own.
cache=${ABBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/abboot}
./mkuimage.sh -o "$cache/test.efi" >/dev/null
ABBOOT_TEST_KERNEL=$(realpath "$(ls "$cache"/kernel/*/root/boot/vmlinuz-* | head -1)")
export ABBOOT_TEST_KERNEL
go test -count=1 -timeout 60m ./...
# inputs counts the failing inputs saved in a fuzz corpus directory.
inputs() {
	local f=("$1"/*)
	[[ -e ${f[0]} ]] && echo ${#f[@]} || echo 0
}
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | cut -c6-); do
		echo "fuzz $pkg $f" >&2
		corpus=$dir/testdata/fuzz/$f
		before=$(inputs "$corpus")
		# Minimizing each new input for the default 60 s would spend the
		# whole budget of a target whose inputs are disk images (gpt,
		# bundle) on a handful of them; 50 tries keep it fuzzing.
		if ! out=$(go test -run '^$' -fuzz "^$f\$" -fuzztime "${FUZZTIME:-10s}" -fuzzminimizetime 50x "$pkg" 2>&1); then
			# Go 1.26's fuzz coordinator can report its own -fuzztime
			# deadline as a failure (golang/go#75804, fixed in Go 1.27):
			# "context deadline exceeded" with no failing input written.
			# A real failure always writes one.
			if [[ $(inputs "$corpus") -eq $before ]] &&
				grep -q '^    context deadline exceeded$' <<<"$out"; then
				echo "fuzz $f: stopped by golang/go#75804 at its time limit, no failing input" >&2
				continue
			fi
			echo "$out" >&2
			exit 1
		fi
	done
done
echo "test.sh: all tests passed"
