package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/verity"
)

const verityUsage = "usage: abimage verity format [flags] DATA HASH | verify [flags] DATA HASH ROOTHASH (flags: -h)"

// verityCmd builds (format) or checks (verify) a veritysetup-compatible
// hash tree on plain files or block devices.
func verityCmd(args []string) error {
	if len(args) == 0 {
		return errors.New(verityUsage)
	}
	switch args[0] {
	case "format":
		return verityFormat(args[1:])
	case "verify":
		return verityVerify(args[1:])
	}
	return fmt.Errorf("unknown subcommand %q; %s", args[0], verityUsage)
}

// verityFlags are the flags format and verify share, spelled as
// veritysetup spells them.
type verityFlags struct {
	fs   *flag.FlagSet
	p    verity.Params
	salt string
}

func newVerityFlags(name string) *verityFlags {
	f := &verityFlags{fs: flag.NewFlagSet("verity "+name, flag.ContinueOnError)}
	f.fs.StringVar(&f.salt, "salt", "", "salt in hex, or - for none (format default: 32 random bytes)")
	f.fs.BoolVar(&f.p.NoSuperblock, "no-superblock", false, "no superblock at the start of HASH")
	f.fs.IntVar(&f.p.DataBlockSize, "data-block-size", verity.DefaultBlockSize, "data block size in bytes")
	f.fs.IntVar(&f.p.HashBlockSize, "hash-block-size", verity.DefaultBlockSize, "hash block size in bytes")
	return f
}

// parse parses args and the salt and checks that want positional
// arguments remain.
func (f *verityFlags) parse(args []string, want int) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() != want {
		return errors.New(verityUsage)
	}
	switch f.salt {
	case "", "-":
		f.p.Salt = nil
	default:
		s, err := hex.DecodeString(f.salt)
		if err != nil {
			return fmt.Errorf("--salt %q is not hex", f.salt)
		}
		f.p.Salt = s
	}
	return nil
}

func verityFormat(args []string) error {
	f := newVerityFlags("format")
	var uuid string
	f.fs.StringVar(&uuid, "uuid", "", "uuid for the superblock (default random)")
	if err := f.parse(args, 2); err != nil {
		return err
	}
	p := f.p
	if f.salt == "" {
		if p.NoSuperblock {
			// Nothing would record a random salt, and the tree could
			// never be checked.
			return errors.New("--no-superblock needs --salt HEX (or --salt - for none)")
		}
		d, err := verity.NewParams()
		if err != nil {
			return err
		}
		p.Salt = d.Salt
	}
	if uuid != "" {
		g, err := guid.Parse(uuid)
		if err != nil {
			return fmt.Errorf("--uuid: %w", err)
		}
		p.UUID = g
	}
	dataPath, hashPath := f.fs.Arg(0), f.fs.Arg(1)
	data, size, err := openData(dataPath)
	if err != nil {
		return err
	}
	defer data.Close()
	// Check everything before HASH is touched.
	if _, err := verity.TreeSize(size, p); err != nil {
		return fmt.Errorf("%s: %w", dataPath, err)
	}
	if fi, err := os.Stat(hashPath); err == nil {
		if dfi, err := data.Stat(); err == nil && os.SameFile(fi, dfi) {
			return fmt.Errorf("DATA and HASH are the same file %s", dataPath)
		}
	}
	hash, err := os.OpenFile(hashPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	root, err := verity.Format(data, size, hash, p)
	if err == nil {
		err = hash.Sync()
	}
	if cerr := hash.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("formatting %s: %w", hashPath, err)
	}
	fmt.Println(hex.EncodeToString(root))
	return nil
}

func verityVerify(args []string) error {
	f := newVerityFlags("verify")
	if err := f.parse(args, 3); err != nil {
		return err
	}
	if f.p.NoSuperblock && f.salt == "" {
		return errors.New("--no-superblock needs the --salt given to format (or --salt - for none)")
	}
	root, err := verity.ParseRootHash(f.fs.Arg(2))
	if err != nil {
		return err
	}
	data, size, err := openData(f.fs.Arg(0))
	if err != nil {
		return err
	}
	defer data.Close()
	hash, err := os.Open(f.fs.Arg(1))
	if err != nil {
		return err
	}
	defer hash.Close()
	if err := verity.Verify(data, size, hash, root, f.p); err != nil {
		return fmt.Errorf("%s with %s: %w", f.fs.Arg(0), f.fs.Arg(1), err)
	}
	fmt.Println("ok")
	return nil
}

// openData opens a data image or block device read-only and returns its
// size (Stat reports 0 for block devices, so seek to the end).
func openData(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return f, size, nil
}
