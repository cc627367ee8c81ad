package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/guid"
)

// File is the storage under a Disk: an *os.File, or a wrapper a test
// uses to cut writes at any point.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes the writes so far durable (fsync; on a block device
	// this also flushes the device's write cache).
	Sync() error
}

// ErrNeedsRepair is returned by SetAttributes(Of) when one copy of the table
// is broken or stale. SetAttributes refuses rather than repairing
// implicitly, so that the caller decides (and logs) when a repair
// happens; call Repair and retry.
var ErrNeedsRepair = errors.New("one copy of the GPT is broken or stale; repair it first")

// Disk is a block device or image file holding a GPT.
type Disk struct {
	f          File
	closer     io.Closer
	name       string
	size       int64
	sectorSize int
	writable   bool
}

// Open opens the block device or image file at path. The logical sector
// size of a block device comes from the kernel (BLKSSZGET); for an image
// file it is 512 or 4096, whichever has a GPT header at LBA 1 or at the
// last LBA, and 512 when neither does.
func Open(path string, writable bool) (*Disk, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("opening disk: %w", err)
	}
	size, sectorSize, err := geometry(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening disk %s: %w", path, err)
	}
	d, err := OpenFile(f, path, size, sectorSize, writable)
	if err != nil {
		f.Close()
		return nil, err
	}
	d.closer = f
	return d, nil
}

// geometry returns the size and, for a block device, the logical sector
// size of f; 0 means "detect from the content".
func geometry(f *os.File) (size int64, sectorSize int, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fi.Size(), 0, nil
	}
	fd := int(f.Fd())
	if sectorSize, err = unix.IoctlGetInt(fd, unix.BLKSSZGET); err != nil {
		return 0, 0, fmt.Errorf("BLKSSZGET: %w", err)
	}
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, 0, fmt.Errorf("BLKGETSIZE64: %w", e)
	}
	return int64(n), sectorSize, nil
}

// OpenFile returns a Disk over f, which is size bytes long. sectorSize 0
// detects 512 or 4096 from the content as Open does for image files. name
// is used in error messages. Close does not close f.
func OpenFile(f File, name string, size int64, sectorSize int, writable bool) (*Disk, error) {
	d := &Disk{f: f, name: name, size: size, sectorSize: sectorSize, writable: writable}
	if sectorSize == 0 {
		d.sectorSize = detectSectorSize(f, size)
	}
	if d.sectorSize < 512 || d.sectorSize&(d.sectorSize-1) != 0 {
		return nil, fmt.Errorf("opening disk %s: sector size %d is not a power of two of at least 512", name, d.sectorSize)
	}
	if size/int64(d.sectorSize) < 3 {
		return nil, fmt.Errorf("opening disk %s: %d bytes is too small for a GPT", name, size)
	}
	return d, nil
}

// detectSectorSize looks for a GPT header at LBA 1, then at the last
// LBA, for each sector size a disk image may have.
func detectSectorSize(r io.ReaderAt, size int64) int {
	sig := make([]byte, len(signature))
	for _, off := range []func(ss int64) int64{
		func(ss int64) int64 { return ss },
		func(ss int64) int64 { return (size/ss - 1) * ss },
	} {
		for _, ss := range []int64{512, 4096} {
			if _, err := r.ReadAt(sig, off(ss)); err == nil && string(sig) == signature {
				return int(ss)
			}
		}
	}
	return 512
}

// Close closes the device or file if Open opened it.
func (d *Disk) Close() error {
	if d.closer == nil {
		return nil
	}
	return d.closer.Close()
}

// SectorSize returns the logical sector size in bytes.
func (d *Disk) SectorSize() int { return d.sectorSize }

// Size returns the size of the disk in bytes.
func (d *Disk) Size() int64 { return d.size }

func (d *Disk) lastLBA() uint64 { return uint64(d.size/int64(d.sectorSize)) - 1 }

// tableCopy is one of the two copies of the table: a header and the
// entry array it points to.
type tableCopy struct {
	h       header
	entries []byte
	parts   []Partition
}

// readCopy reads and checks the copy whose header is at lba.
func (d *Disk) readCopy(lba uint64) (*tableCopy, error) {
	sector := make([]byte, d.sectorSize)
	if _, err := d.f.ReadAt(sector, int64(lba)*int64(d.sectorSize)); err != nil {
		return nil, fmt.Errorf("reading header at LBA %d: %w", lba, err)
	}
	h, err := parseHeader(sector)
	if err != nil {
		return nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	if h.myLBA != lba {
		return nil, fmt.Errorf("header at LBA %d says it is at LBA %d", lba, h.myLBA)
	}
	if err := h.checkGeometry(d.lastLBA(), d.sectorSize); err != nil {
		return nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	entries := make([]byte, int(h.entryCount)*int(h.entrySize))
	if _, err := d.f.ReadAt(entries, int64(h.entriesLBA)*int64(d.sectorSize)); err != nil {
		return nil, fmt.Errorf("reading entries at LBA %d: %w", h.entriesLBA, err)
	}
	if got := crc32.ChecksumIEEE(entries); got != h.entriesCRC {
		return nil, fmt.Errorf("entries at LBA %d: CRC32 is %#08x, header says %#08x", h.entriesLBA, got, h.entriesCRC)
	}
	parts, err := parseEntries(h, entries)
	if err != nil {
		return nil, fmt.Errorf("entries at LBA %d: %w", h.entriesLBA, err)
	}
	return &tableCopy{h: h, entries: entries, parts: parts}, nil
}

// state is both copies as found on disk.
type state struct {
	primary, backup       *tableCopy // nil when unreadable
	primaryErr, backupErr error
}

// good returns the copy to trust: the primary when valid (UEFI 2.10
// §5.3.2 makes it authoritative), else the backup.
func (s *state) good() *tableCopy {
	if s.primaryErr == nil {
		return s.primary
	}
	return s.backup
}

// load reads both copies; it fails only when neither is usable.
func (d *Disk) load() (*state, error) {
	s := &state{}
	s.primary, s.primaryErr = d.readCopy(1)
	s.backup, s.backupErr = d.readCopy(d.lastLBA())
	switch {
	case s.primaryErr != nil && s.backupErr != nil:
		return nil, fmt.Errorf("reading GPT of %s: primary: %v; backup: %v", d.name, s.primaryErr, s.backupErr)
	case s.primaryErr != nil:
		return s, nil
	case s.primary.h.altLBA != d.lastLBA():
		// The disk grew, or the header is wrong: the backup is
		// expected somewhere other than where we, and the firmware,
		// look for it.
		s.backupErr = fmt.Errorf("primary header places the backup at LBA %d, not at the last LBA %d", s.primary.h.altLBA, d.lastLBA())
	case s.backupErr == nil:
		s.backupErr = agree(s.primary, s.backup)
	}
	return s, nil
}

// agree reports how the backup b differs from the primary p, ignoring
// the fields that place each copy.
func agree(p, b *tableCopy) error {
	switch {
	case p.h.diskGUID != b.h.diskGUID:
		return fmt.Errorf("backup disk GUID differs from primary")
	case p.h.firstUsable != b.h.firstUsable || p.h.lastUsable != b.h.lastUsable:
		return fmt.Errorf("backup usable range LBA %d-%d differs from primary LBA %d-%d", b.h.firstUsable, b.h.lastUsable, p.h.firstUsable, p.h.lastUsable)
	case !bytes.Equal(p.entries, b.entries) || p.h.entrySize != b.h.entrySize:
		return fmt.Errorf("backup partition entries differ from primary")
	}
	return nil
}

// Read reads the table: the primary copy when it is valid, else the
// backup. Both header and entry array CRC32s are checked, and so is that
// every partition lies in the usable range without overlap. The returned
// Table says which copy is broken or stale. Read never writes.
func (d *Disk) Read() (*Table, error) {
	s, err := d.load()
	if err != nil {
		return nil, err
	}
	c := s.good()
	return &Table{
		SectorSize:     d.sectorSize,
		DiskGUID:       c.h.diskGUID,
		FirstUsableLBA: c.h.firstUsable,
		LastUsableLBA:  c.h.lastUsable,
		EntryCount:     c.h.entryCount,
		EntrySize:      c.h.entrySize,
		Partitions:     c.parts,
		PrimaryErr:     s.primaryErr,
		BackupErr:      s.backupErr,
	}, nil
}

// writeCopy writes the entry array bytes [from, to) of the copy
// described by h (whole sectors around them; none when from == to) and
// then its header, and syncs. Entries go first so that a cut between the two writes leaves
// the old header, whose CRC then no longer matches: that copy is broken,
// never silently wrong, and the other copy is untouched.
func (d *Disk) writeCopy(h header, entries []byte, from, to int) error {
	ss := d.sectorSize
	from = from / ss * ss
	to = min((to+ss-1)/ss*ss, len(entries))
	if from < to {
		if _, err := d.f.WriteAt(entries[from:to], int64(h.entriesLBA)*int64(ss)+int64(from)); err != nil {
			return fmt.Errorf("writing entries at LBA %d: %w", h.entriesLBA, err)
		}
	}
	if _, err := d.f.WriteAt(h.marshal(ss), int64(h.myLBA)*int64(ss)); err != nil {
		return fmt.Errorf("writing header at LBA %d: %w", h.myLBA, err)
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("syncing: %w", err)
	}
	return nil
}

func (d *Disk) checkWritable() error {
	if !d.writable {
		return fmt.Errorf("%s is open read-only", d.name)
	}
	return nil
}

// Repair rewrites the broken or stale copy of the table from the good
// one. The good copy is never written while it is the only good one, so
// a cut at any point leaves a disk that Read accepts. When the primary is
// good, the backup is rewritten at the last LBA and only then, if the
// primary pointed elsewhere (the disk grew), the primary's header is
// updated to point to it. When the primary is broken, it is rebuilt from
// the backup with its entries at LBA 2. Repair does nothing to a healthy
// disk and fails when neither copy is usable.
func (d *Disk) Repair() error {
	if err := d.checkWritable(); err != nil {
		return fmt.Errorf("repairing GPT: %w", err)
	}
	s, err := d.load()
	if err != nil {
		return fmt.Errorf("repairing: %w", err)
	}
	last := d.lastLBA()
	switch {
	case s.primaryErr != nil:
		b := s.backup
		h := b.h.at(1, last, 2)
		if err := h.checkGeometry(last, d.sectorSize); err != nil {
			return fmt.Errorf("repairing primary GPT of %s from backup: %w", d.name, err)
		}
		if err := d.writeCopy(h, b.entries, 0, len(b.entries)); err != nil {
			return fmt.Errorf("repairing primary GPT of %s: %w", d.name, err)
		}
	case s.backupErr != nil:
		p := s.primary
		h := p.h.at(last, 1, last-p.h.entriesSectors(d.sectorSize))
		if err := h.checkGeometry(last, d.sectorSize); err != nil {
			return fmt.Errorf("repairing backup GPT of %s from primary: %w", d.name, err)
		}
		if err := d.writeCopy(h, p.entries, 0, len(p.entries)); err != nil {
			return fmt.Errorf("repairing backup GPT of %s: %w", d.name, err)
		}
		if p.h.altLBA != last {
			if err := d.writeCopy(p.h.at(1, last, p.h.entriesLBA), p.entries, 0, 0); err != nil {
				return fmt.Errorf("pointing primary GPT of %s to the repaired backup: %w", d.name, err)
			}
		}
	}
	return nil
}

// SetAttributes sets the attribute bits of partition number (1-based
// entry index) to attrs; it is SetAttributesOf with one partition.
func (d *Disk) SetAttributes(number int, attrs uint64) error {
	return d.SetAttributesOf(map[int]uint64{number: attrs})
}

// SetAttributesOf sets the attribute bits of several partitions in one
// edit: attrs maps a partition number (1-based entry index) to its new
// bits. It is Edit with only attributes; see there for the write order and
// what a power cut leaves. This is what lets both slots' state change
// atomically.
func (d *Disk) SetAttributesOf(attrs map[int]uint64) error {
	changes := make(map[int]PartitionEdit, len(attrs))
	for n, a := range attrs {
		changes[n] = PartitionEdit{Attributes: &a}
	}
	return d.edit(changes, "setting attributes of")
}

// PartitionEdit is the change Edit makes to one partition; a nil field
// keeps its value.
type PartitionEdit struct {
	// Attributes are the new 64 attribute bits.
	Attributes *uint64
	// UUID is the new unique partition GUID. It must not be zero and
	// must differ from every other partition's after the edit (UEFI
	// 2.10 §5.3.3, Table 5.6: UniquePartitionGUID is unique for every
	// partition entry); the DPS root hash UUIDs of a new root are set
	// this way.
	UUID *guid.GUID
}

// Edit changes the attribute bits and unique GUIDs of several partitions
// in one edit: changes maps a partition number (1-based entry index) to
// its change. It writes the backup copy first (the entry sectors spanning
// every changed field in one write, header, fsync) and then the primary
// (the same), so at any moment at most one copy is being changed: after a
// cut the disk reads as the old state of every partition (primary intact)
// or the new state of every partition (backup complete, primary broken or
// stale), never a mix, and Repair makes the copies agree again. So a new
// root's UUIDs and its slot's state bits land together.
//
// It writes nothing when every partition already is as asked (a
// steady-state boot must not write) and fails with ErrNeedsRepair when
// either copy is broken or stale, since writing over the only good copy
// would break the guarantee above. A number that names no partition, a
// zero UUID or one that another partition would share is an error and
// nothing is written.
func (d *Disk) Edit(changes map[int]PartitionEdit) error {
	return d.edit(changes, "editing")
}

// edit is Edit; what says what it does, for errors.
func (d *Disk) edit(changes map[int]PartitionEdit, what string) error {
	numbers := slices.Sorted(maps.Keys(changes))
	wrap := func(err error) error {
		return fmt.Errorf("%s partitions %v on %s: %w", what, numbers, d.name, err)
	}
	if err := d.checkWritable(); err != nil {
		return wrap(err)
	}
	s, err := d.load()
	if err != nil {
		return wrap(err)
	}
	if s.primaryErr != nil || s.backupErr != nil {
		return wrap(fmt.Errorf("%w (primary: %v; backup: %v)", ErrNeedsRepair, s.primaryErr, s.backupErr))
	}
	p := s.primary
	entries := append([]byte(nil), p.entries...)
	// [from, to) spans the changed fields.
	from, to := len(entries), 0
	put := func(off int, b []byte) {
		if !bytes.Equal(entries[off:off+len(b)], b) {
			copy(entries[off:], b)
			from, to = min(from, off), max(to, off+len(b))
		}
	}
	for _, number := range numbers {
		if !slices.ContainsFunc(p.parts, func(q Partition) bool { return q.Number == number }) {
			return wrap(fmt.Errorf("no partition %d", number))
		}
		c := changes[number]
		off := (number - 1) * int(p.h.entrySize)
		if c.Attributes != nil {
			put(off+attributesOffset, binary.LittleEndian.AppendUint64(nil, *c.Attributes))
		}
		if c.UUID != nil {
			if c.UUID.IsZero() {
				return wrap(fmt.Errorf("partition %d: zero unique GUID", number))
			}
			put(off+uuidOffset, c.UUID[:])
		}
	}
	if from >= to {
		return nil
	}
	after, err := parseEntries(p.h, entries)
	if err != nil {
		return wrap(err)
	}
	for _, number := range numbers {
		u := changes[number].UUID
		if u == nil {
			continue
		}
		for _, q := range after {
			if q.Number != number && q.UUID == *u {
				return wrap(fmt.Errorf("partition %d would share unique GUID %s with partition %d", number, *u, q.Number))
			}
		}
	}
	crc := crc32.ChecksumIEEE(entries)
	for _, h := range []header{s.backup.h, p.h} {
		h.entriesCRC = crc
		if err := d.writeCopy(h, entries, from, to); err != nil {
			return wrap(err)
		}
	}
	return nil
}

// ReadFile reads the partition table of the disk or image at path.
func ReadFile(path string) (*Table, error) {
	d, err := Open(path, false)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Read()
}
