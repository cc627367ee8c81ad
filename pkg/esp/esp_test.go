package esp

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
)

// machine lays out a fake /sys/class/block and /dev: disks maps a disk
// name to whether it gets a GPT with an ESP (else it is blank).
func machine(t *testing.T, disks map[string]bool) (sys, dev string) {
	t.Helper()
	dir := t.TempDir()
	sys, dev = filepath.Join(dir, "sys"), filepath.Join(dir, "dev")
	os.MkdirAll(dev, 0o755)
	for name, withESP := range disks {
		part := name + "1"
		if name[len(name)-1] >= '0' && name[len(name)-1] <= '9' {
			part = name + "p1"
		}
		os.MkdirAll(filepath.Join(sys, name, part), 0o755)
		os.WriteFile(filepath.Join(sys, name, part, "partition"), []byte("1\n"), 0o644)
		os.MkdirAll(filepath.Join(sys, part), 0o755) // sysfs lists partitions at the top too
		os.WriteFile(filepath.Join(sys, part, "partition"), []byte("1\n"), 0o644)
		if withESP {
			if err := diskimage.Build(filepath.Join(dev, name), diskimage.Spec{ESPSizeMiB: diskimage.MinESPSizeMiB}); err != nil {
				t.Fatal(err)
			}
		} else {
			os.WriteFile(filepath.Join(dev, name), make([]byte, 1<<20), 0o644)
		}
	}
	os.MkdirAll(filepath.Join(sys, "loop0"), 0o755)
	return sys, dev
}

func espUUID(t *testing.T, disk string) guid.GUID {
	tab, err := gpt.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	return tab.ByType(gpt.TypeESP)[0].UUID
}

func TestFind(t *testing.T) {
	sys, dev := machine(t, map[string]bool{"vda": false, "vdb": true, "nvme0n1": true})
	disks, err := Disks(sys, dev)
	if err != nil || len(disks) != 3 {
		t.Fatalf("Disks = %v, %v; want 3 disks, no partitions or loop devices", disks, err)
	}
	e, err := Find(sys, dev, guid.Zero)
	if err != nil {
		t.Fatal(err)
	}
	if e.Disk != filepath.Join(dev, "nvme0n1") || e.Dev != filepath.Join(dev, "nvme0n1p1") {
		t.Errorf("Find without preference = %s %s, want the first disk with an ESP", e.Disk, e.Dev)
	}
	want := espUUID(t, filepath.Join(dev, "vdb"))
	e, err = Find(sys, dev, want)
	if err != nil || e.Dev != filepath.Join(dev, "vdb1") || e.Part.UUID != want || e.SectorSize != 512 {
		t.Errorf("Find preferring vdb's ESP = %+v, %v", e, err)
	}
}

func TestFindNone(t *testing.T) {
	sys, dev := machine(t, map[string]bool{"vda": false})
	if _, err := Find(sys, dev, guid.Zero); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find on a blank disk: %v, want ErrNotFound", err)
	}
	if _, err := Find(filepath.Join(sys, "missing"), dev, guid.Zero); err == nil {
		t.Error("Find without sysfs succeeded")
	}
}
