#!/usr/bin/env bash
# mkuimage.sh builds abboot's initramfs and a unified kernel image (UKI)
# around it: systemd's UEFI stub with .linux, .initrd, .cmdline and .osrel.
#
#   ./mkuimage.sh [-v VERSION] [-c "extra cmdline"] [-o OUT.efi] [-r | -R ROOT.img] [-k]
#
# With -r the OS goes on a read-only root instead of living in the
# initramfs: OUT.root.img (erofs, or squashfs with ABBOOT_ROOTFS=squashfs)
# and OUT.verity.img (its dm-verity tree, veritysetup format) are written
# next to the UKI, and the UKI's command line carries abboot.roothash=HASH,
# which the init uses to find, verify and mount the root (docs/design.md,
# Disk layout). Both images are reproducible: the same inputs give the same
# bytes (scripts/mkrootfs.sh pins the file system's layout; the verity
# salt is the product's, the same in every version, so that one version's
# tree indexes the blocks the next one shares with it, see pkg/delta; the
# superblock's uuid is derived from the root image).
#
# With -R ROOT.img the root is an image built elsewhere (squashfs or erofs,
# e.g. images/debian/build.sh): it is copied to OUT.root.img unless it is
# already there, and its tree and root hash are made as with -r. The init
# execs abboot.init (default /sbin/init) in it. ABBOOT_OSREL=file gives the
# UKI's .osrel (default: the demo's, ID=abboot-demo VERSION_ID=VERSION).
#
# With -k only the kernel and the modules are prepared: the kernel's path
# and the staged module tree (lib/modules/KVER with the modules and their
# dependencies, depmod run) are printed, for image builders that ship the
# same modules in their root.
#
# The initramfs holds abboot's init as PID 1, abctl, a rescue shell (gosh),
# the demo OS (images/demo), efibootmgr (so operators can inspect entries
# with the tool they know) and the kernel modules the init loads, with
# their dependencies. Environment:
#
#   KERNEL=path/bzImage MODULES=path/lib/modules/VER   bring your own kernel
#                         (MODULES must hold modules.dep: run depmod first)
#   ABBOOT_CACHE=dir      cache (default $XDG_CACHE_HOME/abboot or ~/.cache/abboot,
#                         outside the clone so that a fresh clone reuses it)
#   ABBOOT_KEYS=file.pub  public keys the image trusts for update bundles
#                         (default: a demo key pair made in the cache;
#                         its private half signs the demo's bundles)
#   ABBOOT_SB_KEYS=dir    Secure Boot keys (abimage sbkeys): sign the kernel
#                         (its vendor signature replaced) and the UKI with dir/db.key
#   ABBOOT_COMPATIBLE=s   the compatible string bundles must carry
#                         (default abboot-demo-x86_64)
#   ABBOOT_ROOTFS=erofs|squashfs  the -r root's file system (default erofs)
#   ABBOOT_VERITY_SALT=hex  the product's verity salt (default: the sha256
#                         of "abboot verity salt " and the compatible string)
#   ABBOOT_MODULES="..."  modules the init needs to find its slot (default below)
#   ABBOOT_LATE_MODULES="..."  modules needed only before the handover (the
#                         watchdog driver); the init does not wait for them
#
# Without KERNEL, Debian's current linux-image-amd64 kernel is fetched with
# `apt-get download` into the cache and unpacked there: no root install.
# Every step is cached, so a second run with the same inputs only
# reassembles what changed. The paths of the outputs are printed at the end.
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$PWD
CACHE=${ABBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/abboot}
VERSION=1
EXTRA=""
OUT=""
ROOTFS=""
MODS=${ABBOOT_MODULES:-"virtio_pci virtio_blk efivarfs efi_pstore nls_cp437 nls_ascii vfat"}
LATE_MODS=${ABBOOT_LATE_MODULES:-"i6300esb"}
BASE_CMDLINE="console=ttyS0,115200 panic=10 loglevel=4"

die() { echo "mkuimage.sh: $*" >&2; exit 1; }
need() { # need PROGRAM DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1 ||
		die "$1 not found: apt-get install $2"
}

ROOTIMG=""
KONLY=""
while getopts "v:c:o:R:rkh" opt; do
	case $opt in
	r) ROOTFS=1 ;;
	R) ROOTFS=1 ROOTIMG=$OPTARG ;;
	k) KONLY=1 ;;
	v) VERSION=$OPTARG ;;
	c) EXTRA=$OPTARG ;;
	o) OUT=$OPTARG ;;
	*) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
[[ $VERSION =~ ^[A-Za-z0-9._~-]+$ ]] || die "version $VERSION: use letters, digits and . _ ~ -"
OUT=${OUT:-$ROOT/out/abboot-v$VERSION.efi}
export PATH=$PATH:/usr/sbin:/sbin
# A verity root needs device-mapper's verity target and the file system.
ROOTFS_TYPE=${ABBOOT_ROOTFS:-erofs}
[[ $ROOTFS_TYPE == erofs || $ROOTFS_TYPE == squashfs ]] || die "ABBOOT_ROOTFS=$ROOTFS_TYPE: want erofs or squashfs"
COMPATIBLE=${ABBOOT_COMPATIBLE:-abboot-demo-x86_64}
# A root image from elsewhere (-R) may be either file system.
if [[ -n $ROOTIMG ]]; then
	MODS="$MODS dm_verity squashfs erofs"
elif [[ -n $ROOTFS ]]; then
	MODS="$MODS dm_verity $ROOTFS_TYPE"
fi

need go golang
need objcopy binutils
need cpio cpio
need depmod kmod
need modprobe kmod
need zstd zstd
need dpkg-deb dpkg
need efibootmgr efibootmgr
[[ -z $ROOTFS || -n $ROOTIMG || $ROOTFS_TYPE != squashfs ]] || need mksquashfs squashfs-tools
[[ -z $ROOTFS || -n $ROOTIMG || $ROOTFS_TYPE != erofs ]] || need mkfs.erofs erofs-utils
[[ -z $ROOTIMG || -f $ROOTIMG ]] || die "root image $ROOTIMG not found"
[[ -e /usr/lib/systemd/boot/efi/linuxx64.efi.stub ]] || die "UEFI stub missing: apt-get install systemd-boot-efi"
mkdir -p "$CACHE" "$(dirname "$OUT")"

# 1. The kernel and its modules.
if [[ -n ${KERNEL:-} ]]; then
	[[ -n ${MODULES:-} ]] || die "KERNEL is set: set MODULES=path/lib/modules/VERSION too"
	[[ -f $MODULES/modules.dep ]] || die "$MODULES/modules.dep missing: run depmod -b for that tree"
	KVER=$(basename "$MODULES")
	MODROOT=$(cd "$MODULES/../../.." && pwd)
	[[ -d $MODROOT/lib/modules/$KVER ]] || die "MODULES must end in lib/modules/VERSION"
else
	need apt-get apt
	PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[[ -n $PKG ]] || die "apt does not know linux-image-amd64: run apt-get update"
	KDIR=$CACHE/kernel/$PKG
	if [[ ! -e $KDIR/.done ]]; then
		echo "mkuimage.sh: fetching $PKG with apt-get download" >&2
		rm -rf "$KDIR" && mkdir -p "$KDIR"
		# apt drops privileges to _apt for downloads; a root-owned cache
		# directory is then not writable, which only costs a warning.
		(cd "$KDIR" && apt-get download -qq "$PKG" 2>&1 | grep -v 'unsandboxed' >&2 || true)
		deb=$(ls "$KDIR"/*.deb 2>/dev/null | head -1)
		[[ -n $deb ]] || die "apt-get download $PKG failed"
		dpkg-deb -x "$deb" "$KDIR/root"
		rm -f "$deb"
		KVER=$(ls "$KDIR/root/lib/modules")
		depmod -b "$KDIR/root" "$KVER"
		touch "$KDIR/.done"
	fi
	KVER=$(ls "$KDIR/root/lib/modules")
	KERNEL=$KDIR/root/boot/vmlinuz-$KVER
	MODROOT=$KDIR/root
fi
[[ -f $KERNEL ]] || die "kernel $KERNEL not found"

# 2. The modules the init loads, with their dependencies, in a tree of
# their own with its own small modules.dep.
MODKEY=$(echo "$KVER $MODS / $LATE_MODS softdep" | sha256sum | cut -c1-16)
STAGE=$CACHE/modules-$MODKEY
if [[ ! -e $STAGE/.done ]]; then
	rm -rf "$STAGE" && mkdir -p "$STAGE/lib/modules/$KVER" "$STAGE/lib/modules-load.d"
	for m in $MODS $LATE_MODS; do
		conf=abboot.conf
		[[ " $LATE_MODS " == *" $m "* ]] && conf=abboot-late.conf
		deps=$(modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" 2>&1) || die "module $m: $deps"
		while read -r kind path _; do
			[[ $kind == insmod ]] || continue
			rel=${path#"$MODROOT/lib/modules/$KVER/"}
			mkdir -p "$STAGE/lib/modules/$KVER/$(dirname "$rel")"
			cp "$path" "$STAGE/lib/modules/$KVER/$rel"
		done <<<"$deps"
		echo "$m" >>"$STAGE/lib/modules-load.d/$conf"
	done
	cp "$MODROOT/lib/modules/$KVER"/modules.{builtin,builtin.modinfo,order} "$STAGE/lib/modules/$KVER/" 2>/dev/null || true
	# The init's loader (u-root's kmodule) reads modules.dep but not
	# modules.softdep, and a module can need a soft dependency loaded
	# first: libcrc32c's init asks the crypto API for crc32c, which
	# without a modprobe in the initramfs fails, so erofs does not load.
	# Each "pre:" soft dependency becomes a hard one in the staged tree.
	# An algorithm can have several modules (crc32c-intel needs SSE4.2,
	# which emulated CPUs lack); the portable *_generic one is taken.
	declare -A pre=()
	for ko in $(find "$STAGE/lib/modules/$KVER" -name '*.ko*' | LC_ALL=C sort); do
		names=$(modinfo -F softdep "$ko" | awk '{for (i = 1; i <= NF; i++) { if ($i == "pre:") p = 1; else if ($i == "post:") p = 0; else if (p) print $i }}' | sort -u)
		for n in $names; do
			cands=$(modprobe -d "$MODROOT" -S "$KVER" --show-depends "$n" 2>/dev/null | awk '$1 == "insmod" {print $2}')
			path=$(grep '_generic\.ko' <<<"$cands" | tail -1 || true)
			path=${path:-$(tail -1 <<<"$cands")}
			[[ -n $path ]] || continue
			rel=${path#"$MODROOT/lib/modules/$KVER/"}
			mkdir -p "$STAGE/lib/modules/$KVER/$(dirname "$rel")"
			cp "$path" "$STAGE/lib/modules/$KVER/$rel"
			pre[${ko#"$STAGE/lib/modules/$KVER/"}]+=" $rel"
		done
	done
	depmod -b "$STAGE" "$KVER"
	for k in "${!pre[@]}"; do
		sed -i "s|^$k:\(.*\)\$|$k:\1${pre[$k]}|" "$STAGE/lib/modules/$KVER/modules.dep"
	done
	touch "$STAGE/.done"
fi
if [[ -n $KONLY ]]; then
	echo "$KERNEL"
	echo "$STAGE/lib/modules/$KVER"
	exit 0
fi

# 3. The Go part of the initramfs (u-root's mkuimage, busybox mode),
# cached by the hash of every input.
SRCKEY=$( (cat go.mod go.sum mkuimage.sh; git ls-files -co --exclude-standard -- '*.go' 2>/dev/null | sort | xargs cat; echo "$MODKEY") | sha256sum | cut -c1-16)
BASE=$CACHE/initramfs-$SRCKEY.cpio.zst
if [[ ! -e $BASE ]]; then
	echo "mkuimage.sh: building the initramfs" >&2
	build=$(mktemp -d "$CACHE/build.XXXXXX")
	trap 'rm -rf "$build"' EXIT
	# The u-root commands are the ones tools.go imports (which keeps them in
	# go.mod): one list. -e because go list rejects importing a command.
	mapfile -t uroot < <(go list -e -tags tools -f '{{join .Imports "\n"}}' .)
	[[ ${#uroot[@]} -gt 0 ]] || die "no u-root commands listed in tools.go"
	go tool mkuimage -build=bb -defaultsh=gosh -initcmd=uinit -uinitcmd="" \
		-files "$STAGE/lib/modules:lib/modules" \
		-files "$STAGE/lib/modules-load.d:lib/modules-load.d" \
		-files "$(command -v efibootmgr):usr/bin/efibootmgr" \
		-o "$build/base.cpio" \
		./uinit ./cmds/abctl ./images/demo "${uroot[@]}" >"$build/log" 2>&1 || { cat "$build/log" >&2; die "mkuimage failed"; }
	zstd -q -19 -T0 "$build/base.cpio" -o "$build/base.cpio.zst"
	mv "$build/base.cpio.zst" "$BASE"
	rm -rf "$build"
fi

mkdir -p "$CACHE/bin"
go build -o "$CACHE/bin/abimage" ./cmds/abimage
KEYS=${ABBOOT_KEYS:-$CACHE/keys/demo.pub}
if [[ -z ${ABBOOT_KEYS:-} && ! -e $KEYS ]]; then
	mkdir -p "$CACHE/keys"
	"$CACHE/bin/abimage" keygen -o "$CACHE/keys/demo" >/dev/null
fi
[[ -f $KEYS ]] || die "ABBOOT_KEYS=$KEYS: no such file"

# 4. The image's own layer: its os-release, the update trust (keys and
# compatible string) and the OS init the demo uses.
# The kernel unpacks concatenated cpio archives in order; the small
# uncompressed one goes first, as early microcode does, because the kernel
# does not reliably find an archive that follows a compressed stream.
tmp=$(mktemp -d "$CACHE/img.XXXXXX")
trap 'rm -rf "$tmp" ${build:+"$build"}' EXIT
mkdir -p "$tmp/root/etc/abboot" "$tmp/root/sbin"
if [[ -n ${ABBOOT_OSREL:-} ]]; then
	cp "$ABBOOT_OSREL" "$tmp/root/etc/os-release"
else
	printf 'ID=abboot-demo\nNAME="abboot demo"\nVERSION_ID=%s\n' "$VERSION" >"$tmp/root/etc/os-release"
fi
cp "$KEYS" "$tmp/root/etc/abboot/keys.pub"
echo "$COMPATIBLE" >"$tmp/root/etc/abboot/compatible"
ln -s /bbin/demo "$tmp/root/sbin/init"
# Time stamps from SOURCE_DATE_EPOCH (default 0) and no inode or device
# numbers, so that the same inputs give the same UKI.
find "$tmp/root" -exec touch -h -d "@${SOURCE_DATE_EPOCH:-0}" {} +
(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) >"$tmp/layer.cpio"
cat "$tmp/layer.cpio" "$BASE" >"$tmp/initrd"
cp "$tmp/root/etc/os-release" "$tmp/osrel"


# 5. With -r, the OS's root file system: the same programs and the image's
# layer, as erofs (or squashfs), and its verity tree, both reproducible.
# Device nodes are left out: the init moves its /dev there. With -R, the
# root image built elsewhere.
if [[ -n $ROOTIMG ]]; then
	[[ $ROOTIMG -ef ${OUT%.efi}.root.img ]] || cp "$ROOTIMG" "${OUT%.efi}.root.img"
elif [[ -n $ROOTFS ]]; then
	mkdir -p "$tmp/rootfs"
	zstd -dc "$BASE" | (cd "$tmp/rootfs" && cpio -idm --quiet --no-absolute-filenames --nonmatching 'dev/*' 2>/dev/null) || true
	(cd "$tmp/root" && cp -a . "$tmp/rootfs/")
	mkdir -p "$tmp/rootfs"/{dev,proc,sys,run,tmp,efi}
	"$ROOT/scripts/mkrootfs.sh" "$ROOTFS_TYPE" "$tmp/rootfs" "${OUT%.efi}.root.img"
fi
if [[ -n $ROOTFS ]]; then
	# verity needs whole 4 KiB blocks; erofs writes them, squashfs pads
	# to 4 KiB by default.
	truncate -s %4096 "${OUT%.efi}.root.img"
	# The salt is the product's, the same in every version, so that one
	# version's tree indexes the blocks the next one shares with it
	# (pkg/delta); the superblock's UUID comes from the image, so the same
	# root gives the same tree and root hash.
	SALT=${ABBOOT_VERITY_SALT:-$(printf 'abboot verity salt %s' "$COMPATIBLE" | sha256sum | cut -c1-64)}
	VUUID=$(sha256sum <"${OUT%.efi}.root.img" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/')
	rm -f "${OUT%.efi}.verity.img"
	HASH=$("$CACHE/bin/abimage" verity format --salt "$SALT" --uuid "$VUUID" "${OUT%.efi}.root.img" "${OUT%.efi}.verity.img")
	EXTRA="abboot.roothash=$HASH${EXTRA:+ $EXTRA}"
	echo "mkuimage.sh: root ${OUT%.efi}.root.img verity ${OUT%.efi}.verity.img roothash $HASH" >&2
fi

# 6. The UKI.
[[ -z ${ABBOOT_SB_KEYS:-} || -f $ABBOOT_SB_KEYS/db.key ]] || die "ABBOOT_SB_KEYS=$ABBOOT_SB_KEYS: no db.key there (abimage sbkeys -o DIR)"
"$CACHE/bin/abimage" uki --kernel "$KERNEL" --initrd "$tmp/initrd" \
	--cmdline "$BASE_CMDLINE${EXTRA:+ $EXTRA}" --osrel "$tmp/osrel" \
	${ABBOOT_SB_KEYS:+--sb-keys "$ABBOOT_SB_KEYS"} -o "$OUT"

echo "mkuimage.sh: kernel $KVER" >&2
echo "mkuimage.sh: initramfs $BASE ($(du -h "$BASE" | cut -f1))" >&2
echo "mkuimage.sh: UKI $OUT ($(du -h "$OUT" | cut -f1)) version $VERSION${ABBOOT_SB_KEYS:+, signed by $ABBOOT_SB_KEYS/db.pem}" >&2
echo "$OUT"
