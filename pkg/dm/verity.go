package dm

import (
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/abboot/abboot/pkg/verity"
)

// What a dm-verity device does when a block does not match its hash
// (verity.rst, optional parameters). With none of them a read of such a
// block fails with EIO.
const (
	RestartOnCorruption = "restart_on_corruption"
	PanicOnCorruption   = "panic_on_corruption"
	IgnoreCorruption    = "ignore_corruption"
)

// Verity describes a dm-verity target (kernel
// Documentation/admin-guide/device-mapper/verity.rst) over a data device
// and a veritysetup-format hash device.
type Verity struct {
	Name    string // device-mapper name, e.g. "abboot-root-a"
	DataDev string // block device of the data (root) partition
	HashDev string // block device of the hash tree (verity partition)
	// DataBlocks is the number of data blocks the tree covers; the
	// device is that many blocks long.
	DataBlocks uint64
	// HashStart is hash_start_block, in hash blocks: 1 with a
	// veritysetup superblock, which takes the first hash block.
	HashStart                    uint64
	DataBlockSize, HashBlockSize int
	Algorithm                    string // kernel crypto API name, "sha256"
	RootHash                     []byte
	Salt                         []byte // empty means no salt ("-")
	// OnCorruption is RestartOnCorruption, PanicOnCorruption,
	// IgnoreCorruption, or empty: then a corrupt block reads as EIO.
	// VerityFromSuperblock sets RestartOnCorruption, what a booting
	// system wants: a reboot that the boot counter turns into a
	// fallback, rather than an OS limping on with I/O errors.
	OnCorruption string
	UUID         string // optional device-mapper uuid
}

// Table returns the verity target's parameter line (verity.rst):
//
//	<version> <data_dev> <hash_dev> <data_block_size> <hash_block_size>
//	<num_data_blocks> <hash_start_block> <algorithm> <digest> <salt>
//	[<#opt_params> <opt_params>]
//
// Version 1 is the hash type veritysetup writes by default (salt hashed
// before each block); version 0, Chrome OS's, is not supported.
func (v Verity) Table() string {
	salt := "-"
	if len(v.Salt) > 0 {
		salt = hex.EncodeToString(v.Salt)
	}
	s := fmt.Sprintf("1 %s %s %d %d %d %d %s %s %s", v.DataDev, v.HashDev,
		v.DataBlockSize, v.HashBlockSize, v.DataBlocks, v.HashStart,
		v.Algorithm, hex.EncodeToString(v.RootHash), salt)
	if v.OnCorruption != "" {
		s += " 1 " + v.OnCorruption
	}
	return s
}

// Sectors is the length of the device in 512-byte sectors.
func (v Verity) Sectors() uint64 {
	return v.DataBlocks * uint64(v.DataBlockSize) / sectorSize
}

const sectorSize = 512

// check refuses what the kernel would refuse with no more than EINVAL and
// a line in the kernel log, and what would garble the table line.
// The name is checked by Create, so that VerityFromSuperblock's result can
// be checked before the caller names it.
func (v Verity) check() error {
	for _, f := range []struct{ what, s string }{
		{"data device", v.DataDev}, {"hash device", v.HashDev}, {"hash algorithm", v.Algorithm},
	} {
		if f.s == "" || strings.ContainsAny(f.s, " \t\n\x00") {
			return fmt.Errorf("dm-verity: %s %q is empty or contains whitespace", f.what, f.s)
		}
	}
	for _, bs := range []int{v.DataBlockSize, v.HashBlockSize} {
		if bs < sectorSize || bs&(bs-1) != 0 {
			return fmt.Errorf("dm-verity: block size %d is not a power of two of at least %d", bs, sectorSize)
		}
	}
	if v.DataBlocks == 0 || v.DataBlocks > math.MaxInt64/uint64(v.DataBlockSize) {
		return fmt.Errorf("dm-verity: %d data blocks is out of range", v.DataBlocks)
	}
	if len(v.RootHash) == 0 {
		return fmt.Errorf("dm-verity: no root hash")
	}
	switch v.OnCorruption {
	case "", RestartOnCorruption, PanicOnCorruption, IgnoreCorruption:
	default:
		return fmt.Errorf("dm-verity: unknown corruption mode %q", v.OnCorruption)
	}
	return nil
}

// VerityFromSuperblock describes a verity device over dataDev, with the geometry, salt and algorithm from the veritysetup
// superblock at the start of hashDev, the tree right after it
// (HashStart 1) and OnCorruption RestartOnCorruption. The root hash
// is not in the superblock: it comes from the signed kernel command line.
// The caller sets Name (and UUID).
func VerityFromSuperblock(dataDev, hashDev string, rootHash []byte) (Verity, error) {
	f, err := os.Open(hashDev)
	if err != nil {
		return Verity{}, fmt.Errorf("reading verity superblock: %w", err)
	}
	defer f.Close()
	sb, err := verity.ReadSuperblock(f)
	if err != nil {
		return Verity{}, fmt.Errorf("%s: %w", hashDev, err)
	}
	if sb.HashType != 1 {
		return Verity{}, fmt.Errorf("%s: verity hash type %d is not supported", hashDev, sb.HashType)
	}
	v := Verity{
		DataDev:       dataDev,
		HashDev:       hashDev,
		DataBlocks:    sb.DataBlocks,
		HashStart:     1,
		DataBlockSize: int(sb.DataBlockSize),
		HashBlockSize: int(sb.HashBlockSize),
		Algorithm:     sb.Algorithm,
		RootHash:      rootHash,
		Salt:          sb.Salt,
		OnCorruption:  RestartOnCorruption,
	}
	return v, v.check()
}
