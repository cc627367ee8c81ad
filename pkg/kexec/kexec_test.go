package kexec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/uki"
	"golang.org/x/sys/unix"
)

// call is one kexec_file_load as the kernel would see it: the contents of
// the descriptors, read while they are open, and the arguments.
type call struct {
	kernel, initrd []byte
	kernelFD       int
	initrdFD       int
	cmdline        string
	flags          int
}

// fakeLoad replaces kexecFileLoad for the test, records every call and
// returns ret.
func fakeLoad(t *testing.T, ret error) *[]call {
	t.Helper()
	var calls []call
	old := kexecFileLoad
	t.Cleanup(func() { kexecFileLoad = old })
	kexecFileLoad = func(kfd, ifd int, cmdline string, flags int) error {
		c := call{kernelFD: kfd, initrdFD: ifd, cmdline: cmdline, flags: flags}
		if flags&unix.KEXEC_FILE_UNLOAD == 0 {
			c.kernel = memfdContents(t, kfd, "abboot-kernel")
			if flags&unix.KEXEC_FILE_NO_INITRAMFS == 0 {
				c.initrd = memfdContents(t, ifd, "abboot-initrd")
			}
		}
		calls = append(calls, c)
		return ret
	}
	return &calls
}

// memfdContents checks that fd is a close-on-exec memfd named name and
// returns what it holds.
func memfdContents(t *testing.T, fd int, name string) []byte {
	t.Helper()
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil || !strings.HasPrefix(link, "/memfd:"+name) {
		t.Errorf("fd %d is %q (%v), want memfd %s", fd, link, err, name)
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d: flags %#x (%v), want FD_CLOEXEC", fd, fl, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, st.Size)
	if _, err := unix.Pread(fd, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// buildUKI builds a real UKI with objcopy and systemd's stub.
func buildUKI(t *testing.T, kernel, initrd []byte, cmdline string) string {
	t.Helper()
	dir := t.TempDir()
	k, i := filepath.Join(dir, "bzImage"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(k, kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(i, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "a.efi")
	if err := uki.Build(uki.Spec{Kernel: k, Initrd: i, Cmdline: cmdline}, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// pattern returns n bytes that are not all alike, so a truncated or padded
// section shows.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestLoad(t *testing.T) {
	// Odd sizes: the PE raw data is padded to FileAlignment, the kernel
	// must get exactly the virtual size.
	kernel, initrd := pattern(1, 10001), pattern(2, 3333)
	tests := []struct {
		name        string
		initrd      []byte
		cmdline     string
		edit        func(string) string
		wantCmdline string
	}{
		{
			name:        "handover appended",
			initrd:      initrd,
			cmdline:     "console=ttyS0 abboot.roothash=ab panic=10\n\x00",
			edit:        func(c string) string { return bootparam.WithHandover(c, "b") },
			wantCmdline: "console=ttyS0 abboot.roothash=ab panic=10 abboot.handover=b",
		},
		{
			name:        "stale handover replaced",
			initrd:      initrd,
			cmdline:     "quiet abboot.handover=a",
			edit:        func(c string) string { return bootparam.WithHandover(c, "b") },
			wantCmdline: "quiet abboot.handover=b",
		},
		{
			name:        "no edit",
			initrd:      initrd,
			cmdline:     "quiet\n",
			wantCmdline: "quiet",
		},
		{
			name:        "empty initrd section",
			cmdline:     "quiet",
			wantCmdline: "quiet",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := fakeLoad(t, nil)
			path := buildUKI(t, kernel, tt.initrd, tt.cmdline)
			if err := Load(path, tt.edit); err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(*calls) != 1 {
				t.Fatalf("kexec_file_load called %d times, want 1", len(*calls))
			}
			c := (*calls)[0]
			if !bytes.Equal(c.kernel, kernel) {
				t.Errorf("kernel memfd holds %d bytes, want the %d of .linux", len(c.kernel), len(kernel))
			}
			if c.cmdline != tt.wantCmdline {
				t.Errorf("cmdline = %q, want %q", c.cmdline, tt.wantCmdline)
			}
			wantFlags := 0
			if len(tt.initrd) == 0 {
				wantFlags = unix.KEXEC_FILE_NO_INITRAMFS
			}
			if c.flags != wantFlags {
				t.Errorf("flags = %#x, want %#x", c.flags, wantFlags)
			}
			if !bytes.Equal(c.initrd, tt.initrd) {
				t.Errorf("initrd memfd holds %d bytes, want the %d of .initrd", len(c.initrd), len(tt.initrd))
			}
			// Load closes its memfds once the kernel has copied them.
			for _, fd := range []int{c.kernelFD, c.initrdFD} {
				if link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && strings.HasPrefix(link, "/memfd:abboot-") {
					t.Errorf("fd %d (%s) still open after Load", fd, link)
				}
			}
		})
	}
}

func TestLoadBadInput(t *testing.T) {
	dir := t.TempDir()
	notPE := filepath.Join(dir, "not.efi")
	if err := os.WriteFile(notPE, []byte("MZ but not really a PE file"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := buildUKI(t, []byte("kernel"), []byte("initrd"), "quiet")
	tests := []struct {
		name    string
		path    string
		edit    func(string) string
		wantErr string
		wantIs  error
	}{
		{name: "missing file", path: filepath.Join(dir, "missing.efi"), wantErr: "missing.efi", wantIs: fs.ErrNotExist},
		{name: "not a PE file", path: notPE, wantErr: "reading UKI"},
		// The bare stub is a PE file with no .linux section.
		{name: "no .linux", path: uki.DefaultStub, wantErr: "no .linux section"},
		{name: "NUL in command line", path: good, edit: func(c string) string { return c + "\x00x" }, wantErr: "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := fakeLoad(t, nil)
			err := Load(tt.path, tt.edit)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Load = %v, want errors.Is %v", err, tt.wantIs)
			}
			if Refused(err) {
				t.Errorf("Refused(%v) = true for a bad UKI", err)
			}
			if len(*calls) != 0 {
				t.Errorf("kexec_file_load called %d times on bad input", len(*calls))
			}
		})
	}
}

func TestRefused(t *testing.T) {
	good := buildUKI(t, []byte("kernel"), []byte("initrd"), "quiet")
	for want, errnos := range map[bool][]unix.Errno{
		true: {unix.ENOSYS, unix.EPERM, unix.EACCES, unix.EBUSY, unix.EINVAL, unix.ENOEXEC,
			unix.EKEYREJECTED, unix.ENOKEY, unix.ENODATA, unix.EBADMSG, unix.ENOPKG},
		false: {unix.ENOMEM, unix.EIO, unix.EFAULT},
	} {
		for _, errno := range errnos {
			t.Run(errno.Error(), func(t *testing.T) {
				fakeLoad(t, errno)
				err := Load(good, nil)
				if !errors.Is(err, errno) {
					t.Errorf("Load = %v, want it to wrap %v", err, errno)
				}
				if got := Refused(err); got != want {
					t.Errorf("Refused(%v) = %v, want %v", err, got, want)
				}
				if got := errors.Is(err, ErrRefused); got != want {
					t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, got, want)
				}
			})
		}
	}
	// Only syscall errors are classified.
	for _, err := range []error{nil, unix.EPERM, &fs.PathError{Op: "open", Path: "x", Err: unix.EPERM}, io.EOF} {
		if Refused(err) {
			t.Errorf("Refused(%v) = true, want false for an error not from a kexec syscall", err)
		}
	}
}

func TestUnload(t *testing.T) {
	calls := fakeLoad(t, unix.EPERM)
	err := Unload()
	if !Refused(err) {
		t.Errorf("Unload = %v, want ErrRefused", err)
	}
	if len(*calls) != 1 || (*calls)[0].flags != unix.KEXEC_FILE_UNLOAD || (*calls)[0].cmdline != "" {
		t.Errorf("Unload made calls %+v, want one kexec_file_load with KEXEC_FILE_UNLOAD and no cmdline", *calls)
	}
}

func TestPrepareCmdline(t *testing.T) {
	tests := []struct {
		section string
		edit    func(string) string
		want    string
		wantErr bool
	}{
		{section: "", want: ""},
		{section: "a b", want: "a b"},
		{section: "a b\n", want: "a b"},
		{section: "a b\x00", want: "a b"},
		{section: "a b \n\x00\x00", want: "a b"},
		{section: "a\r\n", want: "a"},
		{section: "  a", want: "  a"},
		{section: "a\n", edit: func(c string) string { return "[" + c + "]" }, want: "[a]"},
		{section: "", edit: func(c string) string { return bootparam.WithHandover(c, "a") }, want: "abboot.handover=a"},
		{section: "a\x00b", wantErr: true},
		{section: "a", edit: func(c string) string { return c + "\x00" }, wantErr: true},
	}
	for _, tt := range tests {
		got, err := prepareCmdline(&uki.Image{Sections: map[string][]byte{".cmdline": []byte(tt.section)}}, tt.edit)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("prepareCmdline(%q) = %q, %v; want %q, error %v", tt.section, got, err, tt.want, tt.wantErr)
		}
	}
}
