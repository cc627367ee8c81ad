// Package powercut cuts the power under a crash-safety test: a Power lets
// a set number of writes through to a file or a file system and fails
// every later one, as after a real cut nothing more reaches the disk. With
// Torn set, the write that is cut lands half.
//
// Every change counts as one write: a Write, WriteAt or Sync, opening a
// file for writing, a mkdir, chmod, rename or remove. Sync does not reach
// the real disk: in this model every write let through is durable
// already, and real fsyncs would make the tests slow. Reads pass through.
//
// It is test support for the slot stores and the installer; it does not
// simulate reordered or lost writes that were let through.
package powercut

import (
	"errors"
	"io"
	"os"

	"github.com/spf13/afero"
)

// ErrCut is the error of every write after the cut.
var ErrCut = errors.New("power cut")

// Power lets Left writes through, then cuts. A nil *Power never cuts.
type Power struct {
	Left int
	Torn bool
	cut  bool
}

// Cut reports whether the power was cut: a write was refused.
func (p *Power) Cut() bool { return p != nil && p.cut }

// Step counts one write: it returns ErrCut once Left writes went through.
func (p *Power) Step() error {
	if p == nil {
		return nil
	}
	if p.Left == 0 {
		p.cut = true
		return ErrCut
	}
	p.Left--
	return nil
}

// tear reports whether the write about to be cut should land half.
func (p *Power) tear() bool { return p != nil && p.Left == 0 && p.Torn && !p.cut }

// File is an *os.File (a disk image) with its writes through P.
type File struct {
	*os.File
	P *Power
}

func (f *File) WriteAt(b []byte, off int64) (int, error) { return f.P.writeAt(f.File, b, off) }

// writeAt is one write of b at off to w.
func (p *Power) writeAt(w io.WriterAt, b []byte, off int64) (int, error) {
	if p.tear() {
		w.WriteAt(b[:len(b)/2], off)
	}
	if err := p.Step(); err != nil {
		return 0, err
	}
	return w.WriteAt(b, off)
}

func (f *File) Sync() error { return f.P.Step() }

// FS returns fs with its writes through p.
func (p *Power) FS(fs afero.Fs) afero.Fs { return &cutFS{Fs: fs, p: p} }

type cutFS struct {
	afero.Fs
	p *Power
}

func (c *cutFS) Create(name string) (afero.File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (c *cutFS) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := c.p.Step(); err != nil {
			return nil, err
		}
	}
	f, err := c.Fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, p: c.p}, nil
}

func (c *cutFS) Open(name string) (afero.File, error) { return c.OpenFile(name, os.O_RDONLY, 0) }

func (c *cutFS) Mkdir(name string, perm os.FileMode) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	return c.Fs.Mkdir(name, perm)
}

// MkdirAll of a directory that exists writes nothing.
func (c *cutFS) MkdirAll(name string, perm os.FileMode) error {
	if _, err := c.Fs.Stat(name); err == nil {
		return nil
	}
	if err := c.p.Step(); err != nil {
		return err
	}
	return c.Fs.MkdirAll(name, perm)
}

func (c *cutFS) Chmod(name string, mode os.FileMode) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	return c.Fs.Chmod(name, mode)
}

func (c *cutFS) Rename(from, to string) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	return c.Fs.Rename(from, to)
}

func (c *cutFS) Remove(name string) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	return c.Fs.Remove(name)
}

type cutFile struct {
	afero.File
	p *Power
}

func (f *cutFile) Write(b []byte) (int, error) {
	if f.p.tear() {
		f.File.Write(b[:len(b)/2])
	}
	if err := f.p.Step(); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}

func (f *cutFile) WriteAt(b []byte, off int64) (int, error) { return f.p.writeAt(f.File, b, off) }

func (f *cutFile) Sync() error { return f.p.Step() }
