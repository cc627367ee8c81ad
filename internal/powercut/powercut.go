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
// cut, the Mode says which of the changes not yet durable reach the disk;
// the others are undone on the real files, newest first, so the test sees
// what a disk would hold after the cut: leaving out one fsync shows. Real
// fsyncs are not made: the tests would be slow.
//
// It does not model Truncate, or write-back of a directory's entries in
// another order than they were made.
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

// Mode is what reaches the disk at the cut of what was not synced.
type Mode int

const (
	// Lost: nothing; the page cache is lost.
	Lost Mode = iota
	// Torn: everything, as if written back just in time, and the write
	// that is cut lands half.
	Torn
	// Even and Odd: write-back in another order than the writes were
	// made, cut midway: of the data writes not synced, oldest first, the
	// even-numbered (Even) or odd-numbered (Odd) ones land; the others
	// and every directory change are lost. This is what a missing fsync
	// between two writes that must land in order (a GPT's backup copy
	// before its primary) shows as.
	Even
	Odd
)

// Modes are all the modes, for a test to cut in each.
var Modes = []Mode{Lost, Torn, Even, Odd}

func (m Mode) String() string { return [...]string{"lost", "torn", "even", "odd"}[m] }

// Power lets Left writes through, then cuts in Mode. A nil *Power never
// cuts.
type Power struct {
	Left int
	Mode Mode
	cut  bool
	// pending are the changes not durable yet, oldest first.
	pending []change
	// nodes are the files and directories seen through FS, by real path.
	nodes map[string]*node
}

// change is a write not durable yet.
type change struct {
	key  any    // what a sync makes it durable with: a *node, a dirKey or a fileKey
	data bool   // a data write, not a directory change
	undo func() // restores the real file as it was before the change
}

type (
	dirKey  string // a directory's real path
	fileKey string // a File's name
)

// Cut reports whether the power was cut: a write was refused.
func (p *Power) Cut() bool { return p != nil && p.cut }

// Step counts one write: it returns ErrCut once Left writes went through.
// The first refused write is the cut: what is not durable is undone then,
// as Mode says.
func (p *Power) Step() error {
	if p == nil {
		return nil
	}
	if p.Left == 0 {
		if !p.cut {
			p.lose()
		}
		p.cut = true
		return ErrCut
	}
	p.Left--
	return nil
}

// lose undoes, newest first, the changes not durable that Mode loses.
func (p *Power) lose() {
	var lost []change
	data := 0
	for _, c := range p.pending {
		keep := false
		switch p.Mode {
		case Torn:
			keep = true
		case Even, Odd:
			keep = c.data && data%2 == int(p.Mode-Even)
		}
		if c.data {
			data++
		}
		if !keep {
			lost = append(lost, c)
		}
	}
	for i := len(lost) - 1; i >= 0; i-- {
		lost[i].undo()
	}
	p.pending = nil
}

// Off cuts the power now, after the code under test has returned: what
// it did not sync is lost, as in a cut right after it. A test calls it
// before checking that a finished run's result is durable.
func (p *Power) Off() {
	if p != nil && !p.cut {
		p.Left = 0
		p.Step()
	}
}

// record notes a directory change that is not durable until key is
// synced.
func (p *Power) record(key any, undo func()) {
	if p != nil {
		p.pending = append(p.pending, change{key: key, undo: undo})
	}
}

// recordData notes a data change that is not durable until key is
// synced.
func (p *Power) recordData(key any, undo func()) {
	if p != nil {
		p.pending = append(p.pending, change{key: key, data: true, undo: undo})
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
func (p *Power) tear() bool { return p != nil && p.Left == 0 && p.Mode == Torn && !p.cut }

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
		p.recordData(key, func() {
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
			c.p.recordData(n, restore(n, b, mode))
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
		c.p.recordData(n, func() { n.fs.Chmod(n.name, fi.Mode()) })
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
	if old == nil && replaced {
		old = &node{fs: c.Fs, name: to, real: c.realPath(to)}
	}
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
