package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestArgs(t *testing.T) {
	base := func(code, vars string, mem, cpus string) []string {
		return []string{
			"-machine", "q35", "-m", mem, "-smp", cpus, "-nodefaults", "-display", "none",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
			"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
			"-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0",
			"-device", "virtio-rng-pci",
		}
	}
	for _, tc := range []struct {
		name string
		o    Options
		want []string
	}{{
		name: "defaults",
		o:    Options{VarsFile: "/t/v.fd"},
		want: append(base(DefaultCode, "/t/v.fd", "1024", "1"), "-net", "none"),
	}, {
		name: "disks in order, watchdog, sizes",
		o: Options{
			VarsFile: "v.fd", Code: "c.fd", MemoryMiB: 512, CPUs: 2, Watchdog: true,
			Disks: []string{"a.img", "b.img"},
		},
		want: append(base("c.fd", "v.fd", "512", "2"),
			"-net", "none",
			"-drive", "if=none,format=raw,id=disk0,file=a.img", "-device", "virtio-blk-pci,drive=disk0",
			"-drive", "if=none,format=raw,id=disk1,file=b.img", "-device", "virtio-blk-pci,drive=disk1",
			"-device", "i6300esb", "-action", "watchdog=reset"),
	}, {
		name: "commas in paths are escaped",
		o:    Options{VarsFile: "/t/a,b.fd", Code: "/c,,d", Disks: []string{"x,y.img"}},
		want: append(base("/c,,,,d", "/t/a,,b.fd", "1024", "1"),
			"-net", "none",
			"-drive", "if=none,format=raw,id=disk0,file=x,,y.img", "-device", "virtio-blk-pci,drive=disk0"),
	}, {
		name: "extra network replaces -net none",
		o:    Options{VarsFile: "v", Extra: []string{"-nic", "user,model=virtio-net-pci"}},
		want: append(base(DefaultCode, "v", "1024", "1"), "-nic", "user,model=virtio-net-pci"),
	}, {
		name: "secure boot and TPM",
		o:    Options{VarsFile: "v", SecureBoot: true, TPMDir: "/t"},
		want: append(append([]string{"-machine", "q35,smm=on"}, base(SecureBootCode, "v", "1024", "1")[2:]...),
			"-net", "none",
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-chardev", "socket,id=chrtpm,path=/t/swtpm.sock", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"),
	}, {
		name: "forwards: a restricted NIC, a relay per connection",
		o:    Options{VarsFile: "v", Forwards: []Forward{{"10.0.2.100:80", "127.0.0.1:8080"}, {"10.0.2.101:80", "127.0.0.1:9,9"}}},
		want: append(base(DefaultCode, "v", "1024", "1"),
			"-netdev", "user,id=net0,restrict=on"+
				",guestfwd=tcp:10.0.2.100:80-cmd:'"+escapeOpt(testExe(t))+"' -abboot-qemu-relay '127.0.0.1:8080'"+
				",guestfwd=tcp:10.0.2.101:80-cmd:'"+escapeOpt(testExe(t))+"' -abboot-qemu-relay '127.0.0.1:9,,9'",
			"-device", "virtio-net-pci,netdev=net0,romfile="),
	}, {
		name: "extra without network",
		o:    Options{VarsFile: "v", Extra: []string{"-cpu", "max"}},
		want: append(base(DefaultCode, "v", "1024", "1"), "-net", "none", "-cpu", "max"),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.withDefaults().args(); !slices.Equal(got, tc.want) {
				t.Errorf("args:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func testExe(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestRelay runs this test binary as a forward's relay, as QEMU would, on
// pipes instead of slirp's socket: a request goes through to an HTTP
// server and its answer comes back whole.
func TestRelay(t *testing.T) {
	body := strings.Repeat("relayed ", 100000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path+" "+body)
	}))
	defer srv.Close()
	cmd := exec.Command(testExe(t), relayArg, srv.Listener.Addr().String())
	cmd.Stdin = strings.NewReader("GET /x HTTP/1.0\r\nHost: guest\r\n\r\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
	if err != nil {
		t.Fatalf("reading the relayed answer: %v\n%.200q", err, out)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != "/x "+body {
		t.Errorf("relayed body: %d bytes (%v), want %d", len(got), err, len(body)+3)
	}
}

func TestNewVars(t *testing.T) {
	tmpl, err := os.ReadFile(DefaultVars)
	if err != nil {
		t.Fatalf("OVMF variable store template: %v (install the Debian package ovmf)", err)
	}
	path := filepath.Join(t.TempDir(), "vars.fd")
	// An existing file is replaced by a fresh copy.
	if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := NewVars(path); err != nil {
		t.Fatalf("NewVars: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, tmpl) {
		t.Fatalf("NewVars did not write a copy of %s (%d bytes, err %v)", DefaultVars, len(got), err)
	}
	// The template is root-owned and read-only to others; the copy must be
	// writable by its owner (qemu opens pflash unit 1 read-write).
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o200 == 0 {
		t.Errorf("vars copy has mode %v, want it writable by its owner", fi.Mode())
	}
}

func TestNewVarsErrors(t *testing.T) {
	dir := t.TempDir()
	err := copyVars(filepath.Join(dir, "missing.fd"), filepath.Join(dir, "v.fd"))
	if err == nil || !strings.Contains(err.Error(), "Debian package ovmf") || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing template: got %v, want one line naming the Debian package ovmf", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "v.fd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing template left a vars file behind: %v", err)
	}
	if err := NewVars(filepath.Join(dir, "no", "such", "dir")); err == nil {
		t.Error("NewVars into a missing directory succeeded")
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	vars := filepath.Join(dir, "v.fd")
	if err := NewVars(vars); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		o          Options
	}{
		{"no vars", "VarsFile", Options{}},
		{"missing disk", "nope.img", Options{VarsFile: vars, Disks: []string{filepath.Join(dir, "nope.img")}}},
		{"missing code", "Debian package ovmf", Options{VarsFile: vars, Code: filepath.Join(dir, "code.fd")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, err := Start(t.Context(), tc.o)
			if err == nil {
				vm.Kill()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
	t.Run("no qemu", func(t *testing.T) {
		t.Setenv("PATH", dir)
		_, err := Start(t.Context(), Options{VarsFile: vars})
		if err == nil || !strings.Contains(err.Error(), "Debian package qemu-system-x86") {
			t.Errorf("Start without qemu in PATH: %v; want an error naming the Debian package", err)
		}
	})
}

// newVM starts a VM on a private vars copy and an empty (unbootable) disk and
// kills it when the test ends.
func newVM(t *testing.T, o Options) (*VM, Options) {
	t.Helper()
	dir := t.TempDir()
	o.VarsFile = filepath.Join(dir, "vars.fd")
	if err := NewVars(o.VarsFile); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	o.Disks = []string{disk}
	vm, err := Start(t.Context(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(vm.Kill)
	return vm, o
}

// TestBootOVMF boots the real firmware on a disk without an OS and drives the
// UEFI shell it falls back to over the serial console (about 5 s under TCG).
func TestBootOVMF(t *testing.T) {
	t.Parallel()
	tmpl, err := os.ReadFile(DefaultVars)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "serial.log")
	var echo bytes.Buffer
	echoW := &lockedWriter{w: &echo}
	start := time.Now()
	vm, o := newVM(t, Options{Log: log, Echo: echoW, Watchdog: true, Timeout: 2 * time.Minute})

	// OVMF first tries the virtio disk (no ESP on it), then its built-in
	// shell.
	m, err := vm.Expect(`^BdsDxe: failed to load (Boot[0-9A-F]{4}) "UEFI Misc Device" from PciRoot`, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: OVMF tried the disk", time.Since(start))
	if m[1] != "Boot0001" {
		t.Errorf("virtio disk boot entry = %s, want Boot0001", m[1])
	}
	if _, err := vm.Expect(`^UEFI Interactive Shell v\d`, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Any key skips the 5 s startup.nsh countdown.
	if _, err := vm.ExpectPrompt(`Press ESC in \d+ seconds`, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := vm.Send("\x1b"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.ExpectPrompt(`^Shell> $`, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: shell prompt", time.Since(start))
	if err := vm.Send("echo serial-in-$%\r"); err != nil {
		t.Fatal(err)
	}
	// The shell echoes the command on the prompt line (consumed by
	// ExpectPrompt), then prints the result on its own line.
	if m, err := vm.Expect(`^serial-in-(.*)$`, 30*time.Second); err != nil || m[1] != "$%" {
		t.Fatalf("shell echo result: %q, %v", m, err)
	}

	vm.Kill()
	if err := vm.Wait(); !errors.Is(err, ErrKilled) {
		t.Errorf("Wait after Kill = %v, want ErrKilled", err)
	}
	if _, err := vm.Expect(`never`, time.Minute); !errors.Is(err, ErrKilled) {
		t.Errorf("Expect after Kill = %v, want an error wrapping ErrKilled", err)
	}
	out := vm.Output()
	if !strings.Contains(out, "BdsDxe: starting Boot0002 \"EFI Internal Shell\"") {
		t.Errorf("Output() lacks the BdsDxe lines:\n%s", out)
	}
	logged, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(logged), "### qemu start ") || !strings.Contains(string(logged), out) ||
		!strings.HasSuffix(string(logged), "qemu killed\n") {
		t.Errorf("log is not start line + serial output + exit line:\n%s", logged)
	}
	if got := echoW.String(); got != out {
		t.Errorf("Echo got %d bytes, Output %d bytes; want the same", len(got), len(out))
	}

	// OVMF wrote its boot entries into the private vars copy; the system
	// template stays as it was.
	vars, err := os.ReadFile(o.VarsFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(vars, tmpl) {
		t.Error("the VM did not write to its vars file")
	}
	if after, err := os.ReadFile(DefaultVars); err != nil || !bytes.Equal(after, tmpl) {
		t.Errorf("%s changed during the boot (err %v)", DefaultVars, err)
	}
}

// TestTimeout checks that Options.Timeout kills a VM that would otherwise
// sit in the UEFI shell forever.
func TestTimeout(t *testing.T) {
	t.Parallel()
	vm, _ := newVM(t, Options{Timeout: 2 * time.Second})
	start := time.Now()
	_, err := vm.Expect(`never`, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Expect = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if err := vm.Wait(); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "2s") {
		t.Errorf("Wait = %v, want the VM timeout", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("VM lived %v with a 2s timeout", d)
	}
}

// TestQEMUFails checks that a qemu that refuses its arguments surfaces its
// stderr through Wait and Expect.
func TestQEMUFails(t *testing.T) {
	vm, _ := newVM(t, Options{Extra: []string{"-no-such-option"}})
	_, err := vm.Expect(`never`, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "qemu exited") || !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("Expect = %v, want qemu's exit with its stderr", err)
	}
	if err := vm.Wait(); err == nil || !strings.Contains(err.Error(), "invalid option") {
		t.Errorf("Wait = %v, want qemu's stderr", err)
	}
}

// lockedWriter lets the test read what the capture goroutine echoes.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

// TestBootSecureBootTPM boots OVMF's Secure Boot build (which hangs
// without SMM) with a swtpm TPM into its shell, and checks that the
// firmware used the TPM: swtpm wrote its state, and swtpm is gone once
// the VM is.
func TestBootSecureBootTPM(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (apt-get install swtpm swtpm-tools)")
	}
	tpm := t.TempDir()
	vm, _ := newVM(t, Options{SecureBoot: true, TPMDir: tpm, Timeout: 2 * time.Minute})
	if _, err := vm.Expect(`^UEFI Interactive Shell v\d`, time.Minute); err != nil {
		t.Fatal(err)
	}
	vm.Kill()
	state, _ := filepath.Glob(filepath.Join(tpm, "tpm2-*"))
	if len(state) == 0 {
		t.Error("swtpm has no state: the firmware did not use the TPM")
	}
	if err := vm.tpm.Process.Signal(syscall.Signal(0)); err == nil {
		t.Error("swtpm still runs after the VM ended")
	}
}
