package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	ukipkg "github.com/abboot/abboot/pkg/uki"
)

// rootHash reads abboot.roothash from a UKI's signed command line.
func rootHash(t *testing.T, name string) string {
	t.Helper()
	img, err := ukipkg.ReadFile(uki[name], ".cmdline")
	if err != nil {
		t.Fatal(err)
	}
	p, err := bootparam.Parse(string(img.Sections[".cmdline"]))
	if err != nil || p.RootHash == "" {
		t.Fatalf("%s has no root hash: %v", name, err)
	}
	return p.RootHash
}

// rootImages are the root and verity images mkuimage.sh -r wrote.
func rootImages(name string) (root, tree string) {
	base := strings.TrimSuffix(uki[name], ".efi")
	return base + ".root.img", base + ".verity.img"
}

// verityDisk lays out UKIs a and b with their verity roots; contentB, when
// set, is the image whose root and tree go into B's partitions instead of
// b's own.
func verityDisk(t *testing.T, a, b, contentB string) string {
	t.Helper()
	if contentB == "" {
		contentB = b
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	args := []string{"disk", "-o", img,
		"--esp-file", "EFI/abboot/a.efi=" + uki[a], "--esp-file", "EFI/abboot/b.efi=" + uki[b], "--esp-file", "EFI/BOOT/BOOTX64.EFI=" + uki[a]}
	for _, sl := range []struct{ slot, name, content string }{{"a", a, a}, {"b", b, contentB}} {
		root, tree := rootImages(sl.content)
		args = append(args, "--verity-slot", strings.Join([]string{sl.slot, root, tree, rootHash(t, sl.name)}, ":"))
	}
	if out, err := run(repo, abimage, args...); err != nil {
		t.Fatalf("abimage %v: %v: %s", args, err, out)
	}
	return img
}

// TestVerityBoot: slot A boots through dm-verity to the demo's up line,
// with its state in the GPT.
func TestVerityBoot(t *testing.T) {
	m := newMachine(t, verityDisk(t, "r1", "r2", ""))
	vm := m.start()
	expect(t, vm, `abboot: event=start running=a how=roothash`)
	expect(t, vm, `abboot: event=verity slot=a roothash=`+rootHash(t, "r1")+` dev=/dev/dm-\d+ result=ok`)
	expect(t, vm, `abboot: event=mount slot=a dev=/dev/dm-\d+ fstype=erofs target=/newroot result=ok`)
	upAs(t, vm, "1", "a")
	out := strings.Join(command(t, vm, "abctl status"), "\n")
	if !strings.Contains(out, "store: gpt:/dev/vda") {
		t.Errorf("abctl status does not use the GPT store:\n%s", out)
	}
	poweroff(t, vm)
}

// TestVerityRootMismatch: B's partitions hold an image whose tree does not
// match the root hash in B's UKI; B's init marks B bad and hands back to A.
func TestVerityRootMismatch(t *testing.T) {
	_, vm := committedOn(t, verityDisk(t, "r1", "r2", "r1"))
	command(t, vm, "abctl set-active b")
	vm.Send("reboot\r")
	expect(t, vm, `abboot: event=select running=a best=b reason=trial tries=3->2 action=kexec`)
	expect(t, vm, `abboot: event=start running=b how=roothash`)
	expect(t, vm, `abboot: event=verity slot=b roothash=\S+ result=error err=".*does not match`)
	expect(t, vm, `abboot: event=select running=b best=a reason=root-failed action=kexec write=true`)
	expect(t, vm, `abboot: event=start running=a how=roothash`)
	upAs(t, vm, "1", "a")
	if b := status(t, vm).Slots[1]; b.Condition != "bad" {
		t.Errorf("B after its root failed: %+v, want bad", b)
	}
	poweroff(t, vm)
}

// TestVerityCorruptBlock: blocks of B's root are corrupted on disk after
// it was written; dm-verity restarts the machine when B reads one, each
// try is counted, and the system falls back to A.
func TestVerityCorruptBlock(t *testing.T) {
	disk := verityDisk(t, "r1", "r2", "")
	corruptRoot(t, disk, slot.B)
	failedTrialOn(t, disk, `verity: \S+: data block \d+ is corrupted`)
}

// corruptRoot flips one byte in every sixteenth 4 KiB block of slot s's
// root, past the superblock: its OS cannot start without reading one.
func corruptRoot(t *testing.T, disk string, s slot.Slot) {
	t.Helper()
	tab, err := gpt.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := tab.ByName(s.RootLabel())
	if !ok {
		t.Fatalf("no root partition for %s", s)
	}
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := int64(64 << 10); off < p.Size(tab.SectorSize); off += 64 << 10 {
		if _, err := f.WriteAt([]byte{0x5a}, p.Start(tab.SectorSize)+off+17); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReproducibleRoot: mkuimage.sh -r run again with the same inputs
// writes the same root and verity images, byte for byte, and so the same
// root hash: a delta install (pkg/delta) relies on unchanged files
// keeping their blocks, and a rebuild on changing nothing.
func TestReproducibleRoot(t *testing.T) {
	again := filepath.Join(t.TempDir(), "r1.efi")
	if out, err := run(repo, "./mkuimage.sh", "-v", "1", "-c", "abboot.watchdog=30", "-r", "-o", again); err != nil {
		t.Fatalf("mkuimage.sh: %v: %s", err, out)
	}
	root, tree := rootImages("r1")
	base := strings.TrimSuffix(again, ".efi")
	for _, f := range [][2]string{{root, base + ".root.img"}, {tree, base + ".verity.img"}} {
		a, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s and %s differ", f[0], f[1])
		}
	}
	img, err := ukipkg.ReadFile(again, ".cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if h := rootHash(t, "r1"); !strings.Contains(string(img.Sections[".cmdline"]), "abboot.roothash="+h) {
		t.Errorf("the second build's command line %q does not carry root hash %s", img.Sections[".cmdline"], h)
	}
}
