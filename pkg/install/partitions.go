package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/verity"
)

// openDisk opens the disk and finds the slot's partitions and the UUIDs
// its root hash gives them, refusing a root hash that another partition
// already carries: the init would find that one.
func (in *installer) openDisk() error {
	var err error
	if in.rootHash, err = hex.DecodeString(in.m.RootHash); err != nil || len(in.rootHash) != sha256.Size {
		return fmt.Errorf("root hash %q: want %d bytes of hex", in.m.RootHash, sha256.Size)
	}
	if in.dev, in.disk, err = openDisk(in.t, true); err != nil {
		return err
	}
	tab, err := in.disk.Read()
	if err != nil {
		return err
	}
	if in.parts, err = slotPartitions(tab, in.t.Slot); err != nil {
		return err
	}
	if in.parts == nil {
		return fmt.Errorf("%s has no partitions %s and %s", in.t.Disk, in.t.Slot.RootLabel(), in.t.Slot.VerityLabel())
	}
	rootUUID, verityUUID := verity.PartitionUUIDs(in.rootHash)
	in.uuids = map[string]guid.GUID{bundle.PayloadRoot: rootUUID, bundle.PayloadVerity: verityUUID}
	for name, u := range in.uuids {
		if p, ok := tab.ByUUID(u); ok && p.Number != in.parts[name].Number {
			return fmt.Errorf("partition %d (%s) already has UUID %s of root hash %s: is this root installed in the other slot?", p.Number, p.Name, u, in.m.RootHash)
		}
	}
	return nil
}

// openDisk opens t.Disk as a GPT disk.
func openDisk(t Target, writable bool) (Device, *gpt.Disk, error) {
	var dev Device
	var err error
	if t.OpenDisk != nil {
		dev, err = t.OpenDisk()
	} else {
		flag := os.O_RDONLY
		if writable {
			flag = os.O_RDWR
		}
		dev, err = os.OpenFile(t.Disk, flag, 0)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening disk: %w", err)
	}
	size, err := dev.Seek(0, io.SeekEnd)
	if err == nil {
		var d *gpt.Disk
		if d, err = gpt.OpenFile(dev, t.Disk, size, 0, writable); err == nil {
			return dev, d, nil
		}
	}
	dev.Close()
	return nil, nil, fmt.Errorf("opening disk %s: %w", t.Disk, err)
}

// slotPartitions returns slot s's root and verity partitions by payload
// name (slotstore.Partitions), nil when it has neither.
func slotPartitions(tab *gpt.Table, s slot.Slot) (map[string]gpt.Partition, error) {
	root, verity, ok, err := slotstore.Partitions(tab, s)
	if err != nil || !ok {
		return nil, err
	}
	return map[string]gpt.Partition{bundle.PayloadRoot: root, bundle.PayloadVerity: verity}, nil
}

// tempPath is where the UKI is written before it replaces the old one.
func tempPath(s slot.Slot) string { return atomicfile.TempPath(s.UKIPath()) }

// statfs is unix.Statfs; a test replaces it, since the free space of a
// file system that other tests write to changes under it.
var statfs = unix.Statfs

// SlotSizes returns the space for each payload in slot t.Slot, for
// bundle.SlotSizes: the sizes of its root and verity partitions on
// t.Disk (none when the disk has neither, or t.Disk is ""), and for the
// UKI the free space on the ESP at t.ESPDir, plus what a temporary UKI
// left by an interrupted install takes (it is overwritten). The old UKI
// stays until the new one is complete, so its space does not count.
func SlotSizes(t Target) (map[string]int64, error) {
	var fsStat unix.Statfs_t
	if err := statfs(t.ESPDir, &fsStat); err != nil {
		return nil, fmt.Errorf("free space on the ESP at %s: %w", t.ESPDir, err)
	}
	free := int64(fsStat.Bavail) * fsStat.Bsize
	if fi, err := os.Stat(path.Join(t.ESPDir, tempPath(t.Slot))); err == nil {
		free += fi.Size()
	}
	sizes := map[string]int64{bundle.PayloadUKI: free}
	if t.Disk == "" {
		return sizes, nil
	}
	dev, d, err := openDisk(t, false)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	tab, err := d.Read()
	if err != nil {
		return nil, err
	}
	parts, err := slotPartitions(tab, t.Slot)
	if err != nil {
		return nil, err
	}
	for name, p := range parts {
		sizes[name] = p.Size(tab.SectorSize)
	}
	return sizes, nil
}
