package efivar

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/abboot/abboot/pkg/guid"
	"github.com/foxboron/go-uefi/efi/attributes"
	"github.com/foxboron/go-uefi/efi/device"
	"github.com/foxboron/go-uefi/efivarfs/fswrapper"
	"github.com/spf13/afero"
)

var testVendor = guid.MustParse("3cc7a0f2-5a4f-4d8a-9d4b-0a4f8e5c1b2d")

// backend is one way to hold variables, with raw access to the files.
type backend struct {
	name string
	// plain is true for plain-directory semantics (temp file + rename).
	plain bool
	open  func(t *testing.T, wrap func(afero.Fs) afero.Fs) (v *Vars, raw afero.Fs)
}

func identity(fs afero.Fs) afero.Fs { return fs }

var backends = []backend{
	{"tempdir", true, func(t *testing.T, wrap func(afero.Fs) afero.Fs) (*Vars, afero.Fs) {
		dir := t.TempDir()
		raw := afero.NewBasePathFs(afero.NewOsFs(), dir)
		if wrap == nil {
			return Open(dir), raw
		}
		return OpenFS(wrap(raw)), raw
	}},
	{"memfs", true, func(t *testing.T, wrap func(afero.Fs) afero.Fs) (*Vars, afero.Fs) {
		mem := afero.NewMemMapFs()
		if wrap == nil {
			wrap = identity
		}
		return OpenFS(wrap(mem)), mem
	}},
	// The live efivarfs code path, over the in-memory filesystem that
	// go-uefi's testfs uses, so writes go through go-uefi's FSWrapper.
	{"efivarfs-memfs", false, func(t *testing.T, wrap func(afero.Fs) afero.Fs) (*Vars, afero.Fs) {
		mem := afero.NewMemMapFs()
		if wrap == nil {
			wrap = identity
		}
		return openEfivarfs(wrap(mem), false), afero.NewBasePathFs(mem, attributes.Efivars)
	}},
}

func varFile(name string, g guid.GUID) string { return "/" + name + "-" + g.String() }

func TestGetSetDelete(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			v, raw := b.open(t, nil)
			if _, _, err := v.Get("Test", testVendor); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get of missing variable: %v, want ErrNotFound", err)
			}
			const attrs = AttrNonVolatile | AttrBootserviceAccess
			if err := v.Set("Test", testVendor, attrs, []byte("hello world")); err != nil {
				t.Fatal(err)
			}
			file, err := afero.ReadFile(raw, varFile("Test", testVendor))
			if err != nil {
				t.Fatal(err)
			}
			if want := []byte("\x03\x00\x00\x00hello world"); !bytes.Equal(file, want) {
				t.Errorf("file holds %q, want %q", file, want)
			}
			gotAttrs, data, err := v.Get("Test", testVendor)
			if err != nil || gotAttrs != attrs || string(data) != "hello world" {
				t.Errorf("Get = %#x, %q, %v", gotAttrs, data, err)
			}
			// efivarfs replaces the whole variable on every write; a
			// MemMapFs standing in for it cannot, so only plain
			// directories are checked for a shorter rewrite.
			if b.plain {
				if err := v.Set("Test", testVendor, AttrNonVolatile, []byte("hi")); err != nil {
					t.Fatal(err)
				}
				if gotAttrs, data, err := v.Get("Test", testVendor); err != nil || gotAttrs != AttrNonVolatile || string(data) != "hi" {
					t.Errorf("Get after shorter Set = %#x, %q, %v", gotAttrs, data, err)
				}
			}
			if err := v.Delete("Test", testVendor); err != nil {
				t.Fatal(err)
			}
			if _, _, err := v.Get("Test", testVendor); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get after Delete: %v, want ErrNotFound", err)
			}
			if err := v.Delete("Test", testVendor); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Delete: %v, want ErrNotFound", err)
			}
			if names, _ := v.names(); len(names) != 0 {
				t.Errorf("files left behind: %v", names)
			}
		})
	}
}

func TestGetBadFiles(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    error
	}{
		{"", ErrNotFound}, // efivarfs placeholder of a create whose write failed
		{"\x07\x00", ErrMalformed},
	} {
		v, raw := backends[1].open(t, nil)
		if err := afero.WriteFile(raw, varFile("Bad", testVendor), []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := v.Get("Bad", testVendor); !errors.Is(err, tc.want) {
			t.Errorf("Get of %q: %v, want %v", tc.content, err, tc.want)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	v, raw := backends[1].open(t, nil)
	for _, name := range []string{"", "a/b", "../x", "a\x00b"} {
		if _, _, err := v.Get(name, testVendor); err == nil {
			t.Errorf("Get(%q) succeeded", name)
		}
		if err := v.Set(name, testVendor, 7, []byte{1}); err == nil {
			t.Errorf("Set(%q) succeeded", name)
		}
		if err := v.Delete(name, testVendor); err == nil {
			t.Errorf("Delete(%q) succeeded", name)
		}
	}
	if err := v.Set("Empty", testVendor, 7, nil); err == nil {
		t.Errorf("Set with empty data succeeded")
	}
	if names, _ := afero.ReadDir(raw, "/"); len(names) != 0 {
		t.Errorf("invalid calls left %d files behind", len(names))
	}
}

// failFs injects write failures once armed: files opened for writing fail
// every Write with writeErr, and Rename fails with renameErr.
type failFs struct {
	afero.Fs
	armed               bool
	writeErr, renameErr error
}

type failFile struct {
	afero.File
	err error
}

func (f failFile) Write(b []byte) (int, error) { return 0, f.err }

func (f *failFs) OpenFile(name string, flag int, perm os.FileMode) (afero.File, error) {
	file, err := f.Fs.OpenFile(name, flag, perm)
	if err != nil || !f.armed || f.writeErr == nil || flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return file, err
	}
	return failFile{file, f.writeErr}, nil
}

func (f *failFs) Rename(from, to string) error {
	if f.armed && f.renameErr != nil {
		return f.renameErr
	}
	return f.Fs.Rename(from, to)
}

func TestWriteFailures(t *testing.T) {
	enospc := &fs.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}
	for _, b := range backends {
		for _, tc := range []struct {
			name string
			fs   failFs
			want error
		}{
			{"ENOSPC", failFs{writeErr: enospc}, ErrNoSpace},
			{"EIO", failFs{writeErr: syscall.EIO}, syscall.EIO},
			{"power cut before rename", failFs{renameErr: syscall.EIO}, syscall.EIO},
		} {
			if !b.plain && tc.fs.renameErr != nil {
				continue // efivarfs writes in place
			}
			t.Run(b.name+"/"+tc.name, func(t *testing.T) {
				fail := tc.fs
				v, raw := b.open(t, func(inner afero.Fs) afero.Fs {
					fail.Fs = inner
					return &fail
				})
				if err := v.Set("Test", testVendor, 7, []byte("old value")); err != nil {
					t.Fatal(err)
				}
				before, _ := afero.ReadDir(raw, "/")
				fail.armed = true
				err := v.Set("Test", testVendor, 7, []byte("new"))
				if !errors.Is(err, tc.want) {
					t.Fatalf("Set: %v, want %v", err, tc.want)
				}
				if tc.want != ErrNoSpace && errors.Is(err, ErrNoSpace) {
					t.Errorf("Set: %v wraps ErrNoSpace", err)
				}
				if _, data, err := v.Get("Test", testVendor); err != nil || string(data) != "old value" {
					t.Errorf("after failed Set, Get = %q, %v; want the old value", data, err)
				}
				if after, _ := afero.ReadDir(raw, "/"); len(after) != len(before) {
					t.Errorf("failed Set left files behind: %d before, %d after", len(before), len(after))
				}
			})
		}
	}
}

// TestReadNeverWrites runs every reader over a read-only filesystem.
func TestReadNeverWrites(t *testing.T) {
	mem := afero.NewMemMapFs()
	w := OpenFS(mem)
	if _, err := w.AddBootEntry(abbootA); err != nil {
		t.Fatal(err)
	}
	if err := w.SetBootOrder([]uint16{0}); err != nil {
		t.Fatal(err)
	}
	v := OpenFS(afero.NewReadOnlyFs(mem))
	if _, err := v.BootEntries(); err != nil {
		t.Error(err)
	}
	if _, err := v.BootOrder(); err != nil {
		t.Error(err)
	}
	if _, _, err := v.BootNext(); err != nil {
		t.Error(err)
	}
	if n, err := v.FreeBootIndex(); err != nil || n != 1 {
		t.Errorf("FreeBootIndex = %d, %v", n, err)
	}
	if _, err := v.BootCurrent(); !errors.Is(err, ErrNotFound) {
		t.Errorf("BootCurrent: %v, want ErrNotFound", err)
	}
	if err := v.SetBootNext(0); err == nil {
		t.Errorf("SetBootNext on a read-only fs succeeded; the test cannot see writes")
	}
}

// TestGoUEFIReadsOurs writes through our efivarfs path and reads back with
// go-uefi's FSWrapper and load option parser over the same in-memory
// filesystem, naming the variables by go-uefi's own GUID constant.
func TestGoUEFIReadsOurs(t *testing.T) {
	mem := afero.NewMemMapFs()
	v := openEfivarfs(mem, false)
	if err := v.SetBootEntry(0x1a, abbootA); err != nil {
		t.Fatal(err)
	}
	w := fswrapper.NewMemoryWrapper()
	w.SetFS(mem)
	attrs, buf, err := w.ReadEfivarsWithGuid("Boot001A", attributes.EFI_GLOBAL_VARIABLE)
	if err != nil {
		t.Fatalf("go-uefi ReadEfivarsWithGuid: %v", err)
	}
	var lo device.EFILoadOption
	if err := lo.Unmarshal(buf); err != nil {
		t.Fatalf("go-uefi cannot parse our Boot001A: %v", err)
	}
	if attrs != 7 || lo.Description != "abboot-a" || len(lo.FilePath) != 2 {
		t.Errorf("go-uefi read attributes %#x, %+v", attrs, lo)
	}
	// And the other way: a variable go-uefi writes is read by us.
	if err := w.WriteEfivarsWithGuid("BootNext", 7, []byte{0x1a, 0}, attributes.EFI_GLOBAL_VARIABLE); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := v.BootNext(); err != nil || !ok || n != 0x1a {
		t.Errorf("BootNext = %#x, %v, %v", n, ok, err)
	}
}

func TestOpenLive(t *testing.T) {
	for _, dir := range []string{"", "/sys/firmware/efi/efivars", "/sys/firmware/efi/efivars/"} {
		if v := Open(dir); v.efi == nil || !v.chattr {
			t.Errorf("Open(%q) is not the live efivarfs", dir)
		}
	}
	if v := Open(filepath.Join(t.TempDir(), "x")); v.efi != nil || v.chattr {
		t.Errorf("Open(tempdir) uses efivarfs semantics")
	}
}
