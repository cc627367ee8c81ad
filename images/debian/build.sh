#!/usr/bin/env bash
# build.sh builds a minimal Debian 12 root for abboot's slots and the UKI
# that boots it: the worked example of docs/own-os.md and the OS of the
# systemd e2e tests.
#
#   images/debian/build.sh [-n] [-o OUT.efi] VARIANT
#
# VARIANT is v1 (the base), v2 (v1 and one more package, less) or v3 (v2
# and a unit required by boot-complete.target that fails, so it never
# commits). Writes OUT.efi (the UKI), OUT.root.img (erofs), OUT.verity.img
# (its dm-verity tree) and OUT.manifest (the packages and versions in it);
# default OUT is out/debian-VARIANT.efi. -n rebuilds the root even when
# the cache has it (the reproducibility check builds twice and compares).
#
# The root is made by mmdebstrap (variant essential, plus systemd, udev,
# e2fsprogs for /var, kmod, and kexec-tools: systemd-shutdown runs
# `kexec -e` to boot the kernel abctl staged; its own loading at shutdown
# is turned off) from the Debian mirror apt is configured with, then:
#  - the kernel's modules that the UKI's kernel needs on a virtual or
#    simple machine (ABBOOT_OS_MODULES, below), staged by mkuimage.sh -k
#    from the same kernel package, so the root and the UKI agree;
#  - abctl (static, -trimpath), the update trust (/etc/abboot/keys.pub,
#    compatible) and the units in images/debian/rootfs (abboot-mark-good,
#    the fleet agent, /var on the data partition), enabled by their preset;
#  - no network configuration: nothing at boot needs one;
#  - systemd-gpt-auto-generator masked: abboot's init has mounted the ESP
#    at /efi already, and /var is found by its label (docs/own-os.md).
# The UKI's command line says "ro", so that systemd-remount-fs leaves the
# read-only root alone.
# The tree is then made reproducible (SOURCE_DATE_EPOCH for every time
# stamp, logs, caches, machine-id and random seed removed) and packed as
# erofs by scripts/mkrootfs.sh, which pins the layout, so the same inputs
# give the same bytes. The inputs are this directory, abctl's binary, the kernel, the
# keys and the mirror's state: apt's lists on this machine key the cache,
# and mmdebstrap resolves the packages against the mirror when it builds.
# Run `apt-get update` to move to newer packages.
#
# Needs root (mmdebstrap --mode=root), mmdebstrap and erofs-utils.
# Environment: ABBOOT_CACHE, ABBOOT_KEYS as for mkuimage.sh;
# SOURCE_DATE_EPOCH (default below); ABBOOT_COMPATIBLE (default
# abboot-debian-x86_64); ABBOOT_OS_MODULES; ABBOOT_WATCHDOG (seconds,
# default 300: the UKI's abboot.watchdog=, armed before the handover and
# closed by abctl mark-good, so a boot that hangs or never commits is
# reset; it must exceed the time to boot-complete.target, minutes under
# emulation).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${ABBOOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/abboot}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600} # 2025-01-01T00:00:00Z
COMPATIBLE=${ABBOOT_COMPATIBLE:-abboot-debian-x86_64}
WATCHDOG=${ABBOOT_WATCHDOG:-300}
# The UKI's initramfs loads what the init needs (virtio, vfat, dm-verity,
# erofs); udev in the root loads the rest by modalias from these.
OS_MODULES=${ABBOOT_OS_MODULES:-"virtio_pci virtio_blk virtio_scsi virtio_net virtio_rng virtio_console ahci sd_mod efivarfs vfat nls_cp437 nls_ascii nls_utf8 ext4 dm_verity erofs squashfs autofs4 loop i6300esb efi_pstore"}

die() { echo "build.sh: $*" >&2; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin

FORCE=""
OUT=""
while getopts "no:h" opt; do
	case $opt in
	n) FORCE=1 ;;
	o) OUT=$OPTARG ;;
	*) sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
VARIANT=${1:-}
case $VARIANT in
v1) PKGS="" ;;
v2) PKGS="less" ;;
v3) PKGS="less" ;;
*) die "variant ${VARIANT:-missing}: want v1, v2 or v3" ;;
esac
VERSION=${VARIANT#v}
OUT=${OUT:-$ROOT/out/debian-$VARIANT.efi}
[[ $(id -u) == 0 ]] || die "mmdebstrap --mode=root needs root"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
command -v mkfs.erofs >/dev/null || die "mkfs.erofs not found: apt-get install erofs-utils"
mkdir -p "$CACHE/bin" "$(dirname "$OUT")"

# The kernel and its modules, as the UKI gets them.
mapfile -t K < <(ABBOOT_MODULES="$OS_MODULES" ABBOOT_LATE_MODULES="" "$ROOT/mkuimage.sh" -k)
KERNEL=${K[0]} MODDIR=${K[1]}
KVER=$(basename "$MODDIR")
[[ -f $MODDIR/modules.dep ]] || die "mkuimage.sh -k gave no module tree"

# abctl, reproducibly (no build ID, no paths, no VCS stamp).
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-buildid= -o "$CACHE/bin/abctl-static" ./cmds/abctl)
KEYS=${ABBOOT_KEYS:-$CACHE/keys/demo.pub}
[[ -f $KEYS ]] || die "keys $KEYS not found (mkuimage.sh makes the demo keys)"

KEY=$( (
	echo "$VARIANT $SOURCE_DATE_EPOCH $COMPATIBLE $MODDIR $OS_MODULES"
	sha256sum "$ROOT/scripts/mkrootfs.sh"
	cd "$HERE" && find . -type f | LC_ALL=C sort | xargs sha256sum
	sha256sum "$CACHE/bin/abctl-static" "$KEYS" "$KERNEL"
	cat /var/lib/apt/lists/*_InRelease 2>/dev/null | sha256sum
) | sha256sum | cut -c1-16)
IMG=$CACHE/debian-$VARIANT-$KEY
if [[ -n $FORCE || ! -e $IMG/.done ]]; then
	echo "build.sh: building the $VARIANT root (mmdebstrap)" >&2
	rm -rf "$IMG" && mkdir -p "$IMG"
	work=$(mktemp -d "$CACHE/debian.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	overlay="$HERE/rootfs"
	[[ $VARIANT == v3 ]] && overlay="$overlay $HERE/v3"
	units="abboot-mark-good.service abboot-agent.service"
	[[ $VARIANT == v3 ]] && units="$units abboot-selftest.service"
	# shellcheck disable=SC2016 # the hooks are run by mmdebstrap with $1 the root
	mmdebstrap --mode=root --variant=essential --format=directory -q \
		--include="systemd,systemd-sysv,udev,e2fsprogs,kmod,kexec-tools${PKGS:+,$PKGS}" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--customize-hook='mkdir -p "$1/usr/lib/modules" "$1/usr/bin" "$1/etc/abboot" "$1/efi"' \
		--customize-hook="cp -a '$MODDIR' \"\$1/usr/lib/modules/\"" \
		--customize-hook="install -m 0755 '$CACHE/bin/abctl-static' \"\$1/usr/bin/abctl\"" \
		--customize-hook="install -m 0644 '$KEYS' \"\$1/etc/abboot/keys.pub\"" \
		--customize-hook="echo '$COMPATIBLE' >\"\$1/etc/abboot/compatible\"" \
		--customize-hook="for d in $overlay; do cp -a \"\$d/.\" \"\$1/\"; done" \
		--customize-hook="chroot \"\$1\" systemctl preset $units" \
		--customize-hook='sed -i "s/^LOAD_KEXEC=.*/LOAD_KEXEC=false/" "$1/etc/default/kexec"' \
		--customize-hook='echo abboot-debian >"$1/etc/hostname"' \
		--customize-hook="printf 'IMAGE_ID=abboot-debian\nIMAGE_VERSION=$VERSION\n' >>\"\$1/usr/lib/os-release\"" \
		--customize-hook='chroot "$1" dpkg-query -W >"$1/../manifest"' \
		--customize-hook='rm -rf "$1"/var/log/* "$1"/var/cache/* "$1"/var/lib/apt/lists/* "$1"/var/lib/dpkg/*-old "$1"/var/lib/systemd/random-seed "$1"/etc/*- "$1"/var/lib/dbus/machine-id' \
		--customize-hook=': >"$1/etc/machine-id"' \
		bookworm "$work/root" || die "mmdebstrap failed"
	"$ROOT/scripts/mkrootfs.sh" -o erofs "$work/root" "$IMG/root.img" || die "mkrootfs.sh failed"
	# Padded with zeros to a multiple of 16 MiB, so that the slots, sized
	# for one variant, take the next ones (an install refuses a root larger
	# than the slot's partition); verity covers the padding too.
	truncate -s %16M "$IMG/root.img"
	mv "$work/manifest" "$IMG/manifest"
	rm -rf "$work"
	touch "$IMG/.done"
fi

# The UKI, its verity tree and root hash (mkuimage.sh owns those steps).
# The UKI's .osrel names the image and carries the version abboot compares
# (VERSION_ID, as for every UKI); the root keeps Debian's os-release with
# IMAGE_ID and IMAGE_VERSION (os-release(5)) added.
printf 'ID=abboot-debian\nID_LIKE=debian\nNAME="abboot Debian 12"\nVERSION_ID=%s\nIMAGE_ID=abboot-debian\nIMAGE_VERSION=%s\n' \
	"$VERSION" "$VERSION" >"${OUT%.efi}.osrel"
ABBOOT_OSREL="${OUT%.efi}.osrel" "$ROOT/mkuimage.sh" -v "$VERSION" -c "ro abboot.watchdog=$WATCHDOG" -R "$IMG/root.img" -o "$OUT" >/dev/null
cp "$IMG/manifest" "${OUT%.efi}.manifest"
rm -f "${OUT%.efi}.osrel"
echo "build.sh: $VARIANT root $IMG/root.img ($(du -h "$IMG/root.img" | cut -f1)), $(wc -l <"$IMG/manifest") packages" >&2
echo "$OUT"
