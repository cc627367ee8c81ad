// Package esp finds the EFI system partition: the GPT partition of type
// c12a7328-f81f-11d2-ba4b-00a0c93ec93b (UEFI 2.10 §13.3.3) on one of the
// machine's whole disks, preferring the one the boot loader reported in
// LoaderDevicePartUUID. It reads partition tables; mounting is the
// caller's business, but for remounting a mounted ESP writable for a write.
package esp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
)

// ESP is one EFI system partition.
type ESP struct {
	Disk       string // whole-disk device, e.g. /dev/vda
	Dev        string // partition device, e.g. /dev/vda1
	Part       gpt.Partition
	SectorSize int
}

// ErrNotFound means no disk has an ESP.
var ErrNotFound = errors.New("no EFI system partition found")

// Disks lists the whole disks that sysBlock (normally /sys/class/block)
// shows, as device paths under devDir, in name order. RAM disks, loop
// devices and optical drives are left out: an ESP is never there.
func Disks(sysBlock, devDir string) ([]string, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("listing block devices: %w", err)
	}
	var disks []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "sr") || strings.HasPrefix(n, "dm-") {
			continue
		}
		if _, err := os.Stat(filepath.Join(sysBlock, n, "partition")); err == nil {
			continue
		}
		disks = append(disks, filepath.Join(devDir, n))
	}
	sort.Strings(disks)
	return disks, nil
}

// PartitionDev returns the device of partition number on disk, as sysfs
// names it (vda1, nvme0n1p1, mmcblk0p1).
func PartitionDev(sysBlock, devDir, disk string, number int) (string, error) {
	name := filepath.Base(disk)
	ents, err := os.ReadDir(filepath.Join(sysBlock, name))
	if err != nil {
		return "", fmt.Errorf("listing partitions of %s: %w", disk, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysBlock, name, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n == number {
			return filepath.Join(devDir, e.Name()), nil
		}
	}
	return "", fmt.Errorf("partition %d of %s: no device", number, disk)
}

// Find returns the ESP among disks. When several disks have one, the
// partition whose UUID is prefer wins, else the first disk's. Disks whose
// table cannot be read are skipped; their errors are returned with
// ErrNotFound when nothing was found.
func Find(sysBlock, devDir string, prefer guid.GUID) (*ESP, error) {
	disks, err := Disks(sysBlock, devDir)
	if err != nil {
		return nil, err
	}
	var found []*ESP
	var errs []error
	for _, d := range disks {
		e, err := onDisk(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e != nil {
			found = append(found, e)
		}
	}
	if len(found) == 0 {
		return nil, errors.Join(append([]error{fmt.Errorf("%w on %d disks", ErrNotFound, len(disks))}, errs...)...)
	}
	best := found[0]
	for _, e := range found {
		if !prefer.IsZero() && e.Part.UUID == prefer {
			best = e
		}
	}
	if best.Dev, err = PartitionDev(sysBlock, devDir, best.Disk, best.Part.Number); err != nil {
		return nil, err
	}
	return best, nil
}

// onDisk returns the disk's ESP, nil if it has none.
func onDisk(disk string) (*ESP, error) {
	t, err := gpt.ReadFile(disk)
	if err != nil {
		return nil, fmt.Errorf("reading GPT of %s: %w", disk, err)
	}
	p, ok := t.Find(func(p gpt.Partition) bool { return p.Type == gpt.TypeESP })
	if !ok {
		return nil, nil
	}
	return &ESP{Disk: disk, Part: p, SectorSize: t.SectorSize}, nil
}

// MountFlags are the flags abboot's init mounts the ESP with, besides
// MS_RDONLY; a remount must repeat them or it drops them.
const MountFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// WithWritable runs f with the ESP mounted at dir remounted read-write, and
// mounts it read-only again afterwards: abboot's init mounts it read-only
// so that nothing writes to it by accident.
func WithWritable(dir string, f func() error) error {
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|MountFlags, ""); err != nil {
		return fmt.Errorf("remounting the ESP at %s read-write: %w", dir, err)
	}
	err := f()
	if rerr := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|MountFlags, ""); rerr != nil && err == nil {
		err = fmt.Errorf("remounting the ESP at %s read-only: %w", dir, rerr)
	}
	return err
}
