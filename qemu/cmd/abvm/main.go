// Command abvm boots disk images in a UEFI (OVMF) virtual machine with the
// serial console on the terminal, for debugging an abboot boot by hand:
//
//	abvm [--vars FILE] [--watchdog] [--mem MiB] [--secureboot] [--tpm DIR] DISK [DISK...]
//
// --secureboot runs OVMF's Secure Boot build (its variable store starts in
// setup mode: enroll keys with `abctl secureboot enroll`); --tpm DIR
// attaches a TPM emulated by swtpm, its state kept in DIR.
//
// Typed input goes to the guest's serial port; the guest's output is printed
// as it comes. Without --vars, the EFI variable store is DISK.vars next to
// the first disk, created from the OVMF template on first use and reused
// afterwards, so BootOrder, BootNext and abboot's variables persist across
// runs. Delete it to start with factory-fresh firmware settings.
//
// The guest powering off ends abvm (exit status 0); so does ^C, which is not
// passed to the guest. Guest reboots stay in the same VM. It runs under TCG
// (no KVM), so a boot takes a while.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/abboot/abboot/qemu"
	"golang.org/x/sys/unix"
)

func main() {
	vars := flag.String("vars", "", "OVMF variable store `FILE` (default: DISK.vars next to the first disk)")
	watchdog := flag.Bool("watchdog", false, "add an i6300esb watchdog that resets the guest")
	mem := flag.Int("mem", 1024, "guest memory in `MiB`")
	secureBoot := flag.Bool("secureboot", false, "run OVMF's Secure Boot build (with SMM)")
	tpm := flag.String("tpm", "", "attach a swtpm TPM whose state is kept in `DIR`")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: abvm [--vars FILE] [--watchdog] [--mem MiB] [--secureboot] [--tpm DIR] DISK [DISK...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	o := qemu.Options{Disks: flag.Args(), MemoryMiB: *mem, Watchdog: *watchdog, SecureBoot: *secureBoot, TPMDir: *tpm}
	if err := run(*vars, o); err != nil {
		fmt.Fprintf(os.Stderr, "abvm: %v\n", err)
		os.Exit(1)
	}
}

func run(vars string, o qemu.Options) error {
	if vars == "" {
		vars = o.Disks[0] + ".vars"
	}
	switch _, err := os.Stat(vars); {
	case errors.Is(err, os.ErrNotExist):
		if err := qemu.NewVars(vars); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "abvm: vars file %s (new copy of %s)\n", vars, qemu.DefaultVars)
	case err != nil:
		return err
	default:
		fmt.Fprintf(os.Stderr, "abvm: vars file %s (reused)\n", vars)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	restore, err := rawInput()
	if err != nil {
		return err
	}
	defer restore()

	if o.TPMDir != "" {
		if err := os.MkdirAll(o.TPMDir, 0o755); err != nil {
			return err
		}
	}
	o.VarsFile, o.Echo = vars, os.Stdout
	vm, err := qemu.Start(ctx, o)
	if err != nil {
		return err
	}
	go forwardInput(vm)
	err = vm.Wait()
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "\nabvm: interrupted, VM stopped")
		return nil
	}
	return err
}

// forwardInput copies the terminal's input to the guest's serial port until
// either side goes away.
func forwardInput(vm *qemu.VM) {
	buf := make([]byte, 256)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 && vm.Send(string(buf[:n])) != nil {
			return
		}
		if err != nil {
			return
		}
	}
}

// rawInput makes a terminal on stdin pass keys through one by one without
// echoing them (the guest echoes) and with Enter as "\r", as a serial
// terminal does; ISIG stays on so that ^C still ends abvm. It returns a
// function that restores the terminal. Input that is not a terminal is left
// alone.
func rawInput() (restore func(), err error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}, nil // not a terminal
	}
	t := *old
	t.Lflag &^= unix.ECHO | unix.ICANON
	t.Iflag &^= unix.ICRNL
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, fmt.Errorf("setting up the terminal: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
