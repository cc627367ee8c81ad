package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/dm"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/verity"
)

// root is a slot's read-only root: its root and verity partitions.
type root struct {
	slot             slot.Slot
	disk             string
	dataDev, hashDev string
	hash             []byte
}

// findRoot finds the partitions of the root hash on any disk. By the
// Discoverable Partitions Specification the root partition's UUID is the
// first 128 bits of the hash and the verity partition's the last 128 bits;
// the root partition's label (abboot-root-a, -b) names the slot.
func (b *boot) findRoot(hexHash string) (*root, error) {
	hash, err := verity.ParseRootHash(hexHash)
	if err != nil {
		return nil, err
	}
	rootUUID, verityUUID := verity.PartitionUUIDs(hash)
	for _, dt := range b.tables {
		d, t := dt.Disk, dt.GPT
		if t == nil {
			continue
		}
		rp, ok1 := t.ByUUID(rootUUID)
		vp, ok2 := t.ByUUID(verityUUID)
		if !ok1 || !ok2 {
			continue
		}
		r := &root{disk: d, hash: hash}
		for _, s := range slot.All {
			if rp.Name == s.RootLabel() {
				r.slot = s
			}
		}
		if r.slot == "" {
			return nil, fmt.Errorf("root partition %s on %s is labelled %q, not abboot-root-a or -b", rootUUID, d, rp.Name)
		}
		if r.dataDev, err = esp.PartitionDev(b.sysBlock, b.devDir, d, rp.Number); err != nil {
			return nil, err
		}
		if r.hashDev, err = esp.PartitionDev(b.sysBlock, b.devDir, d, vp.Number); err != nil {
			return nil, err
		}
		return r, nil
	}
	return nil, fmt.Errorf("no disk has partitions %s (root) and %s (verity) for root hash %s", rootUUID, verityUUID, hexHash)
}

// mountRoot checks the root hash against the top of the tree, sets up
// the dm-verity device (abboot.verity, by default panic_on_corruption: a
// block that does not match panics the kernel, which leaves a crash
// record naming the slot; the selector counts that as a failed try, or as
// a crash of a committed slot) and mounts it read-only at dir.
func (b *boot) mountRoot(r *root, dir string) error {
	if err := checkRoot(r); err != nil {
		b.log.Error("verity", err, "slot", r.slot, "roothash", hex.EncodeToString(r.hash))
		return err
	}
	v, err := dm.VerityFromSuperblock(r.dataDev, r.hashDev, r.hash)
	if err == nil {
		v.Name = "abboot-root-" + string(r.slot)
		v.OnCorruption = b.params.VerityMode
	}
	dev := ""
	if err == nil {
		dev, err = dm.Create(v)
	}
	if err != nil {
		b.log.Error("verity", err, "slot", r.slot, "roothash", hex.EncodeToString(r.hash))
		return err
	}
	b.log.Log("verity", "slot", r.slot, "roothash", hex.EncodeToString(r.hash), "dev", dev, "result", "ok")
	fstype, err := fsType(dev)
	if err == nil {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			err = unix.Mount(dev, dir, fstype, unix.MS_RDONLY, "")
		}
	}
	if err != nil {
		b.log.Error("mount", err, "slot", r.slot, "dev", dev)
		dm.Remove(v.Name)
		return err
	}
	b.log.Log("mount", "slot", r.slot, "dev", dev, "fstype", fstype, "target", dir, "result", "ok")
	return nil
}

// checkRoot compares the root hash with the top of the tree before the
// device exists, so that a root hash belonging to another image is a
// clean failure (rule 4) rather than a restart on the first read.
func checkRoot(r *root) error {
	data, err := os.Open(r.dataDev)
	if err != nil {
		return err
	}
	defer data.Close()
	hash, err := os.Open(r.hashDev)
	if err != nil {
		return err
	}
	defer hash.Close()
	size, err := data.Seek(0, 2)
	if err != nil {
		return err
	}
	return verity.CheckRoot(data, size, hash, r.hash)
}

// fsType tells squashfs from erofs by their superblock magic.
func fsType(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, 1028)
	if _, err := f.ReadAt(b, 0); err != nil {
		return "", fmt.Errorf("reading the root's superblock: %w", err)
	}
	switch {
	case bytes.Equal(b[:4], []byte("hsqs")):
		return "squashfs", nil
	case bytes.Equal(b[1024:1028], []byte{0xe2, 0xe1, 0xf5, 0xe0}): // EROFS_SUPER_MAGIC_V1, little-endian
		return "erofs", nil
	}
	return "", errors.New("the root is neither squashfs nor erofs")
}

// moveInto moves the ESP mount into the new root before the switch, so the
// OS (abctl) still finds it where the run state says.
func moveInto(newRoot, espDir string) error {
	if espDir == "" {
		return nil
	}
	return unix.Mount(espDir, filepath.Join(newRoot, espDir), "", unix.MS_MOVE, "")
}
