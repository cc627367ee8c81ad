#!/usr/bin/env bash
# mkuimage.sh builds abboot's initramfs and a unified kernel image (UKI)
# around it: systemd's UEFI stub with .linux, .initrd, .cmdline and .osrel.
#
#   ./mkuimage.sh [-v VERSION] [-c "extra cmdline"] [-o OUT.efi] [-r]
#
# With -r the OS goes on a read-only root instead of living in the
# initramfs: OUT.root.img (squashfs) and OUT.verity.img (its dm-verity tree,
# veritysetup format) are written next to the UKI, and the UKI's command
# line carries abboot.roothash=HASH, which the init uses to find, verify
# and mount the root (docs/design.md, Disk layout).
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
#   ABBOOT_COMPATIBLE=s   the compatible string bundles must carry
#                         (default abboot-demo-x86_64)
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

while getopts "v:c:o:rh" opt; do
	case $opt in
	r) ROOTFS=1 ;;
	v) VERSION=$OPTARG ;;
	c) EXTRA=$OPTARG ;;
	o) OUT=$OPTARG ;;
	*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
[[ $VERSION =~ ^[A-Za-z0-9._~-]+$ ]] || die "version $VERSION: use letters, digits and . _ ~ -"
OUT=${OUT:-$ROOT/out/abboot-v$VERSION.efi}
export PATH=$PATH:/usr/sbin:/sbin
# A verity root needs device-mapper's verity target and the file system.
[[ -n $ROOTFS ]] && MODS="$MODS dm_verity squashfs"

need go golang
need objcopy binutils
need cpio cpio
need depmod kmod
need modprobe kmod
need zstd zstd
need dpkg-deb dpkg
need efibootmgr efibootmgr
[[ -z $ROOTFS ]] || need mksquashfs squashfs-tools
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
MODKEY=$(echo "$KVER $MODS / $LATE_MODS" | sha256sum | cut -c1-16)
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
	depmod -b "$STAGE" "$KVER"
	touch "$STAGE/.done"
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
printf 'ID=abboot-demo\nNAME="abboot demo"\nVERSION_ID=%s\n' "$VERSION" >"$tmp/root/etc/os-release"
cp "$KEYS" "$tmp/root/etc/abboot/keys.pub"
echo "${ABBOOT_COMPATIBLE:-abboot-demo-x86_64}" >"$tmp/root/etc/abboot/compatible"
ln -s /bbin/demo "$tmp/root/sbin/init"
(cd "$tmp/root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$tmp/layer.cpio"
cat "$tmp/layer.cpio" "$BASE" >"$tmp/initrd"
cp "$tmp/root/etc/os-release" "$tmp/osrel"


# 5. With -r, the OS's root file system: the same programs and the image's
# layer, as squashfs, and its verity tree. Device nodes are left out: the
# init moves its /dev there.
if [[ -n $ROOTFS ]]; then
	mkdir -p "$tmp/rootfs"
	zstd -dc "$BASE" | (cd "$tmp/rootfs" && cpio -idm --quiet --no-absolute-filenames --nonmatching 'dev/*' 2>/dev/null) || true
	(cd "$tmp/root" && cp -a . "$tmp/rootfs/")
	mkdir -p "$tmp/rootfs"/{dev,proc,sys,run,tmp,efi}
	rm -f "${OUT%.efi}.root.img"
	mksquashfs "$tmp/rootfs" "${OUT%.efi}.root.img" -noappend -all-root -quiet -comp zstd >/dev/null
	HASH=$("$CACHE/bin/abimage" verity format "${OUT%.efi}.root.img" "${OUT%.efi}.verity.img")
	EXTRA="abboot.roothash=$HASH${EXTRA:+ $EXTRA}"
	echo "mkuimage.sh: root ${OUT%.efi}.root.img verity ${OUT%.efi}.verity.img roothash $HASH" >&2
fi

# 6. The UKI.
"$CACHE/bin/abimage" uki --kernel "$KERNEL" --initrd "$tmp/initrd" \
	--cmdline "$BASE_CMDLINE${EXTRA:+ $EXTRA}" --osrel "$tmp/osrel" -o "$OUT"

echo "mkuimage.sh: kernel $KVER" >&2
echo "mkuimage.sh: initramfs $BASE ($(du -h "$BASE" | cut -f1))" >&2
echo "mkuimage.sh: UKI $OUT ($(du -h "$OUT" | cut -f1)) version $VERSION" >&2
echo "$OUT"
