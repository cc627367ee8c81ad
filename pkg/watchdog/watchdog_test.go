package watchdog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDev is a watchdog driver that records what is done to it and fails
// the operation named in fail.
type fakeDev struct {
	ops     *[]string
	options uint32
	timeout int // what WDIOC_GETTIMEOUT reports; 0: what was set
	set     int
	fail    string
}

func (f *fakeDev) op(name string) error {
	*f.ops = append(*f.ops, name)
	if name == f.fail || strings.HasPrefix(name, f.fail+" ") {
		return unix.EIO
	}
	return nil
}

func (f *fakeDev) Support() (*unix.WatchdogInfo, error) {
	if err := f.op("support"); err != nil {
		return nil, err
	}
	info := &unix.WatchdogInfo{Options: f.options}
	copy(info.Identity[:], "fake wdt")
	return info, nil
}

func (f *fakeDev) setTimeout(s int) error {
	f.set = s
	return f.op(fmt.Sprintf("settimeout %d", s))
}

func (f *fakeDev) Timeout() (time.Duration, error) {
	t := f.timeout
	if t == 0 {
		t = f.set
	}
	return time.Duration(t) * time.Second, f.op("gettimeout")
}

func (f *fakeDev) KeepAlive() error  { return f.op("keepalive") }
func (f *fakeDev) Close() error      { return f.op("close") }
func (f *fakeDev) MagicClose() error { return f.op("magicclose") }

// useFake makes open return d for /dev/watchdog and ENOENT for any other
// path, and returns the list of operations done.
func useFake(t *testing.T, d *fakeDev) *[]string {
	t.Helper()
	d.ops = new([]string)
	old := open
	t.Cleanup(func() { open = old })
	open = func(path string) (device, error) {
		if path != "/dev/watchdog" {
			return nil, &fs.PathError{Op: "open", Path: path, Err: unix.ENOENT}
		}
		*d.ops = append(*d.ops, "open")
		return d, nil
	}
	return d.ops
}

const magic = unix.WDIOF_MAGICCLOSE | unix.WDIOF_SETTIMEOUT | unix.WDIOF_KEEPALIVEPING

func TestArm(t *testing.T) {
	tests := []struct {
		name    string
		dev     fakeDev
		timeout time.Duration
		wantOps []string
		wantErr string
	}{
		{
			name:    "armed and left running",
			dev:     fakeDev{options: magic},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "settimeout 30", "gettimeout", "keepalive", "close"},
		},
		{
			name:    "driver rounds up",
			dev:     fakeDev{options: magic, timeout: 32},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "settimeout 30", "gettimeout", "keepalive", "close"},
		},
		{
			name:    "longest",
			dev:     fakeDev{options: magic},
			timeout: time.Hour,
			wantOps: []string{"open", "support", "settimeout 3600", "gettimeout", "keepalive", "close"},
		},
		{
			name:    "no magic close: a close would stop it",
			dev:     fakeDev{options: unix.WDIOF_SETTIMEOUT},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "magicclose"},
			wantErr: `driver "fake wdt" lacks WDIOF_MAGICCLOSE`,
		},
		{
			name:    "driver shortens the timeout",
			dev:     fakeDev{options: magic, timeout: 20},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "settimeout 30", "gettimeout", "magicclose"},
			wantErr: "set timeout 20s, shorter than 30s",
		},
		{
			name:    "settimeout fails",
			dev:     fakeDev{options: magic, fail: "settimeout"},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "settimeout 30", "magicclose"},
			wantErr: "WDIOC_SETTIMEOUT 30s: input/output error",
		},
		{
			name:    "support fails",
			dev:     fakeDev{fail: "support"},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "magicclose"},
			wantErr: "WDIOC_GETSUPPORT",
		},
		{
			name:    "keepalive fails",
			dev:     fakeDev{options: magic, fail: "keepalive"},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "settimeout 30", "gettimeout", "keepalive", "magicclose"},
			wantErr: "keepalive",
		},
		{
			name:    "stopping again fails too",
			dev:     fakeDev{options: 0, fail: "magicclose"},
			timeout: 30 * time.Second,
			wantOps: []string{"open", "support", "magicclose"},
			wantErr: "stopping it again",
		},
		{name: "zero", timeout: 0, wantErr: "want whole seconds"},
		{name: "negative", timeout: -time.Second, wantErr: "want whole seconds"},
		{name: "too long", timeout: time.Hour + time.Second, wantErr: "want whole seconds"},
		{name: "fraction", timeout: 1500 * time.Millisecond, wantErr: "want whole seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := useFake(t, &tt.dev)
			err := Arm("", tt.timeout)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Arm = %v, want error %q", err, tt.wantErr)
			}
			if !slices.Equal(*ops, tt.wantOps) {
				t.Errorf("Arm did %q, want %q", *ops, tt.wantOps)
			}
			if errors.Is(err, ErrNoDevice) {
				t.Errorf("Arm = %v, want no ErrNoDevice with a device present", err)
			}
		})
	}
}

func TestDisarmPet(t *testing.T) {
	tests := []struct {
		name    string
		f       func(string) error
		fail    string
		wantOps []string
		wantErr bool
	}{
		{name: "disarm", f: Disarm, wantOps: []string{"open", "magicclose"}},
		{name: "disarm fails", f: Disarm, fail: "magicclose", wantOps: []string{"open", "magicclose"}, wantErr: true},
		{name: "pet", f: Pet, wantOps: []string{"open", "keepalive", "close"}},
		// The fd is closed even when the ping fails.
		{name: "pet fails", f: Pet, fail: "keepalive", wantOps: []string{"open", "keepalive", "close"}, wantErr: true},
		{name: "pet close fails", f: Pet, fail: "close", wantOps: []string{"open", "keepalive", "close"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := useFake(t, &fakeDev{options: magic, fail: tt.fail})
			if err := tt.f(""); (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(*ops, tt.wantOps) {
				t.Errorf("did %q, want %q", *ops, tt.wantOps)
			}
		})
	}
}

// TestNoDevice uses the real open: a path that does not exist is
// ErrNoDevice for every operation, and a file that is not a watchdog is
// an ioctl error, not ErrNoDevice.
func TestNoDevice(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "watchdog")
	for name, f := range map[string]func(string) error{
		"Arm":    func(p string) error { return Arm(p, 30*time.Second) },
		"Disarm": Disarm,
		"Pet":    Pet,
	} {
		if err := f(missing); !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s(%s) = %v, want ErrNoDevice naming the path", name, missing, err)
		}
	}

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := Arm(regular, 30*time.Second)
	if err == nil || errors.Is(err, ErrNoDevice) || !errors.Is(err, unix.ENOTTY) {
		t.Errorf("Arm(regular file) = %v, want an ENOTTY error that is not ErrNoDevice", err)
	}
	// Arm stopped it again with the magic close: the file holds the 'V'.
	if b, _ := os.ReadFile(regular); string(b) != "V" {
		t.Errorf("after a failed Arm the file holds %q, want the magic close %q", b, "V")
	}
}
