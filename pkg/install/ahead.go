package install

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/esp"
)

// checkUKI reads the bundle's UKI ahead of its stream and asks
// Options.CheckUKI about it, before anything is written. The UKI is the
// bundle's last payload (rule 6), so it is read from Options.Bundle when
// the source reads at random; a stream (stdin, a server without range
// support) is spooled whole first. The UKI is read again when it is
// written (from the file, or from the bytes the source kept of the read
// ahead: not fetched twice); both reads are checked against the
// manifest's sha256, which the bundle's signature covers
// (bundle.Reader.PeekUKI, Next), so the UKI written is the UKI checked.
func (in *installer) checkUKI() error {
	if in.o.CheckUKI == nil {
		return nil
	}
	how := "range"
	var b []byte
	var err error
	if in.o.Bundle != nil {
		b, err = in.r.PeekUKI(in.o.Bundle)
	}
	if in.o.Bundle == nil || errors.Is(err, errors.ErrUnsupported) {
		how = "spool"
		if err := in.spool(); err != nil {
			return err
		}
		b, err = in.r.PeekUKI(in.spooled)
	}
	if err != nil {
		return fmt.Errorf("reading the bundle's UKI ahead: %w", err)
	}
	if err := in.o.CheckUKI(b); err != nil {
		return err
	}
	in.log("check-uki", "read", how, "bytes", len(b), "result", "ok")
	return nil
}

// spool copies the bundle into an unlinked file in Options.SpoolDir and
// has the reader read on from there. The directory must have room for the
// whole bundle and be on neither the ESP nor one of the target slot's
// partitions: nothing is written there before the UKI passed.
func (in *installer) spool() error {
	dir := in.o.SpoolDir
	if dir == "" {
		return errors.New("the bundle streams in and its UKI, which comes last, must be checked before anything is written: no spool directory is set; install from a file or an HTTP server with range support")
	}
	size := in.r.Offset(len(in.m.Payloads))
	var fs unix.Statfs_t
	if err := statfs(dir, &fs); err != nil {
		return fmt.Errorf("spool directory: %w", err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < size {
		return fmt.Errorf("the bundle streams in and its UKI, which comes last, must be checked before anything is written: the spool directory %s has %d MiB free, the bundle is %d MiB; choose another (--spool-dir), or install from a file or an HTTP server with range support", dir, free>>20, (size+1<<20-1)>>20)
	}
	if err := in.checkSpoolDir(dir); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".abboot-bundle-*")
	if err != nil {
		return fmt.Errorf("spooling the bundle: %w", err)
	}
	// Unlinked at once: the space is freed when the install ends, however
	// it ends.
	os.Remove(f.Name())
	in.spooled = f
	if err := in.r.Spool(f); err != nil {
		return err
	}
	in.log("spool", "dir", dir, "bytes", size)
	return nil
}

// checkSpoolDir refuses a spool directory on the ESP's file system or on
// a partition of the target slot.
func (in *installer) checkSpoolDir(dir string) error {
	var st, espSt unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("spool directory: %w", err)
	}
	if err := unix.Stat(in.t.ESPDir, &espSt); err != nil {
		return fmt.Errorf("the ESP at %s: %w", in.t.ESPDir, err)
	}
	if st.Dev == espSt.Dev {
		return fmt.Errorf("spool directory %s is on the ESP's file system: nothing may be written there before the bundle's UKI is checked", dir)
	}
	var disk unix.Stat_t
	if in.t.Disk == "" || unix.Stat(in.t.Disk, &disk) != nil || disk.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil // an image file: its partitions hold no file system
	}
	for _, p := range in.parts {
		dev, err := esp.PartitionDev("/sys/class/block", "/dev", in.t.Disk, p.Number)
		if err != nil {
			continue
		}
		var ps unix.Stat_t
		if unix.Stat(dev, &ps) == nil && ps.Rdev == st.Dev {
			return fmt.Errorf("spool directory %s is on %s, a partition of slot %s", dir, dev, in.t.Slot)
		}
	}
	return nil
}
