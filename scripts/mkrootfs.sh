#!/usr/bin/env bash
# mkrootfs.sh builds a read-only root file system image from a directory,
# reproducibly: the same directory gives the same bytes, whenever and
# wherever it is built.
#
#   scripts/mkrootfs.sh erofs|squashfs DIR OUT
#
# erofs is the default root of abboot's images because it keeps file data
# block-aligned (lz4hc compresses into fixed 4 KiB physical clusters): a
# changed file changes only its own blocks, so a delta install (pkg/delta)
# finds almost every block of the new root in the old one. squashfs packs
# data byte-aligned, and one changed file shifts every block after it
# (bench/delta.sh measures both). noinline_data keeps small files' data
# out of the inode area: inlined, a file that changes size shifts every
# inode and directory block after it (a libssl3 update then changed 6.9
# MiB of a 249 MiB image; without inlining, 3.7 MiB of 259 MiB).
#
# Pinned: every timestamp (-T 0, -mkfs-time/-all-time 0), the file system
# UUID (derived from nothing but the format, since the verity root hash,
# not the UUID, names an image), ownership (root) and the locale (the
# order of directory entries). SOURCE_DATE_EPOCH alone does not pin an
# erofs layout.
set -euo pipefail
[[ $# -eq 3 ]] || { sed -n '5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
fmt=$1 dir=$2 out=$3
export LC_ALL=C TZ=UTC
unset SOURCE_DATE_EPOCH
rm -f "$out"
case $fmt in
erofs)
	mkfs.erofs -zlz4hc -Enoinline_data -T0 -U 2b2c4b0d-5e1f-4a3b-9c8d-7e6f5a4b3c2d --all-root --quiet "$out" "$dir" >/dev/null ;;
squashfs)
	mksquashfs "$dir" "$out" -noappend -all-root -quiet -comp zstd -mkfs-time 0 -all-time 0 -no-progress >/dev/null ;;
*)
	echo "mkrootfs.sh: format $fmt: want erofs or squashfs" >&2; exit 2 ;;
esac
