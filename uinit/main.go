// Command uinit is abboot's init: PID 1 inside every abboot UKI. It sets up
// the basic mounts with u-root's libinit, loads the kernel modules the boot
// needs, learns which slot is running, repairs the firmware's boot entries
// and execs the OS's init. Each step logs one abboot: event on the console.
//
// PID 1 must never exit (the kernel panics) and never panic by accident:
// every failure is logged and the boot goes on where it can; when the OS's
// init cannot be started, the console gets a rescue shell.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/libinit"
	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/osrelease"
	"github.com/abboot/abboot/pkg/runstate"
)

const (
	efivarsDir = "/sys/firmware/efi/efivars"
	espMount   = "/efi"
	rescueSh   = "/bbin/gosh"
)

func main() {
	start := time.Now()
	defer func() {
		// Last line of defence: a bug must end in a rescue shell, not in
		// a kernel panic that hides what happened.
		if r := recover(); r != nil {
			rescue(fmt.Sprintf("init crashed: %v", r))
		}
	}()
	kernelMS := bootTime()
	libinit.SetEnv()
	libinit.Create(libinit.PreNamespace, false)
	// Optional: some mounts (securityfs, efivarfs before its module is
	// in) fail here and are done again below where they matter.
	libinit.Create(libinit.Namespace, true)
	if err := os.MkdirAll("/run", 0o755); err != nil {
		event.Log("mount", "target", "/run", "result", "error", "err", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		event.Log("mount", "target", "/run", "result", "error", "err", err)
	}

	modules := loadModules("/lib/modules-load.d")
	if err := unix.Mount("efivarfs", efivarsDir, "efivarfs", 0, ""); err != nil && err != unix.EBUSY {
		event.Log("efivarfs", "result", "error", "err", err)
	}

	cmdline, _ := os.ReadFile("/proc/cmdline")
	params, err := bootparam.Parse(string(cmdline))
	if err != nil {
		event.Log("cmdline", "result", "error", "err", err)
	}
	b := &boot{
		params:   params,
		vars:     efivar.Open(efivarsDir),
		sysBlock: "/sys/class/block",
		devDir:   "/dev",
		mountESP: mountESP,
		log:      event.Default,
		version:  osrelease.Read("/etc/os-release")["VERSION_ID"],
		waitDisk: 5 * time.Second,
	}
	st := b.run(kernelMS, modules)
	if err := runstate.Write(st); err != nil {
		event.Log("runstate", "result", "error", "err", err)
	}

	init := params.Init
	event.Log("exec", "slot", st.Slot, "version", st.Version, "init", init,
		"elapsed_ms", time.Since(start).Milliseconds(), "modules_ms", modules.Milliseconds(), "kernel_ms", kernelMS)
	err = syscall.Exec(init, []string{init}, os.Environ())
	rescue(fmt.Sprintf("exec %s: %v", init, err))
}

// bootTime is the time since the kernel started, in milliseconds: the
// kernel's own boot time when read at the init's start.
func bootTime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return -1
	}
	return ts.Nano() / int64(time.Millisecond)
}

// mountESP mounts the ESP read-only: a steady-state boot writes nothing,
// and a read-write FAT mount would set the volume's dirty flag.
func mountESP(dev string) (string, error) {
	if err := os.MkdirAll(espMount, 0o755); err != nil {
		return "", err
	}
	if err := unix.Mount(dev, espMount, "vfat", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("mounting ESP %s on %s: %w", dev, espMount, err)
	}
	return espMount, nil
}

// rescue gives the operator a shell on the console and never returns.
func rescue(reason string) {
	event.Log("rescue", "reason", reason)
	fmt.Println("abboot: rescue shell; the reason is above. Type 'exit' to restart it.")
	for {
		if _, err := os.Stat(rescueSh); err != nil {
			event.Log("rescue", "result", "error", "err", err)
			time.Sleep(time.Hour)
			continue
		}
		pid, err := syscall.ForkExec(rescueSh, []string{filepath.Base(rescueSh)}, &syscall.ProcAttr{
			Env:   os.Environ(),
			Files: []uintptr{0, 1, 2},
			Sys:   &syscall.SysProcAttr{Setsid: true, Setctty: true},
		})
		if err != nil {
			event.Log("rescue", "result", "error", "err", err)
			time.Sleep(5 * time.Second)
			continue
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
		libinit.WaitOrphans()
	}
}
