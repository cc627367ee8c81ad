package gpt

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/abboot/abboot/pkg/guid"
)

// Alignment is where Layout starts partitions: 1 MiB, as parted, sgdisk
// and systemd-repart do, which suits every sector and erase-block size.
const Alignment = 1 << 20

// Layout sets FirstLBA and LastLBA of parts, in order, for a disk of size
// bytes with the standard 128-entry table: each partition starts on the
// next Alignment boundary and spans sizes[i] bytes rounded up to whole
// sectors. It fails when they do not fit.
func Layout(size int64, sectorSize int, parts []Partition, sizes []int64) error {
	if len(parts) != len(sizes) {
		return fmt.Errorf("laying out partitions: %d partitions but %d sizes", len(parts), len(sizes))
	}
	_, lastUsable, err := usableRange(size, sectorSize)
	if err != nil {
		return fmt.Errorf("laying out partitions: %w", err)
	}
	align := uint64(Alignment / sectorSize)
	next := align
	for i := range parts {
		if sizes[i] <= 0 {
			return fmt.Errorf("laying out partitions: partition %q has size %d", parts[i].Name, sizes[i])
		}
		first := (next + align - 1) / align * align
		last := first + (uint64(sizes[i])+uint64(sectorSize)-1)/uint64(sectorSize) - 1
		if last > lastUsable {
			return fmt.Errorf("laying out partitions: partition %q (%d bytes) ends at LBA %d, past the last usable LBA %d of a %d-byte disk", parts[i].Name, sizes[i], last, lastUsable, size)
		}
		parts[i].FirstLBA, parts[i].LastLBA = first, last
		next = last + 1
	}
	return nil
}

// usableRange returns the usable LBAs of a disk of size bytes with a
// 128-entry table right after each header.
func usableRange(size int64, sectorSize int) (first, last uint64, err error) {
	if sectorSize < 512 || sectorSize > 4096 || sectorSize&(sectorSize-1) != 0 {
		return 0, 0, fmt.Errorf("sector size %d is not a power of two from 512 to 4096", sectorSize)
	}
	n := uint64(entryCount * entrySize / sectorSize)
	lastLBA := uint64(size/int64(sectorSize)) - 1
	if size < int64(sectorSize)*int64(2*n+4) {
		return 0, 0, fmt.Errorf("a %d-byte disk is too small for a GPT", size)
	}
	return 2 + n, lastLBA - 1 - n, nil
}

// Create writes a fresh GPT to w, a disk of size bytes: the protective
// MBR (UEFI 2.10 §5.2.3), the primary header at LBA 1 with 128 entries of
// 128 bytes from LBA 2, and the backup entries and header at the end.
// Partitions must already be placed (see Layout); a Number of 0 means
// "the entry after the previous one". Create writes nothing when the
// partitions are invalid. It does not sync; the caller does.
func Create(w io.WriterAt, size int64, sectorSize int, diskGUID guid.GUID, parts []Partition) error {
	firstUsable, lastUsable, err := usableRange(size, sectorSize)
	if err != nil {
		return fmt.Errorf("creating GPT: %w", err)
	}
	if diskGUID.IsZero() {
		return fmt.Errorf("creating GPT: disk GUID is zero")
	}
	h := newHeader(diskGUID, firstUsable, lastUsable, 0)
	entries := make([]byte, entryCount*entrySize)
	placed := make([]Partition, len(parts))
	used := map[int]bool{}
	number := 0
	for i, p := range parts {
		if p.Number == 0 {
			p.Number = number + 1
		}
		number = p.Number
		switch {
		case p.Number < 1 || p.Number > entryCount:
			return fmt.Errorf("creating GPT: partition number %d outside 1..%d", p.Number, entryCount)
		case used[p.Number]:
			return fmt.Errorf("creating GPT: partition number %d used twice", p.Number)
		case p.Type.IsZero():
			return fmt.Errorf("creating GPT: partition %d has the zero type GUID, which marks an unused entry", p.Number)
		case p.UUID.IsZero():
			return fmt.Errorf("creating GPT: partition %d has the zero unique GUID", p.Number)
		case p.FirstLBA > p.LastLBA || p.FirstLBA < firstUsable || p.LastLBA > lastUsable:
			return fmt.Errorf("creating GPT: partition %d at LBA %d-%d is outside the usable range LBA %d-%d", p.Number, p.FirstLBA, p.LastLBA, firstUsable, lastUsable)
		}
		used[p.Number] = true
		if err := encodeEntry(entries[(p.Number-1)*entrySize:], p); err != nil {
			return fmt.Errorf("creating GPT: %w", err)
		}
		placed[i] = p
	}
	if err := checkOverlap(placed); err != nil {
		return fmt.Errorf("creating GPT: %w", err)
	}
	h.entriesCRC = crc32.ChecksumIEEE(entries)

	lastLBA := uint64(size/int64(sectorSize)) - 1
	ss := int64(sectorSize)
	writes := []struct {
		lba  uint64
		data []byte
	}{
		{0, protectiveMBR(lastLBA, sectorSize)},
		{2, entries},
		{1, h.at(1, lastLBA, 2).marshal(sectorSize)},
		{lastUsable + 1, entries},
		{lastLBA, h.at(lastLBA, 1, lastUsable+1).marshal(sectorSize)},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, int64(wr.lba)*ss); err != nil {
			return fmt.Errorf("creating GPT: writing LBA %d: %w", wr.lba, err)
		}
	}
	return nil
}

// protectiveMBR returns LBA 0 of a GPT disk whose last LBA is lastLBA: one
// partition record of type 0xEE covering the disk (UEFI 2.10 §5.2.3
// Tables 5.3 and 5.4), so that MBR-only tools see the disk as in use.
func protectiveMBR(lastLBA uint64, sectorSize int) []byte {
	b := make([]byte, sectorSize)
	r := b[446:462]
	copy(r[1:4], []byte{0x00, 0x02, 0x00}) // starting CHS: sector 2 (LBA 1)
	r[4] = 0xee
	copy(r[5:8], chs(lastLBA))
	binary.LittleEndian.PutUint32(r[8:], 1)
	binary.LittleEndian.PutUint32(r[12:], uint32(min(lastLBA, 0xffffffff)))
	b[510], b[511] = 0x55, 0xaa
	return b
}

// chs encodes lba as an MBR cylinder-head-sector address in the usual
// 255-head, 63-sector geometry, or 0xFFFFFF when it does not fit.
func chs(lba uint64) []byte {
	const heads, sectors = 255, 63
	c := lba / (heads * sectors)
	if c > 1023 {
		return []byte{0xff, 0xff, 0xff}
	}
	h := lba / sectors % heads
	s := lba%sectors + 1
	return []byte{byte(h), byte(s) | byte(c>>8)<<6, byte(c)}
}
