package gpt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"unicode/utf16"

	"github.com/abboot/abboot/pkg/guid"
)

const (
	signature = "EFI PART"
	// revision is GPT 1.0, the only revision UEFI 2.10 defines.
	revision = 0x00010000
	// headerSize is the size of the defined header fields (§5.3.2
	// Table 5.5); a header may declare more, up to one sector, and the
	// extra bytes are covered by its CRC and kept as they are.
	headerSize = 92
	// entrySize and entryCount are what every tool writes and what UEFI
	// requires at least room for (16 KiB of entries, §5.3.2).
	entrySize  = 128
	entryCount = 128
	// maxEntriesBytes bounds the entry array a header may declare, so a
	// corrupt header cannot make us allocate the size of the disk. It is
	// 64 times what any tool writes by default.
	maxEntriesBytes = 1 << 20
	// nameUnits is the length of PartitionName in UTF-16 code units.
	nameUnits = 36
)

// header is a decoded GPT header (UEFI 2.10 §5.3.2 Table 5.5).
type header struct {
	// raw is the header as read (HeaderSize bytes); rewriting a header
	// starts from it so that fields beyond the ones we know survive.
	raw         []byte
	myLBA       uint64
	altLBA      uint64
	firstUsable uint64
	lastUsable  uint64
	diskGUID    guid.GUID
	entriesLBA  uint64
	entryCount  uint32
	entrySize   uint32
	entriesCRC  uint32
}

// parseHeader decodes and checks the header in sector: signature, size
// and CRC32. It does not check where the header points.
func parseHeader(sector []byte) (header, error) {
	le := binary.LittleEndian
	if len(sector) < headerSize || string(sector[:8]) != signature {
		return header{}, errors.New("no GPT header signature")
	}
	size := le.Uint32(sector[12:])
	if size < headerSize || int(size) > len(sector) {
		return header{}, fmt.Errorf("header size %d outside %d..%d", size, headerSize, len(sector))
	}
	raw := append([]byte(nil), sector[:size]...)
	want := le.Uint32(raw[16:])
	if got := headerCRC(raw); got != want {
		return header{}, fmt.Errorf("header CRC32 is %#08x, computed %#08x", want, got)
	}
	h := header{
		raw:         raw,
		myLBA:       le.Uint64(raw[24:]),
		altLBA:      le.Uint64(raw[32:]),
		firstUsable: le.Uint64(raw[40:]),
		lastUsable:  le.Uint64(raw[48:]),
		entriesLBA:  le.Uint64(raw[72:]),
		entryCount:  le.Uint32(raw[80:]),
		entrySize:   le.Uint32(raw[84:]),
		entriesCRC:  le.Uint32(raw[88:]),
	}
	copy(h.diskGUID[:], raw[56:72])
	return h, nil
}

// headerCRC computes the header CRC32 over raw with the CRC field taken
// as zero (§5.3.2).
func headerCRC(raw []byte) uint32 {
	c := crc32.Update(0, crc32.IEEETable, raw[:16])
	c = crc32.Update(c, crc32.IEEETable, make([]byte, 4))
	return crc32.Update(c, crc32.IEEETable, raw[20:])
}

// marshal encodes h into a sector of sectorSize bytes with a fresh CRC.
func (h header) marshal(sectorSize int) []byte {
	le := binary.LittleEndian
	b := make([]byte, sectorSize)
	copy(b, h.raw)
	copy(b[:8], signature)
	le.PutUint64(b[24:], h.myLBA)
	le.PutUint64(b[32:], h.altLBA)
	le.PutUint64(b[40:], h.firstUsable)
	le.PutUint64(b[48:], h.lastUsable)
	copy(b[56:72], h.diskGUID[:])
	le.PutUint64(b[72:], h.entriesLBA)
	le.PutUint32(b[80:], h.entryCount)
	le.PutUint32(b[84:], h.entrySize)
	le.PutUint32(b[88:], h.entriesCRC)
	le.PutUint32(b[16:], headerCRC(b[:len(h.raw)]))
	return b
}

// newHeader returns the header fields every copy of a fresh table
// shares; the caller places it.
func newHeader(diskGUID guid.GUID, firstUsable, lastUsable uint64, entriesCRC uint32) header {
	raw := make([]byte, headerSize)
	binary.LittleEndian.PutUint32(raw[8:], revision)
	binary.LittleEndian.PutUint32(raw[12:], headerSize)
	return header{
		raw:         raw,
		firstUsable: firstUsable,
		lastUsable:  lastUsable,
		diskGUID:    diskGUID,
		entryCount:  entryCount,
		entrySize:   entrySize,
		entriesCRC:  entriesCRC,
	}
}

// entriesSectors is the number of sectors the entry array occupies.
func (h header) entriesSectors(sectorSize int) uint64 {
	n := uint64(h.entryCount) * uint64(h.entrySize)
	return (n + uint64(sectorSize) - 1) / uint64(sectorSize)
}

// at returns a copy of h placed as the copy whose header is at myLBA,
// pointing to the other copy's header at altLBA and to its own entries at
// entriesLBA.
func (h header) at(myLBA, altLBA, entriesLBA uint64) header {
	h.myLBA, h.altLBA, h.entriesLBA = myLBA, altLBA, entriesLBA
	return h
}

// checkGeometry checks that what h points to fits on a disk whose last
// LBA is lastLBA: the usable range lies between the two headers and the
// entry array is on the disk and outside the usable range.
func (h header) checkGeometry(lastLBA uint64, sectorSize int) error {
	if h.entrySize < entrySize || h.entrySize%entrySize != 0 || (h.entrySize/entrySize)&(h.entrySize/entrySize-1) != 0 {
		return fmt.Errorf("entry size %d is not 128 times a power of two", h.entrySize)
	}
	if n := uint64(h.entryCount) * uint64(h.entrySize); n > maxEntriesBytes {
		return fmt.Errorf("entry array of %d bytes exceeds the %d bytes we accept", n, maxEntriesBytes)
	}
	if h.firstUsable < 2 || h.firstUsable > h.lastUsable || h.lastUsable >= lastLBA {
		return fmt.Errorf("usable range LBA %d-%d does not fit between the headers at LBA 1 and %d", h.firstUsable, h.lastUsable, lastLBA)
	}
	n := h.entriesSectors(sectorSize)
	if n == 0 {
		return nil
	}
	if h.entriesLBA < 2 || h.entriesLBA >= lastLBA || n > lastLBA-h.entriesLBA {
		return fmt.Errorf("entry array at LBA %d (%d sectors) is not between the headers at LBA 1 and %d", h.entriesLBA, n, lastLBA)
	}
	if end := h.entriesLBA + n - 1; end >= h.firstUsable && h.entriesLBA <= h.lastUsable {
		return fmt.Errorf("entry array at LBA %d-%d overlaps the usable range LBA %d-%d", h.entriesLBA, end, h.firstUsable, h.lastUsable)
	}
	return nil
}

// parseEntries decodes the used entries of the array and checks that
// each lies in the usable range and that none overlap (§5.3.3).
func parseEntries(h header, entries []byte) ([]Partition, error) {
	le := binary.LittleEndian
	var ps []Partition
	for i := 0; i < int(h.entryCount); i++ {
		e := entries[i*int(h.entrySize):][:entrySize]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type.IsZero() {
			continue
		}
		p.Number = i + 1
		copy(p.UUID[:], e[16:32])
		p.FirstLBA = le.Uint64(e[32:])
		p.LastLBA = le.Uint64(e[40:])
		p.Attributes = le.Uint64(e[48:])
		p.Name = decodeName(e[56:128])
		if p.FirstLBA > p.LastLBA || p.FirstLBA < h.firstUsable || p.LastLBA > h.lastUsable {
			return nil, fmt.Errorf("partition %d at LBA %d-%d is outside the usable range LBA %d-%d", p.Number, p.FirstLBA, p.LastLBA, h.firstUsable, h.lastUsable)
		}
		ps = append(ps, p)
	}
	if err := checkOverlap(ps); err != nil {
		return nil, err
	}
	return ps, nil
}

// checkOverlap fails if two partitions share a sector.
func checkOverlap(ps []Partition) error {
	sorted := append([]Partition(nil), ps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].FirstLBA < sorted[j].FirstLBA })
	for i := 1; i < len(sorted); i++ {
		if a, b := sorted[i-1], sorted[i]; b.FirstLBA <= a.LastLBA {
			return fmt.Errorf("partitions %d and %d overlap", a.Number, b.Number)
		}
	}
	return nil
}

// encodeEntry writes p into the 128 defined bytes of an entry.
func encodeEntry(e []byte, p Partition) error {
	units := utf16.Encode([]rune(p.Name))
	if len(units) > nameUnits {
		return fmt.Errorf("partition %d: name %q is longer than %d UTF-16 code units", p.Number, p.Name, nameUnits)
	}
	le := binary.LittleEndian
	copy(e[0:16], p.Type[:])
	copy(e[16:32], p.UUID[:])
	le.PutUint64(e[32:], p.FirstLBA)
	le.PutUint64(e[40:], p.LastLBA)
	le.PutUint64(e[48:], p.Attributes)
	for i, u := range units {
		le.PutUint16(e[56+2*i:], u)
	}
	return nil
}

// decodeName decodes a NUL-terminated UTF-16LE partition name.
func decodeName(b []byte) string {
	var units []uint16
	for i := 0; i+1 < len(b); i += 2 {
		u := binary.LittleEndian.Uint16(b[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	return string(utf16.Decode(units))
}

// attributesOffset and uuidOffset are where an entry keeps its attribute
// bits and its unique partition GUID (UEFI 2.10 §5.3.3, Table 5.6).
const (
	attributesOffset = 48
	uuidOffset       = 16
)
