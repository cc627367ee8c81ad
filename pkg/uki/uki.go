// Package uki builds and reads unified kernel images: a UEFI stub (systemd's
// linuxx64.efi.stub) with the kernel, initramfs, command line and os-release
// added as PE sections (UAPI "Unified Kernel Image" specification).
//
// Build adds the sections with objcopy, placing each at a virtual address
// after the stub's last section, aligned to the stub's SectionAlignment; the
// fixed addresses of older recipes overlap the sections of newer stubs.
// Read returns the sections of an existing UKI, trimmed to their virtual
// size (PE/COFF §3.1: the raw data is padded to FileAlignment), which is
// what a kexec of the image needs. It does not sign images; sbsign does.
package uki

import (
	"bytes"
	"debug/pe"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/osrelease"
	"github.com/abboot/abboot/pkg/tool"
)

// DefaultStub is where Debian's systemd-boot-efi installs the stub.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// Spec is what goes into a UKI.
type Spec struct {
	Stub    string // default DefaultStub
	Kernel  string // bzImage
	Initrd  string
	Cmdline string // the text itself
	OSRel   string // os-release text; may be empty
}

// Build writes the UKI to out with atomicfile, so that a failure never
// leaves a half-written image behind.
func Build(s Spec, out string) error {
	if s.Stub == "" {
		s.Stub = DefaultStub
	}
	if _, err := os.Stat(s.Stub); err != nil {
		return fmt.Errorf("UEFI stub %s: %w (apt-get install systemd-boot-efi)", s.Stub, err)
	}
	tmp, err := os.MkdirTemp("", "abboot-uki-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	type section struct{ name, file string }
	var secs []section
	for _, t := range []struct{ name, text string }{{".osrel", s.OSRel}, {".cmdline", s.Cmdline}} {
		if t.text == "" && t.name == ".osrel" {
			continue
		}
		f := filepath.Join(tmp, t.name[1:])
		if err := os.WriteFile(f, []byte(t.text), 0o644); err != nil {
			return err
		}
		secs = append(secs, section{t.name, f})
	}
	secs = append(secs, section{".linux", s.Kernel}, section{".initrd", s.Initrd})

	base, next, align, stubTime, err := layout(s.Stub)
	if err != nil {
		return err
	}
	args := []string{}
	for _, sec := range secs {
		fi, err := os.Stat(sec.file)
		if err != nil {
			return fmt.Errorf("UKI section %s: %w", sec.name, err)
		}
		args = append(args,
			"--add-section", sec.name+"="+sec.file,
			"--change-section-vma", fmt.Sprintf("%s=%#x", sec.name, base+next))
		next = alignUp(next+uint64(fi.Size()), align)
	}
	part := filepath.Join(tmp, "uki.efi")
	args = append(args, s.Stub, part)
	if _, err := tool.Run("objcopy", args...); err != nil {
		return fmt.Errorf("building UKI %s: %w", out, err)
	}
	if err := stamp(part, stubTime); err != nil {
		return fmt.Errorf("building UKI %s: %w", out, err)
	}
	if err := place(part, out); err != nil {
		return fmt.Errorf("building UKI %s: %w", out, err)
	}
	return nil
}

// place copies the file built at part to out with atomicfile; a
// whole-OS initramfs can be too large to hold in memory.
func place(part, out string) error {
	src, err := os.Open(part)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := atomicfile.Create(afero.NewOsFs(), out, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

// layout returns the stub's image base, the first free RVA after its
// sections, its section alignment and its COFF time stamp.
func layout(stub string) (base, next, align uint64, stubTime uint32, err error) {
	f, err := pe.Open(stub)
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("reading UEFI stub %s: %w", stub, err)
	}
	defer f.Close()
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		return 0, 0, 0, 0, fmt.Errorf("UEFI stub %s: not a PE32+ image", stub)
	}
	for _, s := range f.Sections {
		next = max(next, uint64(s.VirtualAddress)+uint64(s.VirtualSize))
	}
	align = uint64(oh.SectionAlignment)
	if align == 0 {
		align = 4096
	}
	return oh.ImageBase, alignUp(next, align), align, f.FileHeader.TimeDateStamp, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// maxSection bounds a section's size so that a corrupt header cannot make
// Read allocate without limit; real kernels and initramfs images are far
// smaller.
const maxSection = 1 << 30

// Image is a UKI's sections as the stub would hand them over.
type Image struct {
	Sections map[string][]byte
}

// Read returns the named sections of a UKI (all sections when names is
// empty), each trimmed to its virtual size.
func Read(r io.ReaderAt, names ...string) (*Image, error) {
	return read(r, names, readSection)
}

// readSection returns a copy of s's first n bytes.
func readSection(s *pe.Section, n uint32) ([]byte, error) {
	b := make([]byte, n)
	if _, err := s.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading UKI section %s: %w", s.Name, err)
	}
	return b, nil
}

// Parse is Read of a UKI in memory whose sections are slices of b, not
// copies: the init hashes and stages a UKI of tens of MiB, and each copy
// costs it time (under TCG, about 1 ms per MiB). The caller must not
// change b while it uses the Image.
func Parse(b []byte, names ...string) (*Image, error) {
	return read(bytes.NewReader(b), names, func(s *pe.Section, n uint32) ([]byte, error) {
		if end := uint64(s.Offset) + uint64(n); end > uint64(len(b)) {
			return nil, fmt.Errorf("reading UKI section %s: %d bytes at %d end after the %d-byte file", s.Name, n, s.Offset, len(b))
		}
		return b[s.Offset : s.Offset+n : s.Offset+n], nil
	})
}

// read is Read and Parse: content gives a section's first n bytes.
func read(r io.ReaderAt, names []string, content func(s *pe.Section, n uint32) ([]byte, error)) (*Image, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("reading UKI: %w", err)
	}
	img := &Image{Sections: map[string][]byte{}}
	for _, s := range f.Sections {
		if len(names) > 0 && !slices.Contains(names, s.Name) {
			continue
		}
		n, err := sectionSize(s)
		if err != nil {
			return nil, err
		}
		if s.Offset == 0 && n > 0 {
			// PE format, section table: PointerToRawData is zero for
			// uninitialized data only, which a UKI's sections never are;
			// taken as an offset it would name the file's own headers.
			return nil, fmt.Errorf("reading UKI: section %s has no data in the file", s.Name)
		}
		if img.Sections[s.Name], err = content(s, n); err != nil {
			return nil, err
		}
	}
	for _, n := range names {
		if _, ok := img.Sections[n]; !ok {
			return nil, fmt.Errorf("reading UKI: no %s section", n)
		}
	}
	return img, nil
}

// sectionSize is the size of s's contents trimmed to its virtual size.
func sectionSize(s *pe.Section) (uint32, error) {
	n := min(s.VirtualSize, s.Size)
	if s.VirtualSize == 0 {
		n = s.Size
	}
	if n > maxSection {
		return 0, fmt.Errorf("reading UKI: section %s is %d bytes, more than %d", s.Name, n, maxSection)
	}
	return n, nil
}

// Cmdline returns the kernel command line of the .cmdline section, ""
// when there is none, as the stub passes it: without the trailing NULs
// (the section's padding; systemd-stub stops at the first NUL) and
// without trailing white space (space, tab, CR, LF: UKI builders leave a
// newline, and the kernel ignores it). Leading white space is kept. A NUL
// with text after it is an error: the stub and a kexec (which takes a
// C string) would drop that text, so the image does not mean one thing.
func (img *Image) Cmdline() (string, error) {
	c := strings.TrimRight(string(img.Sections[".cmdline"]), "\x00\r\n\t ")
	if i := strings.IndexByte(c, 0); i >= 0 {
		return "", fmt.Errorf("UKI command line %q has a NUL byte at %d", c, i)
	}
	return c, nil
}

// ReadCmdline returns Cmdline of the UKI r, reading no other section.
func ReadCmdline(r io.ReaderAt) (string, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("reading UKI: %w", err)
	}
	img := &Image{Sections: map[string][]byte{}}
	if s := f.Section(".cmdline"); s != nil {
		n, err := sectionSize(s)
		if err != nil {
			return "", err
		}
		if img.Sections[s.Name], err = readSection(s, n); err != nil {
			return "", err
		}
	}
	return img.Cmdline()
}

// ReadFile is Read on a file.
func ReadFile(path string, names ...string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := Read(f, names...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// OSRelease parses the .osrel section.
func (img *Image) OSRelease() map[string]string {
	return osrelease.Parse(string(img.Sections[".osrel"]))
}
