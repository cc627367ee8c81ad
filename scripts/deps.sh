#!/usr/bin/env bash
# deps.sh installs the Debian packages abboot's build, demo and tests use,
# and only those that are missing, so a second run costs nothing.
set -euo pipefail
pkgs=(
	qemu-system-x86 ovmf      # the virtual machine and its UEFI firmware
	systemd-boot-efi binutils # the UKI stub and objcopy
	cpio kmod zstd            # initramfs, module dependencies, compression
	mtools dosfstools gdisk   # FAT ESP images without root; sgdisk interop
	cgpt efibootmgr           # interop tests against the operators' tools
	cryptsetup-bin squashfs-tools erofs-utils sbsigntool
	casync                    # bench/delta.sh compares delta installs with it
	etcd-server               # /usr/bin/etcd for pkg/fleet's tests
	swtpm swtpm-tools         # a TPM for the measured-handover e2e test
	mmdebstrap                # images/debian: the Debian root of the real-OS tests
)
missing=()
for p in "${pkgs[@]}"; do
	[[ $p == \#* ]] && continue
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
echo "deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
