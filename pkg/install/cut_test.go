package install

import (
	"errors"
	"os"

	"github.com/spf13/afero"
)

var errCut = errors.New("power cut")

// power cuts the power after left writes: that write and every later one
// fail, as after a real cut nothing more reaches the disk; with torn set,
// the write that is cut lands half. A nil *power never cuts. Every change
// counts as one write: a WriteAt, Write or Sync, creating or opening a
// file for writing, a rename, remove, chmod or mkdir.
type power struct {
	left      int
	torn, cut bool
	writes    int // writes let through
}

func (p *power) step() error {
	if p == nil {
		return nil
	}
	if p.left == 0 {
		p.cut = true
		return errCut
	}
	p.left--
	p.writes++
	return nil
}

// tear reports whether the write about to be cut should land half.
func (p *power) tear() bool { return p != nil && p.left == 0 && p.torn && !p.cut }

// cutDev is the disk image with its writes through a power.
type cutDev struct {
	*os.File
	pw   *power
	size int64
}

func (d *cutDev) WriteAt(b []byte, off int64) (int, error) {
	if d.pw.tear() {
		d.File.WriteAt(b[:len(b)/2], off)
	}
	if err := d.pw.step(); err != nil {
		return 0, err
	}
	return d.File.WriteAt(b, off)
}

// Sync is a write that can be cut, but it does not reach the real disk:
// in this model every write let through is durable already, and real
// fsyncs would make the test slow.
func (d *cutDev) Sync() error { return d.pw.step() }

// Close does nothing: the disk is shared by the install and the store,
// and the test closes it.
func (d *cutDev) Close() error { return nil }

// fs returns fs with its writes through p.
func (p *power) fs(fs afero.Fs) afero.Fs { return &cutFS{Fs: fs, pw: p} }

type cutFS struct {
	afero.Fs
	pw *power
}

func (c *cutFS) Create(name string) (afero.File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (c *cutFS) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := c.pw.step(); err != nil {
			return nil, err
		}
	}
	f, err := c.Fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, pw: c.pw}, nil
}

func (c *cutFS) Open(name string) (afero.File, error) { return c.OpenFile(name, os.O_RDONLY, 0) }

func (c *cutFS) Mkdir(name string, perm os.FileMode) error {
	if err := c.pw.step(); err != nil {
		return err
	}
	return c.Fs.Mkdir(name, perm)
}

func (c *cutFS) MkdirAll(name string, perm os.FileMode) error {
	if _, err := c.Fs.Stat(name); err == nil {
		return nil
	}
	if err := c.pw.step(); err != nil {
		return err
	}
	return c.Fs.MkdirAll(name, perm)
}

func (c *cutFS) Chmod(name string, mode os.FileMode) error {
	if err := c.pw.step(); err != nil {
		return err
	}
	return c.Fs.Chmod(name, mode)
}

func (c *cutFS) Rename(from, to string) error {
	if err := c.pw.step(); err != nil {
		return err
	}
	return c.Fs.Rename(from, to)
}

func (c *cutFS) Remove(name string) error {
	if err := c.pw.step(); err != nil {
		return err
	}
	return c.Fs.Remove(name)
}

type cutFile struct {
	afero.File
	pw *power
}

func (f *cutFile) Write(b []byte) (int, error) {
	if f.pw.tear() {
		f.File.Write(b[:len(b)/2])
	}
	if err := f.pw.step(); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}

func (f *cutFile) WriteAt(b []byte, off int64) (int, error) {
	if f.pw.tear() {
		f.File.WriteAt(b[:len(b)/2], off)
	}
	if err := f.pw.step(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(b, off)
}

// Sync is cutDev.Sync for a file.
func (f *cutFile) Sync() error { return f.pw.step() }
