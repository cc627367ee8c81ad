#!/usr/bin/env bash
# mkrootfs.sh builds a read-only root file system image from a directory,
# reproducibly: the same directory gives the same bytes, whenever and
# wherever it is built.
#
#   scripts/mkrootfs.sh [-o] erofs|squashfs DIR OUT
#
# -o keeps the files' owners, for a real OS root whose files belong to
# system users (images/debian); without it every file is root's, as the
# demo root unpacked from a cpio by an unprivileged build is.
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
# Pinned: every timestamp (SOURCE_DATE_EPOCH, default 0: -T for erofs,
# -mkfs-time/-all-time for squashfs; SOURCE_DATE_EPOCH alone does not pin an
# erofs layout), the file system UUID (derived from nothing but the format,
# since the verity root hash, not the UUID, names an image), extended
# attributes (none: the build host's labels must not leak in), and the
# locale (the order of directory entries).
set -euo pipefail
owners=(--all-root)
sqowners=(-all-root)
if [[ ${1:-} == -o ]]; then
	owners=() sqowners=()
	shift
fi
[[ $# -eq 3 ]] || { sed -n '5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
fmt=$1 dir=$2 out=$3
t=${SOURCE_DATE_EPOCH:-0}
export LC_ALL=C TZ=UTC
unset SOURCE_DATE_EPOCH
rm -f "$out"
case $fmt in
erofs)
	mkfs.erofs -zlz4hc -Enoinline_data -T"$t" -U 2b2c4b0d-5e1f-4a3b-9c8d-7e6f5a4b3c2d -x-1 "${owners[@]}" --quiet "$out" "$dir" >/dev/null ;;
squashfs)
	mksquashfs "$dir" "$out" -noappend "${sqowners[@]}" -no-xattrs -quiet -comp zstd -mkfs-time "$t" -all-time "$t" -no-progress >/dev/null ;;
*)
	echo "mkrootfs.sh: format $fmt: want erofs or squashfs" >&2; exit 2 ;;
esac
