// Package atomicfile replaces a file so that a power cut at any moment
// leaves either the old content or the new one under its name, never a
// mix, and so that once Commit (or WriteFile) returns, the new content
// survives a cut. It is abboot's one rule for that, used for the UKIs on
// the ESP, the fallback copy, EFI variables kept in a plain directory,
// disk images and bundles:
//
//  1. write to a temporary file in the same directory (TempPath): rename(2)
//     is atomic only within one file system, and a fixed name means a write
//     cut short leaves one leftover that the next write truncates;
//  2. fsync the file: without it the rename can reach the disk before the
//     data (FAT, XFS, ext4 with noauto_da_alloc), and after a cut the name
//     would point at an empty or partial file;
//  3. rename it over the target: the directory entry switches from the
//     old file to the new one in one step;
//  4. fsync the directory: the rename lives in the directory, which
//     fsync(2) of the file does not write ("does not necessarily ensure
//     that the entry in the directory containing the file has also
//     reached disk"); without it a cut after Commit can bring the old file
//     back, and a caller that acts on the new one (install activating a
//     slot) would act on a file that is not there.
//
// It works on an afero.Fs, so that a test can cut the power under it
// (internal/powercut); callers on the OS pass afero.NewOsFs(). It does not
// create directories, lock against concurrent writers of the same path
// (the last Commit wins), or keep the old content.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/afero"
	"golang.org/x/sys/unix"
)

// TempPath is the temporary file Create writes for path: hidden, next to
// it.
func TempPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
}

// File is a replacement of a file being written. Write (or WriteAt) to
// it, then Commit it or Abort it. Reads see what was written so far.
type File struct {
	afero.File
	fs   afero.Fs
	path string
	done bool
}

// Create starts replacing path in fsys with a file of mode perm (before
// the umask), truncating a temporary file an earlier cut left.
func Create(fsys afero.Fs, path string, perm os.FileMode) (*File, error) {
	f, err := fsys.OpenFile(TempPath(path), os.O_RDWR|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return &File{File: f, fs: fsys, path: path}, nil
}

// Commit makes the file replace its target durably (steps 2 to 4 of the
// package comment). On error the target is either untouched or, when
// only the directory sync failed, replaced but maybe not durably; the
// temporary file is removed.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("writing %s: committed or aborted already", f.path)
	}
	f.done = true
	tmp := TempPath(f.path)
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = f.fs.Rename(tmp, f.path)
	}
	if err != nil {
		f.fs.Remove(tmp)
		return fmt.Errorf("writing %s: %w", f.path, err)
	}
	if err := SyncDir(f.fs, filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("writing %s: %w", f.path, err)
	}
	return nil
}

// Abort drops the replacement: the target stays as it was. It does
// nothing after Commit, so a caller can defer it.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	f.fs.Remove(TempPath(f.path))
}

// WriteFile replaces path in fsys with data, durably (the package
// comment's four steps).
func WriteFile(fsys afero.Fs, path string, data []byte, perm os.FileMode) error {
	f, err := Create(fsys, path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

// SyncDir makes the entries of directory dir in fsys durable: created,
// renamed and removed files. A file system that cannot sync a directory
// (EINVAL, fsync(2)) has nothing to make durable that way; vfat can, and
// it is what makes a rename on the ESP durable.
func SyncDir(fsys afero.Fs, dir string) error {
	d, err := fsys.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
