package diskimage

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
)

func randomFile(t *testing.T, dir, name string, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	uki, ukiBytes := randomFile(t, dir, "a.efi", 300<<10+7)
	fallback, fallbackBytes := randomFile(t, dir, "boot.efi", 5000)
	root, rootBytes := randomFile(t, dir, "root.img", 1<<20+512) // rounds up to 2 MiB
	rootUUID := guid.MustParse("5f1c0001-0203-4405-8607-08090a0b0c0d")
	rootAttrs := uint64(0x31 << 48) // cgpt priority 1, tries 3
	out := filepath.Join(dir, "disk.img")
	err := Build(out, Spec{
		ESPSizeMiB: 40,
		ESPFiles: map[string]string{
			"EFI/abboot/a.efi":     uki,
			"EFI/BOOT/BOOTX64.EFI": fallback,
		},
		Partitions: []PartSpec{
			{Label: "abboot-root-a", Type: gpt.TypeRootX86_64, UUID: rootUUID, Image: root, Attributes: rootAttrs},
			{Label: "data", Type: gpt.TypeLinuxData, SizeMiB: 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(40+2+1+2) << 20; fi.Size() != want {
		t.Errorf("disk is %d bytes, want %d", fi.Size(), want)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 4 {
		t.Errorf("directory holds %d entries, want the 3 inputs and the disk (no temporary files)", len(ents))
	}

	tab, err := gpt.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tab.NeedsRepair() || len(tab.Partitions) != 3 {
		t.Fatalf("table: %+v", tab)
	}
	esp, r, data := tab.Partitions[0], tab.Partitions[1], tab.Partitions[2]
	if esp.Type != gpt.TypeESP || esp.Name != "ESP" || esp.Start(512) != 1<<20 || esp.Size(512) != 40<<20 {
		t.Errorf("ESP: %v", esp)
	}
	if r.Type != gpt.TypeRootX86_64 || r.UUID != rootUUID || r.Name != "abboot-root-a" || r.Attributes != rootAttrs ||
		r.Start(512) != 41<<20 || r.Size(512) != 2<<20 {
		t.Errorf("root: %v", r)
	}
	if data.Type != gpt.TypeLinuxData || data.UUID.IsZero() || data.UUID == esp.UUID || data.Start(512) != 43<<20 || data.Size(512) != 1<<20 {
		t.Errorf("data: %v", data)
	}

	// sgdisk sees the same table.
	p := testutil.Run(t, "sgdisk", "-p", out)
	for _, want := range []string{
		"   1            2048           83967   40.0 MiB    EF00  ESP",
		"   2           83968           88063   2.0 MiB     8304  abboot-root-a",
		"   3           88064           90111   1024.0 KiB  8300  data",
	} {
		if !strings.Contains(p, want) {
			t.Errorf("sgdisk -p lacks %q:\n%s", want, p)
		}
	}
	if i := testutil.Run(t, "sgdisk", "-i", "2", out); !strings.Contains(i, "Partition unique GUID: "+strings.ToUpper(rootUUID.String())) {
		t.Errorf("sgdisk -i 2:\n%s", i)
	}

	// The root image is at its partition's start, followed by zeros.
	disk, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	part := disk[r.Start(512) : r.Start(512)+r.Size(512)]
	if !bytes.Equal(part[:len(rootBytes)], rootBytes) || !bytes.Equal(part[len(rootBytes):], make([]byte, len(part)-len(rootBytes))) {
		t.Errorf("root partition does not hold the root image")
	}

	// mtools reads the ESP at its offset in the disk; fsck.vfat finds
	// the filesystem clean.
	img := fmt.Sprintf("%s@@%d", out, esp.Start(512))
	for name, want := range map[string][]byte{"EFI/abboot/a.efi": ukiBytes, "EFI/BOOT/BOOTX64.EFI": fallbackBytes} {
		got := filepath.Join(t.TempDir(), "got")
		testutil.Run(t, "mcopy", "-i", img, "::/"+name, got)
		if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s in the ESP: %d bytes, %v; want %d bytes", name, len(b), err, len(want))
		}
	}
	if label := testutil.Run(t, "mlabel", "-i", img, "-s", "::"); !strings.Contains(label, "ESP") {
		t.Errorf("ESP volume label: %q", label)
	}
	espImg := filepath.Join(t.TempDir(), "esp.img")
	if err := os.WriteFile(espImg, disk[esp.Start(512):esp.Start(512)+esp.Size(512)], 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "fsck.vfat", "-n", espImg)
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	file, _ := randomFile(t, dir, "f", 100)
	big, _ := randomFile(t, dir, "big", 1<<20+1)
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"missing ESP file", Spec{ESPFiles: map[string]string{"EFI/a.efi": filepath.Join(dir, "nope")}}, "nope"},
		{"ESP file is a directory", Spec{ESPFiles: map[string]string{"EFI/a.efi": dir}}, "not a regular file"},
		{"ESP path escapes", Spec{ESPFiles: map[string]string{"../a.efi": file}}, "inside the ESP"},
		{"ESP path empty", Spec{ESPFiles: map[string]string{"/": file}}, "inside the ESP"},
		{"ESP paths differ in case", Spec{ESPFiles: map[string]string{"EFI/a.efi": file, "efi/A.EFI": file}}, "same FAT file"},
		{"image too big", Spec{Partitions: []PartSpec{{Label: "r", Type: gpt.TypeRootX86_64, Image: big, SizeMiB: 1}}}, "larger than the partition"},
		{"missing image", Spec{Partitions: []PartSpec{{Label: "r", Type: gpt.TypeRootX86_64, Image: filepath.Join(dir, "nope")}}}, "nope"},
		{"no type", Spec{Partitions: []PartSpec{{Label: "r", SizeMiB: 1}}}, "no type"},
		{"no size", Spec{Partitions: []PartSpec{{Label: "r", Type: gpt.TypeLinuxData}}}, "needs an image or a size"},
		{"disk too small", Spec{SizeMiB: 34, ESPSizeMiB: 33}, "past the last usable LBA"},
		{"ESP too small for FAT32", Spec{ESPSizeMiB: 32}, "FAT32 needs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "disk.img")
			if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := Build(out, tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, tc.want)
			}
			if b, _ := os.ReadFile(out); string(b) != "old" {
				t.Errorf("failed Build changed %s", out)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 3 {
				t.Errorf("failed Build left files behind: %v", ents)
			}
		})
	}
}

func TestBuildMissingTool(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	out := filepath.Join(t.TempDir(), "disk.img")
	err := Build(out, Spec{})
	if err == nil || !strings.Contains(err.Error(), "mkfs.vfat not found: apt-get install dosfstools") {
		t.Errorf("Build without mkfs.vfat: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("Build without mkfs.vfat left %s: %v", out, err)
	}
}
