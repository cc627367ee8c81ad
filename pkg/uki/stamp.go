package uki

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// stamp makes a UKI's PE header depend only on its inputs: objcopy writes
// the time of the build into the COFF header's TimeDateStamp (binutils
// 2.40 ignores SOURCE_DATE_EPOCH there), so stamp puts back the stub's
// own stamp and recomputes the optional header's CheckSum, which covers
// the stamp (PE/COFF §3.3 and §3.4.2). Then the same stub, kernel,
// initramfs, command line and os-release give the same bytes. It edits the
// file in place and reads it as a stream: a whole-OS initramfs can be too
// large to hold in memory.
func stamp(path string, stubTime uint32) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 4096)
	n, err := f.ReadAt(hdr, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	at, err := peChecksumOffset(hdr[:n])
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], stubTime)
	if _, err := f.WriteAt(b[:], int64(binary.LittleEndian.Uint32(hdr[0x3c:]))+8); err != nil {
		return err
	}
	sum, err := peChecksum(io.NewSectionReader(f, 0, 1<<62), at)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	binary.LittleEndian.PutUint32(b[:], sum)
	if _, err := f.WriteAt(b[:], int64(at)); err != nil {
		return err
	}
	return f.Close()
}

// peChecksumOffset is the offset of the optional header's CheckSum field in
// an image whose headers are hdr: after "PE\0\0", the 20-byte COFF header
// and 64 bytes of the optional header.
func peChecksumOffset(hdr []byte) (int, error) {
	if len(hdr) < 0x40 {
		return 0, fmt.Errorf("not a PE image: %d bytes", len(hdr))
	}
	pe := int(binary.LittleEndian.Uint32(hdr[0x3c:]))
	if pe < 0 || pe+4+20+68 > len(hdr) || string(hdr[pe:pe+4]) != "PE\x00\x00" {
		return 0, fmt.Errorf("not a PE image: no PE signature at %#x", pe)
	}
	return pe + 4 + 20 + 64, nil
}

// peChecksum is the image checksum of Windows' CheckSumMappedFile, which
// PE/COFF leaves unspecified: the file summed as 16-bit little-endian words
// with the carry folded back in, the CheckSum field at offset at read as
// zero, plus the file's length.
func peChecksum(r io.Reader, at int) (uint32, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var sum uint32
	var off int
	for {
		lo, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		hi, err := br.ReadByte()
		switch {
		case errors.Is(err, io.EOF):
			hi = 0
		case err != nil:
			return 0, err
		}
		w := uint32(lo) | uint32(hi)<<8
		if off >= at && off < at+4 {
			w = 0
		}
		if err == nil {
			off += 2
		} else {
			off++
		}
		sum += w
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return sum + uint32(off), nil
}
