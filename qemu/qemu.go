// Package qemu runs x86-64 UEFI virtual machines under qemu-system-x86_64 with
// OVMF firmware and drives their serial console, for abboot's end-to-end tests
// and for people debugging a boot (see cmd/abvm).
//
// A VM boots raw disk images attached as virtio-blk devices, with the OVMF code
// read-only and a private, writable copy of the OVMF variable store, so EFI
// variables (BootOrder, BootNext, abboot's slot state) persist across the boots
// of one test and never touch the system's template. Guest reboots (firmware
// reset, watchdog reset, kexec) stay inside the same qemu process; a guest
// power-off ends it. The serial console is captured in memory, optionally
// appended to a log file and echoed, and can be matched line by line with
// Expect.
//
// It is Linux-only. It does not build disk images, does not use KVM (the CI machines have none:
// everything runs under TCG), and does not read EFI variables on the host.
//
// Why not github.com/hugelgupf/vmtest/qemu: it is built around direct kernel
// boot (-kernel/-initrd), takes its QEMU command and extra arguments from
// VMTEST_* environment variables, mixes qemu's stderr into the console, and
// runs the console through a pty with Netflix/go-expect, whose matching works
// on the raw byte stream rather than on lines and pulls two more modules into
// go.mod. What abboot needs (pflash drives, one serial line stream, a per-VM
// timeout, a clean kill) is a small os/exec harness, so that is what this is.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Paths of the Debian ovmf package's 4 MiB firmware build without Secure
// Boot enforcement, and of its Secure Boot build. Both use the same
// variable store template, which has no keys: setup mode.
const (
	DefaultCode    = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	DefaultVars    = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	SecureBootCode = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
)

// Binary is the QEMU system emulator that is run.
const Binary = "qemu-system-x86_64"

// ErrKilled is returned by Wait (and Expect) after Kill stopped the VM.
var ErrKilled = errors.New("qemu killed")

// Options describe a VM. The zero value of every field except VarsFile is
// usable.
type Options struct {
	// Disks are raw image files attached in order as virtio-blk-pci
	// devices. No bootindex is set: QEMU would pass it to OVMF, which then
	// rewrites BootOrder, and BootOrder is abboot's to manage.
	Disks []string
	// VarsFile is the OVMF variable store (pflash unit 1, writable), a
	// private copy made with NewVars. Required.
	VarsFile string
	// Code is the OVMF firmware (pflash unit 0, read-only); default
	// DefaultCode, or SecureBootCode with SecureBoot.
	Code string
	// SecureBoot runs OVMF's Secure Boot build. It keeps its variables in
	// SMM, so the machine gets SMM (q35,smm=on) and a variable flash only
	// SMM may write (cfi.pflash01 secure=on); without them that build hangs
	// without a word on the console. Secure Boot is enforced once keys
	// are enrolled in VarsFile.
	SecureBoot bool
	// TPMDir, if set, attaches a TPM 2.0 (tpm-tis) that swtpm emulates
	// with its state in TPMDir. swtpm starts with the VM and ends with it;
	// the firmware resets the PCRs at every power-on and reset, the TPM's
	// persistent state stays in TPMDir.
	TPMDir string
	// TPMBanks, if set, are the PCR banks the TPM has active, comma
	// separated ("sha256"): swtpm_setup allocates them when TPMDir holds
	// no state yet, as libvirt does. Empty leaves swtpm's own default, all
	// of sha1, sha256, sha384 and sha512, each of which the firmware and a
	// measured kexec hash the whole UKI into.
	TPMBanks string
	// MemoryMiB is the guest memory; default 1024.
	MemoryMiB int
	// CPUs is the number of virtual CPUs; default 1, as tests run VMs in
	// parallel on few host cores.
	CPUs int
	// Watchdog adds an Intel 6300ESB watchdog whose expiry resets the
	// guest, as a hardware watchdog on a real machine would.
	Watchdog bool
	// Log, if set, is a file the raw serial output is appended to, framed
	// by one "### qemu ..." line at start and exit, so the boots of one
	// test can share a log.
	Log string
	// Timeout, if positive, limits the VM's lifetime: qemu is killed after
	// it and Wait returns an error wrapping context.DeadlineExceeded.
	Timeout time.Duration
	// Extra arguments are appended to qemu's command line (for example
	// "-nic", "user"). When they configure a network, "-net none" is not
	// passed.
	Extra []string
	// Echo, if set, receives a live copy of the raw serial output.
	Echo io.Writer
	// Forwards, if any, give the guest a virtio-net NIC on QEMU's
	// user-mode network in restricted mode: the guest reaches nothing on
	// the host or beyond it but these forwarded addresses.
	Forwards []Forward
}

// A Forward lets the guest's TCP connections to Guest ("10.0.2.100:80",
// an address in the user-mode network 10.0.2.0/24 that no one has) reach
// Host ("127.0.0.1:8080") on the host.
type Forward struct {
	Guest, Host string
}

// withDefaults returns o with empty fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Code == "" {
		o.Code = DefaultCode
		if o.SecureBoot {
			o.Code = SecureBootCode
		}
	}
	if o.MemoryMiB <= 0 {
		o.MemoryMiB = 1024
	}
	if o.CPUs <= 0 {
		o.CPUs = 1
	}
	return o
}

// args returns qemu's arguments (without the binary) for o, which must have
// its defaults set.
func (o Options) args() []string {
	// OVMF_CODE_4M.fd (the build without Secure Boot enforcement) needs
	// no SMM, so plain q35 works; q35 is what OVMF is tested on.
	machine := "q35"
	if o.SecureBoot {
		machine = "q35,smm=on"
	}
	a := []string{
		"-machine", machine,
		"-m", strconv.Itoa(o.MemoryMiB),
		"-smp", strconv.Itoa(o.CPUs),
		"-nodefaults",
		"-display", "none",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + escapeOpt(o.Code),
		"-drive", "if=pflash,format=raw,unit=1,file=" + escapeOpt(o.VarsFile),
		// The console is qemu's stdio, which Start connects to pipes;
		// signal=off keeps a ^C on the serial input from killing qemu.
		"-chardev", "stdio,id=serial0,signal=off",
		"-serial", "chardev:serial0",
		// An entropy source, so that getrandom(2) in the guest (Go's
		// crypto/rand, systemd) does not stall the boot under TCG.
		"-device", "virtio-rng-pci",
	}
	switch {
	case len(o.Forwards) > 0:
		a = append(a, o.netArgs()...)
	case !hasNetwork(o.Extra):
		a = append(a, "-net", "none")
	}
	for i, d := range o.Disks {
		id := fmt.Sprintf("disk%d", i)
		a = append(a,
			"-drive", "if=none,format=raw,id="+id+",file="+escapeOpt(d),
			"-device", "virtio-blk-pci,drive="+id)
	}
	if o.SecureBoot {
		a = append(a, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	if o.TPMDir != "" {
		a = append(a,
			"-chardev", "socket,id=chrtpm,path="+escapeOpt(tpmSocket(o.TPMDir)),
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-tis,tpmdev=tpm0")
	}
	if o.Watchdog {
		// "-action watchdog=" (QEMU >= 6.0) replaces the older
		// "-watchdog-action"; reset is what a board's watchdog does.
		a = append(a, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	return append(a, o.Extra...)
}

// escapeOpt escapes a value for QEMU's key=value,... option syntax, where a
// literal comma is written twice.
func escapeOpt(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// netArgs returns the arguments of the restricted NIC with o.Forwards.
// restrict=on isolates the guest; explicit forwards are exempt (QEMU's
// -netdev user documentation). A forward runs a command per connection
// (guestfwd=...-cmd:), the relay that this program's own binary becomes
// (see init): the other form, guestfwd to a chardev, connects once when
// QEMU starts and carries one stream, which an HTTP client's parallel
// connections would share and garble. romfile= leaves out the NIC's
// option ROM, so that the firmware finds no network boot.
func (o Options) netArgs() []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	nd := "user,id=net0,restrict=on"
	for _, f := range o.Forwards {
		// The command is split by glib's shell rules (libslirp's
		// fork_exec).
		nd += ",guestfwd=tcp:" + f.Guest + "-cmd:" + escapeOpt(shellQuote(exe)+" "+relayArg+" "+shellQuote(f.Host))
	}
	return []string{"-netdev", nd, "-device", "virtio-net-pci,netdev=net0,romfile="}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// relayArg, as the only argument but one, makes a program that imports
// this package the relay of one forwarded connection (see init).
const relayArg = "-abboot-qemu-relay"

// init turns the program into a forward's relay when QEMU runs it so, as
// "PROGRAM -abboot-qemu-relay HOST:PORT": its standard input and output
// are one guest connection (a socket that slirp made), copied to and
// from a TCP connection to HOST:PORT until both ends have closed. It
// writes nothing else: standard error is the same socket.
func init() {
	if len(os.Args) == 3 && os.Args[1] == relayArg {
		if relay(os.Args[2]) != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func relay(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	guest := os.Stdin
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, guest)
		// Pass the guest's end of the request on, and wait for the
		// answer's end.
		c.(*net.TCPConn).CloseWrite()
		sent <- err
	}()
	_, err = io.Copy(os.Stdout, c)
	syscall.Shutdown(int(os.Stdout.Fd()), syscall.SHUT_WR)
	return errors.Join(err, <-sent)
}

// hasNetwork reports whether extra qemu arguments configure networking.
func hasNetwork(extra []string) bool {
	for _, a := range extra {
		switch a {
		case "-net", "-nic", "-netdev":
			return true
		}
	}
	return false
}

// NewVars writes a fresh, writable copy of the OVMF variable store template
// DefaultVars to path, replacing any file there.
func NewVars(path string) error {
	return copyVars(DefaultVars, path)
}

func copyVars(template, path string) error {
	b, err := os.ReadFile(template)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("OVMF variable store template %s is missing: install the Debian package ovmf", template)
	}
	if err != nil {
		return fmt.Errorf("reading OVMF variable store template: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing OVMF variable store copy: %w", err)
	}
	return nil
}

// VM is a running qemu process.
type VM struct {
	cmd    *exec.Cmd
	ctx    context.Context // ends the VM when done (Start's ctx, Timeout)
	cancel context.CancelFunc
	con    *console
	killed atomic.Bool

	stdinMu sync.Mutex
	stdin   io.WriteCloser

	stderr bytes.Buffer // read only after done is closed

	done chan struct{} // closed once qemu has exited and err is set
	err  error

	tpm     *exec.Cmd     // swtpm, nil without Options.TPMDir
	tpmDone chan struct{} // closed once swtpm is reaped
}

// Start checks o and starts qemu. Cancelling ctx kills the VM. The caller
// must eventually call Wait or Kill.
func Start(ctx context.Context, o Options) (*VM, error) {
	o = o.withDefaults()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		return nil, fmt.Errorf("%s not found: install the Debian package qemu-system-x86", Binary)
	}
	if o.VarsFile == "" {
		return nil, errors.New("starting VM: Options.VarsFile is empty (make one with NewVars)")
	}
	if _, err := os.Stat(o.Code); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("OVMF firmware %s is missing: install the Debian package ovmf", o.Code)
	}
	for _, f := range append([]string{o.VarsFile}, o.Disks...) {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("starting VM: %w", err)
		}
	}
	args := o.args()

	v := &VM{con: newConsole(), done: make(chan struct{})}
	if o.TPMDir != "" {
		if err := v.startTPM(o.TPMDir, o.TPMBanks); err != nil {
			return nil, err
		}
	}
	var log io.WriteCloser
	if o.Log != "" {
		f, err := os.OpenFile(o.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			v.stopTPM()
			return nil, fmt.Errorf("opening VM log: %w", err)
		}
		fmt.Fprintf(f, "### qemu start %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
		log = f
	}

	if o.Timeout > 0 {
		v.ctx, v.cancel = context.WithTimeoutCause(ctx, o.Timeout,
			fmt.Errorf("VM timeout %v exceeded: %w", o.Timeout, context.DeadlineExceeded))
	} else {
		v.ctx, v.cancel = context.WithCancel(ctx)
	}
	v.cmd = exec.CommandContext(v.ctx, bin, args...)
	v.cmd.Stderr = &v.stderr
	// Own process group: a ^C on abvm's terminal reaches abvm, which ends
	// qemu itself. Pdeathsig: a crashed test binary leaves no qemu behind
	// holding image locks.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := v.startCmd(log, o.Echo); err != nil {
		v.cancel()
		v.stopTPM()
		if log != nil {
			log.Close()
		}
		return nil, fmt.Errorf("starting %s: %w", Binary, err)
	}
	return v, nil
}

// startCmd connects qemu's stdio and starts it and the capture goroutine.
func (v *VM) startCmd(log io.WriteCloser, echo io.Writer) error {
	var err error
	if v.stdin, err = v.cmd.StdinPipe(); err != nil {
		return err
	}
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := v.cmd.Start(); err != nil {
		return err
	}
	go v.capture(stdout, log, echo)
	return nil
}

// capture copies qemu's stdout (the serial console) to the console buffer,
// log and echo until qemu exits, then reaps qemu.
func (v *VM) capture(stdout io.Reader, log io.WriteCloser, echo io.Writer) {
	var logErr error
	buf := make([]byte, 32*1024)
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			v.con.Write(buf[:n])
			if log != nil && logErr == nil {
				_, logErr = log.Write(buf[:n])
			}
			if echo != nil {
				// A failing echo (a closed terminal) must not stop
				// the capture.
				_, _ = echo.Write(buf[:n])
			}
		}
		if err != nil {
			break
		}
	}
	err := v.exitError(v.cmd.Wait())
	v.cancel()
	v.stopTPM()
	if log != nil {
		status := "exit status 0"
		if err != nil {
			status = err.Error()
		}
		fmt.Fprintf(log, "\n### qemu exit %s: %s\n", time.Now().Format(time.RFC3339), status)
		if cerr := log.Close(); logErr == nil {
			logErr = cerr
		}
	}
	if logErr != nil {
		err = errors.Join(err, fmt.Errorf("writing VM log: %w", logErr))
	}
	v.err = err
	v.con.close(err)
	close(v.done)
}

// tpmSocket is the path of swtpm's control socket, which QEMU's TPM
// emulator backend connects to.
func tpmSocket(dir string) string { return filepath.Join(dir, "swtpm.sock") }

// startTPM starts swtpm for the VM and waits for its socket. swtpm
// creates its state on first use; swtpm_setup makes it first only to
// choose the PCR banks (no EK certificate, which abboot does not need).
func (v *VM) startTPM(dir, banks string) error {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return errors.New("swtpm not found: install the Debian packages swtpm and swtpm-tools")
	}
	if _, err := os.Stat(filepath.Join(dir, "tpm2-00.permall")); banks != "" && errors.Is(err, os.ErrNotExist) {
		out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir, "--pcr-banks", banks, "--not-overwrite").CombinedOutput()
		if err != nil {
			return fmt.Errorf("swtpm_setup --pcr-banks %s: %w: %s", banks, err, out)
		}
	}
	sock := tpmSocket(dir)
	os.Remove(sock)
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--ctrl", "type=unixio,path="+sock, "--terminate")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting swtpm: %w", err)
	}
	v.tpm, v.tpmDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(v.tpmDone) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return nil
		}
		select {
		case <-v.tpmDone:
			return fmt.Errorf("swtpm exited before its socket appeared: %s", stderr.String())
		case <-tick.C:
		}
	}
}

// stopTPM ends swtpm and waits for it; --terminate normally ends it
// already when qemu closes the control socket.
func (v *VM) stopTPM() {
	if v.tpm != nil {
		_ = v.tpm.Process.Kill()
		<-v.tpmDone
	}
}

// exitError explains how qemu ended.
func (v *VM) exitError(err error) error {
	switch {
	case err == nil:
		return nil
	case v.killed.Load():
		return ErrKilled
	case v.ctx.Err() != nil:
		return context.Cause(v.ctx)
	}
	if msg := strings.TrimSpace(v.stderr.String()); msg != "" {
		return fmt.Errorf("%s: %w: %s", Binary, err, msg)
	}
	return fmt.Errorf("%s: %w", Binary, err)
}

// Expect waits up to timeout for the next complete serial line that matches
// the regular expression re and returns its submatches. Lines are matched
// without their line ending, carriage returns and terminal escape sequences,
// and each line is offered to one Expect only: the matching line and all
// lines before it are consumed. When the timeout passes or qemu exits first,
// the error quotes the last 30 console lines.
func (v *VM) Expect(re string, timeout time.Duration) ([]string, error) {
	_, m, err := v.con.expect(timeout, false, []string{re})
	return m, err
}

// ExpectAny is Expect for several patterns: it returns the index of the
// pattern that matched the first matching line (the lowest index when more
// than one matches it) and the submatches.
func (v *VM) ExpectAny(timeout time.Duration, res ...string) (index int, m []string, err error) {
	return v.con.expect(timeout, false, res)
}

// ExpectPrompt is Expect that also matches the unterminated last line, for
// prompts that wait for input without a newline ("Shell> ", "login: "). That
// line counts as consumed, including whatever is later printed on it (such
// as the echo of a command sent with Send).
func (v *VM) ExpectPrompt(re string, timeout time.Duration) ([]string, error) {
	_, m, err := v.con.expect(timeout, true, []string{re})
	return m, err
}

// Send writes s to the serial console's input. The guest's terminal
// settings decide what a newline means; UEFI and a Linux tty both take "\r"
// as Enter.
func (v *VM) Send(s string) error {
	v.stdinMu.Lock()
	defer v.stdinMu.Unlock()
	if _, err := io.WriteString(v.stdin, s); err != nil {
		return fmt.Errorf("writing to the serial console: %w", err)
	}
	return nil
}

// Wait waits for qemu to exit. It returns nil when the guest powered off,
// ErrKilled after Kill, an error wrapping context.DeadlineExceeded after
// Options.Timeout, ctx's error when Start's context was cancelled, and
// otherwise an error with qemu's exit status and stderr.
func (v *VM) Wait() error {
	<-v.done
	return v.err
}

// Kill stops qemu at once, like pulling the power cord, and returns when it
// has exited, so the disk images and the vars file are closed and unlocked.
// Calling it on a VM that has already exited does nothing.
func (v *VM) Kill() {
	select {
	case <-v.done:
		return
	default:
	}
	v.killed.Store(true)
	// The process may exit on its own meanwhile; then Kill fails
	// harmlessly with os.ErrProcessDone.
	_ = v.cmd.Process.Kill()
	<-v.done
}

// Output returns the raw serial output so far.
func (v *VM) Output() string {
	return v.con.String()
}
