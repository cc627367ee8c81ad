package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/abboot/abboot/pkg/guid"
)

// SuperblockSize is the size of the on-disk superblock. The hash tree
// starts at the next hash block boundary (cryptsetup lib/verity/verity.c,
// struct verity_sb and VERITY_hash_offset_block).
const SuperblockSize = 512

// signature opens every superblock: "verity" padded with NULs to 8 bytes.
var signature = [8]byte{'v', 'e', 'r', 'i', 't', 'y'}

// MaxSaltSize is the largest salt the superblock can hold.
const MaxSaltSize = 256

// Block sizes cryptsetup accepts: powers of two from 512 bytes to 512 KiB
// (it answers "Unsupported VERITY block size." outside that range).
const (
	minBlockSize = 512
	maxBlockSize = 512 << 10
)

// Superblock is the 512-byte header veritysetup writes at the start of the
// hash device unless told --no-superblock. Only superblock version 1
// exists. All integers are little-endian; the layout is
//
//	0   signature "verity\0\0"   8
//	8   version (1)              4
//	12  hash type (0 Chrome OS, 1 normal)  4
//	16  uuid (RFC 9562 byte order)        16
//	32  algorithm, NUL-padded             32
//	64  data block size          4
//	68  hash block size          4
//	72  data blocks              8
//	80  salt size                2
//	82  padding                  6
//	88  salt                   256
//	344 padding                168
type Superblock struct {
	HashType      uint32 // 1: hash(salt || block), what Format writes; 0: Chrome OS
	UUID          guid.GUID
	Algorithm     string // e.g. "sha256"
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// ReadSuperblock reads and checks the superblock at the start of r. It
// checks what veritysetup checks (signature, version, hash type, block
// sizes, salt size) so that a header veritysetup refuses is refused here.
func ReadSuperblock(r io.ReaderAt) (*Superblock, error) {
	var b [SuperblockSize]byte
	if _, err := r.ReadAt(b[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading verity superblock: device shorter than %d bytes", SuperblockSize)
		}
		return nil, fmt.Errorf("reading verity superblock: %w", err)
	}
	return parseSuperblock(b[:])
}

func parseSuperblock(b []byte) (*Superblock, error) {
	le := binary.LittleEndian
	if !bytes.Equal(b[0:8], signature[:]) {
		return nil, fmt.Errorf("no verity superblock (signature % x)", b[0:8])
	}
	if v := le.Uint32(b[8:]); v != 1 {
		return nil, fmt.Errorf("verity superblock version %d is not supported", v)
	}
	alg := b[32:64]
	n := bytes.IndexByte(alg, 0)
	if n < 0 {
		return nil, fmt.Errorf("verity superblock: algorithm name is not NUL-terminated")
	}
	sb := &Superblock{
		HashType:      le.Uint32(b[12:]),
		UUID:          guid.FromBigEndian(b[16:32]),
		Algorithm:     string(alg[:n]),
		DataBlockSize: le.Uint32(b[64:]),
		HashBlockSize: le.Uint32(b[68:]),
		DataBlocks:    le.Uint64(b[72:]),
	}
	if sb.HashType > 1 {
		return nil, fmt.Errorf("verity superblock: hash type %d is not supported", sb.HashType)
	}
	for _, bs := range []uint32{sb.DataBlockSize, sb.HashBlockSize} {
		if err := checkBlockSize(int64(bs)); err != nil {
			return nil, fmt.Errorf("verity superblock: %w", err)
		}
	}
	if sb.DataBlocks == 0 || sb.DataBlocks > maxDataBytes/uint64(sb.DataBlockSize) {
		return nil, fmt.Errorf("verity superblock: %d data blocks of %d bytes is out of range", sb.DataBlocks, sb.DataBlockSize)
	}
	saltSize := int(le.Uint16(b[80:]))
	if saltSize > MaxSaltSize {
		return nil, fmt.Errorf("verity superblock: salt size %d exceeds %d", saltSize, MaxSaltSize)
	}
	sb.Salt = bytes.Clone(b[88 : 88+saltSize])
	return sb, nil
}

// MarshalBinary encodes sb as the 512-byte on-disk superblock.
func (sb *Superblock) MarshalBinary() ([]byte, error) {
	if len(sb.Salt) > MaxSaltSize {
		return nil, fmt.Errorf("verity salt of %d bytes exceeds %d", len(sb.Salt), MaxSaltSize)
	}
	if len(sb.Algorithm) >= 32 || bytes.IndexByte([]byte(sb.Algorithm), 0) >= 0 {
		return nil, fmt.Errorf("verity algorithm name %q does not fit the superblock", sb.Algorithm)
	}
	le := binary.LittleEndian
	b := make([]byte, SuperblockSize)
	copy(b, signature[:])
	le.PutUint32(b[8:], 1)
	le.PutUint32(b[12:], sb.HashType)
	// The uuid is libuuid's uuid_t, i.e. the text form's byte order; the
	// byte swap of guid.FromBigEndian is its own inverse.
	be := guid.FromBigEndian(sb.UUID[:])
	copy(b[16:32], be[:])
	copy(b[32:64], sb.Algorithm)
	le.PutUint32(b[64:], sb.DataBlockSize)
	le.PutUint32(b[68:], sb.HashBlockSize)
	le.PutUint64(b[72:], sb.DataBlocks)
	le.PutUint16(b[80:], uint16(len(sb.Salt)))
	copy(b[88:], sb.Salt)
	return b, nil
}
