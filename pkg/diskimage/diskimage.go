// Package diskimage builds a GPT disk image file from image files alone:
// an ESP holding the given files, followed by partitions filled from
// filesystem, verity or data images. It needs no root and no loop
// devices: the FAT filesystem is made with mkfs.vfat (dosfstools) and
// filled with mtools in a separate file, and every image is copied to its
// partition's offset.
//
// It does not compute verity trees, sign anything, or choose slot state;
// callers pass partition UUIDs (DPS derives them from the verity root
// hash) and attribute bits. Disks have 512-byte sectors.
package diskimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/tool"
)

// DefaultESPSizeMiB is the ESP size when Spec.ESPSizeMiB is 0. It holds
// the three UKIs abboot keeps (a.efi, b.efi and the BOOTX64.EFI fallback
// copy) at up to about 60 MiB each, plus the temporary copy an update
// writes before renaming it into place.
const DefaultESPSizeMiB = 256

// MinESPSizeMiB is the smallest ESP: FAT32 (which UEFI 2.10 §13.3.1.1
// expects on the ESP of a fixed disk) needs at least 65525 clusters, and
// with 512-byte clusters and the FATs that takes 33 MiB. mkfs.vfat only
// warns below that and makes a filesystem that strict readers count as
// FAT16.
const MinESPSizeMiB = 33

const (
	mib        = 1 << 20
	sectorSize = 512
	// espLabel is both the GPT partition name and the FAT volume label.
	espLabel = "ESP"
)

// Spec describes a disk image.
type Spec struct {
	// SizeMiB is the size of the disk; 0 makes it just big enough: the
	// partitions plus 1 MiB before them (protective MBR, primary GPT,
	// alignment) and 1 MiB after them (backup GPT).
	SizeMiB int
	// ESPSizeMiB is the size of the ESP, partition 1; 0 means
	// DefaultESPSizeMiB.
	ESPSizeMiB int
	// ESPFiles maps a path inside the ESP, such as
	// "EFI/abboot/a.efi", to the host file to copy there. Directories
	// are created as needed. FAT ignores case, so two paths that
	// differ only in case are an error.
	ESPFiles map[string]string
	// Partitions follow the ESP, in order, as partitions 2, 3, ...
	Partitions []PartSpec
}

// PartSpec describes one partition after the ESP.
type PartSpec struct {
	// Label is the GPT partition name, e.g. "abboot-root-a".
	Label string
	// Type is the partition type GUID; it must be set.
	Type guid.GUID
	// UUID is the unique partition GUID; zero means random.
	UUID guid.GUID
	// Image is a host file copied to the start of the partition; ""
	// leaves the partition zeroed.
	Image string
	// SizeMiB is the partition size; 0 means Image's size rounded up
	// to whole MiB.
	SizeMiB int
	// Attributes are the GPT attribute bits (slotstore.WithAttrs gives a
	// slot's root partition its state).
	Attributes uint64
}

// Build writes the disk image described by s to path. It writes to a
// temporary file next to path and renames it into place only when
// complete, so on failure path is left as it was.
func Build(path string, s Spec) error {
	if err := build(path, s); err != nil {
		return fmt.Errorf("building disk image %s: %w", path, err)
	}
	return nil
}

func build(out string, s Spec) error {
	// Look up the tools first, so that a machine without them gets the
	// one-line answer before any work is done.
	for _, t := range []string{"mkfs.vfat", "mmd", "mcopy"} {
		if _, err := tool.Path(t); err != nil {
			return err
		}
	}
	espFiles, err := checkESPFiles(s.ESPFiles)
	if err != nil {
		return err
	}
	parts, sizes, err := plan(s)
	if err != nil {
		return err
	}
	var total int64
	if s.SizeMiB > 0 {
		total = int64(s.SizeMiB) * mib
	} else {
		for _, sz := range sizes {
			total += sz
		}
		total += 2 * mib
	}
	if err := gpt.Layout(total, sectorSize, parts, sizes); err != nil {
		return err
	}
	diskGUID, err := guid.New()
	if err != nil {
		return err
	}

	tmpDir, err := os.MkdirTemp("", "abimage-disk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	esp := filepath.Join(tmpDir, "esp.img")
	if err := makeESP(esp, sizes[0], parts[0].FirstLBA, espFiles); err != nil {
		return err
	}

	// A disk image is not secret.
	f, err := atomicfile.Create(afero.NewOsFs(), out, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := f.Truncate(total); err != nil {
		return err
	}
	images := append([]string{esp}, imagesOf(s.Partitions)...)
	for i, img := range images {
		if img == "" {
			continue
		}
		if err := copyInto(f, parts[i].Start(sectorSize), parts[i].Size(sectorSize), img); err != nil {
			return fmt.Errorf("partition %d (%s): %w", i+1, parts[i].Name, err)
		}
	}
	if err := gpt.Create(f, total, sectorSize, diskGUID, parts); err != nil {
		return err
	}
	return f.Commit()
}

// plan returns the partitions (without placement) and their sizes.
func plan(s Spec) ([]gpt.Partition, []int64, error) {
	espMiB := s.ESPSizeMiB
	if espMiB == 0 {
		espMiB = DefaultESPSizeMiB
	}
	if espMiB < MinESPSizeMiB {
		return nil, nil, fmt.Errorf("ESP size %d MiB is below the %d MiB FAT32 needs", espMiB, MinESPSizeMiB)
	}
	espUUID, err := guid.New()
	if err != nil {
		return nil, nil, err
	}
	parts := []gpt.Partition{{Type: gpt.TypeESP, UUID: espUUID, Name: espLabel}}
	sizes := []int64{int64(espMiB) * mib}
	for i, ps := range s.Partitions {
		p := gpt.Partition{Type: ps.Type, UUID: ps.UUID, Name: ps.Label, Attributes: ps.Attributes}
		if p.Type.IsZero() {
			return nil, nil, fmt.Errorf("partition %d (%s) has no type", i+2, ps.Label)
		}
		if p.UUID.IsZero() {
			if p.UUID, err = guid.New(); err != nil {
				return nil, nil, err
			}
		}
		size := int64(ps.SizeMiB) * mib
		if ps.Image != "" {
			fi, err := os.Stat(ps.Image)
			if err != nil {
				return nil, nil, fmt.Errorf("partition %d (%s): %w", i+2, ps.Label, err)
			}
			if !fi.Mode().IsRegular() {
				return nil, nil, fmt.Errorf("partition %d (%s): image %s is not a regular file", i+2, ps.Label, ps.Image)
			}
			if size == 0 {
				size = (fi.Size() + mib - 1) / mib * mib
			}
			if fi.Size() > size {
				return nil, nil, fmt.Errorf("partition %d (%s): image %s (%d bytes) is larger than the partition (%d MiB)", i+2, ps.Label, ps.Image, fi.Size(), ps.SizeMiB)
			}
		}
		if size <= 0 {
			return nil, nil, fmt.Errorf("partition %d (%s) needs an image or a size", i+2, ps.Label)
		}
		parts = append(parts, p)
		sizes = append(sizes, size)
	}
	return parts, sizes, nil
}

func imagesOf(ps []PartSpec) []string {
	var imgs []string
	for _, p := range ps {
		imgs = append(imgs, p.Image)
	}
	return imgs
}

// checkESPFiles cleans the ESP paths and checks that they name distinct
// files inside the ESP and that the host files exist. It returns the
// cleaned paths.
func checkESPFiles(files map[string]string) (map[string]string, error) {
	clean := map[string]string{}
	folded := map[string]string{}
	for dst, src := range files {
		p := path.Clean("/" + dst)[1:]
		if p == "" || slices.Contains(strings.Split(dst, "/"), "..") {
			return nil, fmt.Errorf("ESP path %q does not name a file inside the ESP", dst)
		}
		if other, ok := folded[strings.ToUpper(p)]; ok {
			return nil, fmt.Errorf("ESP paths %q and %q name the same FAT file", other, dst)
		}
		folded[strings.ToUpper(p)] = dst
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("ESP file %s: %w", dst, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("ESP file %s: %s is not a regular file", dst, src)
		}
		clean[p] = src
	}
	return clean, nil
}

// makeESP creates a FAT32 filesystem image of size bytes at img holding
// files. hidden is the partition's first LBA, recorded in the boot
// sector's hidden-sectors field as on a real disk.
func makeESP(img string, size int64, hidden uint64, files map[string]string) error {
	if _, err := tool.Run("mkfs.vfat", "-C", "-F", "32", "-S", strconv.Itoa(sectorSize), "-n", espLabel,
		"-h", strconv.FormatUint(hidden, 10), img, strconv.FormatInt(size/1024, 10)); err != nil {
		return fmt.Errorf("making ESP filesystem: %w", err)
	}
	made := map[string]bool{}
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		// Parent directories, outermost first.
		var dirs []string
		for d := path.Dir(dst); d != "." && !made[d]; d = path.Dir(d) {
			made[d] = true
			dirs = append([]string{"::/" + d}, dirs...)
		}
		if len(dirs) > 0 {
			if _, err := tool.Run("mmd", append([]string{"-i", img}, dirs...)...); err != nil {
				return fmt.Errorf("making ESP directories: %w", err)
			}
		}
		if _, err := tool.Run("mcopy", "-i", img, files[dst], "::/"+dst); err != nil {
			return fmt.Errorf("copying %s to ESP: %w", dst, err)
		}
	}
	return nil
}

// copyInto copies the file src to dst at off, at most limit bytes. Blocks
// of zeros are skipped, since dst is fresh and reads as zeros there;
// this keeps the image sparse (an ESP is mostly empty).
func copyInto(dst io.WriterAt, off, limit int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	r := io.LimitReader(f, limit)
	buf := make([]byte, mib)
	zero := make([]byte, mib)
	for pos := off; ; {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], pos); err != nil {
				return err
			}
		}
		pos += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", src, err)
		}
	}
}
