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

// Table is one whole disk's partition table, or why it could not be read.
type Table struct {
	Disk string
	GPT  *gpt.Table // nil when Err is set
	Err  error
}

// Scan reads the partition table of every whole disk, so that a caller
// looking for several partitions (the ESP, then a slot's root) reads each
// disk once. Only listing the disks is an error; an unreadable table is
// recorded in its Table.
func Scan(sysBlock, devDir string) ([]Table, error) {
	disks, err := Disks(sysBlock, devDir)
	if err != nil {
		return nil, err
	}
	tables := make([]Table, len(disks))
	for i, d := range disks {
		tables[i].Disk = d
		if tables[i].GPT, err = gpt.ReadFile(d); err != nil {
			tables[i].Err = fmt.Errorf("reading GPT of %s: %w", d, err)
		}
	}
	return tables, nil
}

// Find returns the ESP among the whole disks that sysBlock shows: Scan,
// then Pick.
func Find(sysBlock, devDir string, prefer guid.GUID) (*ESP, error) {
	tables, err := Scan(sysBlock, devDir)
	if err != nil {
		return nil, err
	}
	return Pick(sysBlock, devDir, tables, prefer)
}

// Pick returns the ESP among scanned disks. When several disks have one,
// the partition whose UUID is prefer wins, else the first disk's. Disks
// whose table could not be read are skipped; their errors are returned
// with ErrNotFound when nothing was found.
func Pick(sysBlock, devDir string, tables []Table, prefer guid.GUID) (*ESP, error) {
	var found []*ESP
	var errs []error
	for _, t := range tables {
		if t.Err != nil {
			errs = append(errs, t.Err)
			continue
		}
		if p, ok := t.GPT.Find(func(p gpt.Partition) bool { return p.Type == gpt.TypeESP }); ok {
			found = append(found, &ESP{Disk: t.Disk, Part: p, SectorSize: t.GPT.SectorSize})
		}
	}
	if len(found) == 0 {
		return nil, errors.Join(append([]error{fmt.Errorf("%w on %d disks", ErrNotFound, len(tables))}, errs...)...)
	}
	best := found[0]
	for _, e := range found {
		if !prefer.IsZero() && e.Part.UUID == prefer {
			best = e
		}
	}
	var err error
	if best.Dev, err = PartitionDev(sysBlock, devDir, best.Disk, best.Part.Number); err != nil {
		return nil, err
	}
	return best, nil
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
