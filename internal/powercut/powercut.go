// Package powercut cuts the power under a crash-safety test: a Power lets
// a set number of writes through to a file or a file system and fails
// every later one, as after a real cut nothing more reaches the disk.
//
// Every change counts as one write: a Write, WriteAt or Sync, opening a
// file for writing, a mkdir, chmod, rename or remove.
//
// It models the kernel's page cache: a write that got through is not
// durable until it is synced. File data is durable once its file is synced
// (Sync on any handle of it); a directory entry (a file created, renamed
// over or removed, a directory made) once its directory is synced (Sync on
// a handle of the directory; a rename is its target's directory's). At the
// cut every change not yet durable is undone on the real file, newest
// first, so the test sees what a disk would hold after a cut that lost the
// page cache: leaving out one fsync shows. With Torn set, the other
// extreme: every write that got through stays, as if written back just in
// time, and the write that is cut lands half. Real fsyncs are not made:
// the tests would be slow.
//
// It does not model a partial write-back (some unsynced writes kept,
// others lost), reordering within synced data, or Truncate.
package powercut

import (
	"errors"
	"io"
	"os"
	"path"

	"github.com/spf13/afero"
)

// ErrCut is the error of every write after the cut.
var ErrCut = errors.New("power cut")

// Power lets Left writes through, then cuts. A nil *Power never cuts.
type Power struct {
	Left int
	Torn bool
	cut  bool
	// pending are the changes not durable yet, oldest first.
	pending []change
	// nodes are the files and directories seen through FS, by real path.
	nodes map[string]*node
}

// change is a write not durable yet.
type change struct {
	key  any    // what a sync makes it durable with: a *node, a dirKey or a fileKey
	undo func() // restores the real file as it was before the change
}

type (
	dirKey  string // a directory's real path
	fileKey string // a File's name
)

// Cut reports whether the power was cut: a write was refused.
func (p *Power) Cut() bool { return p != nil && p.cut }

// Step counts one write: it returns ErrCut once Left writes went through.
// The first refused write is the cut: unless Torn, what is not durable is
// undone then.
func (p *Power) Step() error {
	if p == nil {
		return nil
	}
	if p.Left == 0 {
		if !p.cut && !p.Torn {
			for i := len(p.pending) - 1; i >= 0; i-- {
				p.pending[i].undo()
			}
			p.pending = nil
		}
		p.cut = true
		return ErrCut
	}
	p.Left--
	return nil
}

// record notes a change that is not durable until key is synced.
func (p *Power) record(key any, undo func()) {
	if p != nil {
		p.pending = append(p.pending, change{key, undo})
	}
}

// synced makes the changes of key durable.
func (p *Power) synced(key any) {
	if p == nil {
		return
	}
	kept := p.pending[:0]
	for _, c := range p.pending {
		if c.key != key {
			kept = append(kept, c)
		}
	}
	p.pending = kept
}

// tear reports whether the write about to be cut should land half.
func (p *Power) tear() bool { return p != nil && p.Left == 0 && p.Torn && !p.cut }

// storage is what undoing a data write needs of a reopened file.
type storage interface {
	io.WriterAt
	Truncate(int64) error
	Close() error
}

// writeAt is one write of b at off to w, whose bytes and size before it
// are read from r; reopen opens the file again to undo it.
func (p *Power) writeAt(key any, w io.WriterAt, r io.ReaderAt, size int64, b []byte, off int64, reopen func() (storage, error)) (int, error) {
	if p.tear() {
		w.WriteAt(b[:len(b)/2], off)
	}
	if err := p.Step(); err != nil {
		return 0, err
	}
	if p != nil {
		old := make([]byte, len(b))
		n, _ := r.ReadAt(old, off)
		old = old[:n]
		p.record(key, func() {
			f, err := reopen()
			if err != nil {
				return
			}
			defer f.Close()
			f.WriteAt(old, off)
			f.Truncate(size)
		})
	}
	return w.WriteAt(b, off)
}

// File is an *os.File (a disk image) with its writes through P.
type File struct {
	*os.File
	P *Power
}

func (f *File) WriteAt(b []byte, off int64) (int, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	name := f.File.Name()
	return f.P.writeAt(fileKey(name), f.File, f.File, fi.Size(), b, off, func() (storage, error) {
		return os.OpenFile(name, os.O_RDWR, 0)
	})
}

func (f *File) Sync() error {
	if err := f.P.Step(); err != nil {
		return err
	}
	f.P.synced(fileKey(f.File.Name()))
	return nil
}

// FS returns fs with its writes through p.
func (p *Power) FS(fs afero.Fs) afero.Fs { return &cutFS{Fs: fs, p: p} }

type cutFS struct {
	afero.Fs
	p *Power
}

// node is a file or directory, followed through renames.
type node struct {
	fs   afero.Fs // the file system name is in
	name string
	real string
}

// realPath is name's path on the real file system, the same through any
// BasePathFs that reaches it.
func (c *cutFS) realPath(name string) string {
	if b, ok := c.Fs.(interface{ RealPath(string) (string, error) }); ok {
		if r, err := b.RealPath(name); err == nil {
			return r
		}
	}
	return path.Clean("/" + name)
}

// node returns the node at name.
func (c *cutFS) node(name string) *node {
	r := c.realPath(name)
	if c.p == nil {
		return &node{fs: c.Fs, name: name, real: r}
	}
	if c.p.nodes == nil {
		c.p.nodes = map[string]*node{}
	}
	n, ok := c.p.nodes[r]
	if !ok {
		n = &node{fs: c.Fs, name: name, real: r}
		c.p.nodes[r] = n
	}
	return n
}

// dir is the key of the directory holding name.
func (c *cutFS) dir(name string) dirKey { return dirKey(path.Dir(c.realPath(name))) }

// saved returns name's content and mode, ok false when it is not a
// regular file.
func (c *cutFS) saved(name string) (b []byte, mode os.FileMode, ok bool) {
	fi, err := c.Fs.Stat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return nil, 0, false
	}
	b, err = afero.ReadFile(c.Fs, name)
	return b, fi.Mode().Perm(), err == nil
}

// restore is the undo that puts back a file that had content b and mode
// at n's name.
func restore(n *node, b []byte, mode os.FileMode) func() {
	return func() { afero.WriteFile(n.fs, n.name, b, mode) }
}

func (c *cutFS) Create(name string) (afero.File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o666)
}

func (c *cutFS) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	n := c.node(name)
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := c.p.Step(); err != nil {
			return nil, err
		}
		if b, mode, ok := c.saved(name); !ok && flag&os.O_CREATE != 0 {
			c.p.record(c.dir(name), func() { n.fs.Remove(n.name) })
		} else if ok && flag&os.O_TRUNC != 0 && len(b) > 0 {
			c.p.record(n, restore(n, b, mode))
		}
	}
	f, err := c.Fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &cutFile{File: f, p: c.p, n: n, isDir: fi.IsDir()}, nil
}

func (c *cutFS) Open(name string) (afero.File, error) { return c.OpenFile(name, os.O_RDONLY, 0) }

func (c *cutFS) Mkdir(name string, perm os.FileMode) error {
	return c.MkdirAll(name, perm)
}

// MkdirAll of a directory that exists writes nothing.
func (c *cutFS) MkdirAll(name string, perm os.FileMode) error {
	if _, err := c.Fs.Stat(name); err == nil {
		return nil
	}
	if err := c.p.Step(); err != nil {
		return err
	}
	// The topmost directory made is the one entry added.
	top := path.Clean(name)
	for parent := path.Dir(top); parent != top; parent = path.Dir(top) {
		if _, err := c.Fs.Stat(parent); err == nil {
			break
		}
		top = parent
	}
	fs := c.Fs
	c.p.record(c.dir(top), func() { fs.RemoveAll(top) })
	return c.Fs.MkdirAll(name, perm)
}

func (c *cutFS) Chmod(name string, mode os.FileMode) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	if fi, err := c.Fs.Stat(name); err == nil {
		n := c.node(name)
		c.p.record(n, func() { n.fs.Chmod(n.name, fi.Mode()) })
	}
	return c.Fs.Chmod(name, mode)
}

func (c *cutFS) Rename(from, to string) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	if c.p == nil {
		return c.Fs.Rename(from, to)
	}
	// What was at to is replaced; it comes back if the rename is undone.
	b, mode, replaced := c.saved(to)
	if err := c.Fs.Rename(from, to); err != nil {
		return err
	}
	n, old := c.node(from), c.p.nodes[c.realPath(to)]
	delete(c.p.nodes, n.real)
	n.name, n.real = to, c.realPath(to)
	c.p.nodes[n.real] = n
	fs := c.Fs
	c.p.record(c.dir(to), func() {
		fs.Rename(n.name, from)
		n.name, n.real = from, c.realPath(from)
		c.p.nodes[n.real] = n
		delete(c.p.nodes, c.realPath(to))
		if old != nil {
			c.p.nodes[old.real] = old
			if replaced {
				restore(old, b, mode)()
			}
		}
	})
	return nil
}

func (c *cutFS) Remove(name string) error {
	if err := c.p.Step(); err != nil {
		return err
	}
	n := c.node(name)
	if b, mode, ok := c.saved(name); ok {
		c.p.record(c.dir(name), restore(n, b, mode))
	}
	return c.Fs.Remove(name)
}

type cutFile struct {
	afero.File
	p     *Power
	n     *node
	isDir bool
}

func (f *cutFile) Write(b []byte) (int, error) {
	off, err := f.File.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	n, err := f.WriteAt(b, off)
	if err == nil {
		_, err = f.File.Seek(off+int64(n), io.SeekStart)
	}
	return n, err
}

func (f *cutFile) WriteAt(b []byte, off int64) (int, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	n := f.n
	// The bytes before are read through a handle of their own: f may be
	// open write-only.
	r, err := n.fs.Open(n.name)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return f.p.writeAt(n, f.File, r, fi.Size(), b, off, func() (storage, error) {
		return n.fs.OpenFile(n.name, os.O_RDWR, 0)
	})
}

// Sync makes the file's data durable, or for a directory its entries.
func (f *cutFile) Sync() error {
	if err := f.p.Step(); err != nil {
		return err
	}
	if f.isDir {
		f.p.synced(dirKey(f.n.real))
	} else {
		f.p.synced(f.n)
	}
	return nil
}
