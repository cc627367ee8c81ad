#!/usr/bin/env bash
# delta.sh measures what an update costs the device when one package
# changes: bytes fetched and wall time of a full install from a local
# file, a full install over HTTP, abboot's delta install over HTTP
# (pkg/delta, seeded from the running slot) and casync (`casync make`
# with its defaults, `casync extract --seed` of the old image) on erofs
# and on squashfs images, all in one run, served from 127.0.0.1.
#
# The images: a Debian /usr tree of about 500 MiB unpacked from a handful
# of packages (`apt-get download`, `dpkg-deb -x`), built three times, with
# libssl3 3.0.17 (v0), 3.0.20 (v1, the running slot's) and 3.0.22 (v2, the
# update), each as erofs and as squashfs by scripts/mkrootfs.sh. The
# erofs update is installed twice: into an empty slot B (the first update
# of a new disk) and into a slot B holding v0 (every later update: the
# inactive slot holds the version before the running one). The packages are cached in
# ~/.cache/abboot/bench-delta. Run it alone (flock /tmp/abboot-heavy.lock).
#
# Targets: the delta fetches at most 2% of the full root image (its
# leaves included) and takes no longer than a full install from a local
# file. Flags go to bench/delta/main.go (-n rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
CACHE=${ABBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/abboot}
W=$CACHE/bench-delta
PREV=libssl3=3.0.17-1~deb12u2
OLD=libssl3=3.0.20-1~deb12u2
NEW=libssl3=3.0.22-1~deb12u2
PKGS="libc6 python3.11-minimal libpython3.11-stdlib libpython3.11-minimal perl-base
	perl-modules-5.36 libperl5.36 coreutils bash vim-runtime git libllvm15 gcc-12 cpp-12
	libstdc++6 systemd libicu72 libgl1-mesa-dri"
mkdir -p "$W/debs"
if [[ $(cat "$W/debs/.done" 2>/dev/null) != "$PKGS $PREV $OLD $NEW" ]]; then
	echo "delta.sh: fetching packages with apt-get download" >&2
	# shellcheck disable=SC2086
	(cd "$W/debs" && apt-get download -qq $PKGS "$PREV" "$OLD" "$NEW" 2>&1 | grep -v unsandboxed >&2 || true)
	echo "$PKGS $PREV $OLD $NEW" >"$W/debs/.done"
fi
deb() { ls "$W/debs/${1%%=*}_${1#*=}"_*.deb; }
for v in 0 1 2; do
	[[ -e $W/v$v.done ]] && continue
	rm -rf "$W/tree$v" && mkdir -p "$W/tree$v"
	pick=$OLD
	[[ $v == 0 ]] && pick=$PREV
	[[ $v == 2 ]] && pick=$NEW
	for p in $PKGS; do dpkg-deb -x "$(ls "$W/debs/${p}"_*.deb)" "$W/tree$v"; done
	dpkg-deb -x "$(deb "$pick")" "$W/tree$v"
	./scripts/mkrootfs.sh erofs "$W/tree$v" "$W/v$v.erofs"
	./scripts/mkrootfs.sh squashfs "$W/tree$v" "$W/v$v.squashfs"
	# Both must be whole 4 KiB blocks for verity.
	truncate -s %4096 "$W/v$v.squashfs"
	rm -rf "$W/tree$v"
	touch "$W/v$v.done"
done
exec go run ./bench/delta -pairs "erofs:$W/v1.erofs:$W/v2.erofs:$W/v0.erofs,squashfs:$W/v1.squashfs:$W/v2.squashfs" "$@"
