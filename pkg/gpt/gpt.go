// Package gpt reads, repairs, edits and creates GUID Partition Tables
// (UEFI 2.10 §5.3) on block devices and image files.
//
// It is what abboot needs and no more: find partitions, change the
// attribute bits and unique GUIDs of one or more partitions in one
// crash-safe edit (pkg/slotstore keeps the slot state in attribute bits;
// a slot's new root is found by the UUIDs its root hash gives),
// restore a broken copy of the table from the good one, and write a fresh
// table for a new image. It does not add, delete, move or resize
// partitions on an existing disk, does not convert MBR disks, and does not
// ask the kernel to re-read a partition table: attribute changes do not
// need it, and abboot's init finds partitions by UUID by reading the GPT
// itself, so a changed UUID is seen on the next boot without it.
//
// Reading never writes. Every change to an existing table (Edit,
// SetAttributesOf and SetAttributes built on it, and Repair) keeps at
// least one valid copy of the table on disk at every moment, so a power
// cut at any point leaves a disk that Read accepts and that shows either
// the old or the new state.
package gpt

import (
	"fmt"

	"github.com/abboot/abboot/pkg/guid"
)

// Partition type GUIDs abboot uses: the ESP (UEFI 2.10 §5.3.3 Table 5.7)
// and the x86-64 root and root-verity types, the /var type (the OS's
// persistent data; any architecture) and the generic Linux data type of the
// Discoverable Partitions Specification.
var (
	TypeESP              = guid.MustParse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	TypeRootX86_64       = guid.MustParse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
	TypeRootVerityX86_64 = guid.MustParse("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5")
	TypeVar              = guid.MustParse("4d21b016-b534-45c2-a9fb-5c16e091fd2d")
	TypeLinuxData        = guid.MustParse("0fc63daf-8483-4772-8e79-3d69d8477de4")
)

// DataLabel is the GPT name of the OS's data partition (/var), which
// abimage disk --data makes and the Debian image mounts by this label
// (docs/own-os.md). abboot never writes it.
const DataLabel = "abboot-data"

// Partition is one used entry of the partition entry array
// (UEFI 2.10 §5.3.3 Table 5.6).
type Partition struct {
	// Number is the 1-based index of the entry in the array, the number
	// Linux uses for the partition device (sda1) and cgpt's -i.
	Number int
	Type   guid.GUID
	UUID   guid.GUID
	// FirstLBA and LastLBA are inclusive.
	FirstLBA, LastLBA uint64
	// Attributes are the 64 attribute bits, plain (UEFI 2.10 §5.3.3
	// Table 5.8): 0-2 defined by UEFI (required, no block I/O, legacy
	// BIOS bootable), 48-63 type-specific. What bits 48-63 mean on
	// abboot's root partitions is pkg/slotstore's.
	Attributes uint64
	// Name is the partition label, at most 36 UTF-16 code units.
	Name string
}

// Start returns the partition's byte offset on a disk with the given
// logical sector size.
func (p Partition) Start(sectorSize int) int64 {
	return int64(p.FirstLBA) * int64(sectorSize)
}

// Size returns the partition's size in bytes.
func (p Partition) Size(sectorSize int) int64 {
	return int64(p.LastLBA-p.FirstLBA+1) * int64(sectorSize)
}

func (p Partition) String() string {
	return fmt.Sprintf("partition %d %q (type %s, uuid %s, LBA %d-%d, attributes %#x)",
		p.Number, p.Name, p.Type, p.UUID, p.FirstLBA, p.LastLBA, p.Attributes)
}

// Table is a partition table as read from a disk.
type Table struct {
	SectorSize     int
	DiskGUID       guid.GUID
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	EntryCount     uint32
	EntrySize      uint32
	// Partitions holds the used entries in entry order.
	Partitions []Partition

	// PrimaryErr says why the primary copy (header at LBA 1) is not
	// usable; nil when it is valid. When it is set, the table above
	// comes from the backup.
	PrimaryErr error
	// BackupErr says why the backup copy (header at the last LBA) is
	// not usable or does not match the primary; nil when it is valid and
	// agrees. A power cut during SetAttributes can leave a valid backup
	// that is one edit ahead of the primary; it is reported here.
	BackupErr error
}

// NeedsRepair reports whether one copy of the table is broken or stale,
// which Repair fixes.
func (t *Table) NeedsRepair() bool {
	return t.PrimaryErr != nil || t.BackupErr != nil
}

// Find returns the first partition, in entry order, for which pred is
// true.
func (t *Table) Find(pred func(Partition) bool) (Partition, bool) {
	for _, p := range t.Partitions {
		if pred(p) {
			return p, true
		}
	}
	return Partition{}, false
}

// ByUUID returns the partition whose unique partition GUID is u.
func (t *Table) ByUUID(u guid.GUID) (Partition, bool) {
	return t.Find(func(p Partition) bool { return p.UUID == u })
}

// ByName returns the first partition labelled name.
func (t *Table) ByName(name string) (Partition, bool) {
	return t.Find(func(p Partition) bool { return p.Name == name })
}

// ByType returns all partitions of type typ, in entry order; a disk has
// two root partitions, one per slot.
func (t *Table) ByType(typ guid.GUID) []Partition {
	var ps []Partition
	for _, p := range t.Partitions {
		if p.Type == typ {
			ps = append(ps, p)
		}
	}
	return ps
}
