// Package fallback keeps the fallback copy: \EFI\BOOT\BOOTX64.EFI, the
// removable-media path firmware boots when it has no usable Boot####
// entry (UEFI 2.10 §3.5.1.1), holds a copy of the committed slot's UKI, so
// a machine whose entries were lost still boots a good slot (docs/design.md,
// lessons). It compares and replaces files on a mounted ESP; it does not
// mount anything or decide which slot is committed.
package fallback

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/slot"
)

// Which returns the slot whose UKI the fallback copy is, comparing bytes;
// ok is false when it matches neither (or is missing). When both slots
// hold the same image, A is reported.
func Which(esp fs.FS) (s slot.Slot, ok bool, err error) {
	var errs []error
	for _, s := range slot.All {
		same, err := Same(esp, slot.FallbackPath, s.UKIPath())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if same {
			return s, true, nil
		}
	}
	return "", false, errors.Join(errs...)
}

// Same compares two files on fsys byte for byte, stopping at the first
// difference; files of different sizes are not read at all.
func Same(fsys fs.FS, a, b string) (bool, error) {
	fa, err := fsys.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := fsys.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ia, err1 := fa.Stat()
	ib, err2 := fb.Stat()
	if err := errors.Join(err1, err2); err != nil {
		return false, err
	}
	if ia.Size() != ib.Size() {
		return false, nil
	}
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra == io.EOF || erra == io.ErrUnexpectedEOF {
			return true, nil
		}
		if err := errors.Join(erra, errb); err != nil {
			return false, err
		}
	}
}

// Replace makes the fallback copy on the ESP mounted at dir a copy of slot
// s's UKI, unless it already is one; see ReplaceFS.
func Replace(dir string, s slot.Slot) (bool, error) {
	return ReplaceFS(afero.NewBasePathFs(afero.NewOsFs(), dir), s)
}

// ReplaceFS makes the fallback copy on the ESP esp a copy of slot s's
// UKI, unless it already is one. The copy replaces the old one with
// atomicfile, so that a power cut leaves either the old copy or the new
// one (FAT updates a directory entry in place within one sector), and the
// new one is durable when ReplaceFS returns. It reports whether it wrote
// anything.
func ReplaceFS(esp afero.Fs, s slot.Slot) (bool, error) {
	if same, err := Same(afero.NewIOFS(esp), slot.FallbackPath, s.UKIPath()); err == nil && same {
		return false, nil
	}
	src, err := esp.Open(s.UKIPath())
	if err != nil {
		return false, fmt.Errorf("fallback copy: %w", err)
	}
	defer src.Close()
	if err := esp.MkdirAll(path.Dir(slot.FallbackPath), 0o755); err != nil {
		return false, fmt.Errorf("fallback copy: %w", err)
	}
	f, err := atomicfile.Create(esp, slot.FallbackPath, 0o644)
	if err != nil {
		return false, fmt.Errorf("fallback copy: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Abort()
		return false, fmt.Errorf("fallback copy of slot %s: %w", s, err)
	}
	if err := f.Commit(); err != nil {
		return false, fmt.Errorf("fallback copy of slot %s: %w", s, err)
	}
	return true, nil
}

// ReplaceMounted is Replace on an ESP that abboot's init mounted
// read-only at dir: it is remounted read-write for the copy only.
func ReplaceMounted(dir string, s slot.Slot) (bool, error) {
	var wrote bool
	err := esp.WithWritable(dir, func() (err error) {
		wrote, err = Replace(dir, s)
		return err
	})
	return wrote, err
}

// Intact is the check the init makes on every boot: the fallback copy
// exists and has the size of slot s's UKI. It reads no file contents,
// which would cost a steady-state boot two UKIs' worth of reads; a copy
// corrupted in place at the same size is found by abctl mark-good, which
// compares bytes, and by the firmware, which refuses to start it.
func Intact(esp fs.FS, s slot.Slot) bool {
	a, err1 := fs.Stat(esp, slot.FallbackPath)
	b, err2 := fs.Stat(esp, s.UKIPath())
	return err1 == nil && err2 == nil && a.Size() == b.Size()
}
