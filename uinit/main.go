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
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/u-root/u-root/pkg/libinit"
	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/console"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/osrelease"
	"github.com/abboot/abboot/pkg/pstore"
	"github.com/abboot/abboot/pkg/runstate"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/watchdog"
)

const (
	efivarsDir = "/sys/firmware/efi/efivars"
	espMount   = "/efi"
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
	event.Default.Since(start)
	libinit.SetEnv()
	for _, c := range namespace {
		if err := c.Create(); err != nil {
			event.Error("mount", err, "what", c)
		}
	}

	// The events also go to the kernel log, where the OS's journal finds
	// them after the switch (journalctl -t abboot) and a crash dump names
	// the slot that was running (pkg/pstore).
	kmsg, err := event.OpenKmsg()
	if err != nil {
		event.Error("kmsg", err)
	} else {
		event.Default.Tee(kmsg)
	}

	modules := loadModules("/lib/modules-load.d")

	cmdline, _ := os.ReadFile("/proc/cmdline")
	params, err := bootparam.Parse(string(cmdline))
	if err != nil {
		event.Error("cmdline", err)
	}
	vars := efivar.Open(efivarsDir)
	// The watchdog driver is a late module: wait for every module before
	// a handover arms the watchdog, or before the OS's init.
	modulesTook := sync.OnceValue(modules.WaitAll)
	b := &boot{
		params:   params,
		vars:     vars,
		sysBlock: "/sys/class/block",
		devDir:   "/dev",
		mountESP: mountESP,
		efivarsReady: func() {
			modules.Wait("efivarfs")
			if err := unix.Mount("efivarfs", efivarsDir, "efivarfs", 0, ""); err != nil && err != unix.EBUSY {
				event.Error("efivarfs", err)
			}
		},
		disksReady: modules.WaitEarly,
		kexecLoad:  kexec.LoadImage,
		start: func(p *handover.Plan) error {
			modulesTook()
			armWatchdog(params.Watchdog)
			event.Log("handover", "slot", p.Decision.Target, "action", p.Decision.Action, "elapsed_ms", time.Since(start).Milliseconds())
			return handover.Start(vars, p)
		},
		replaceFallback: fallback.ReplaceMounted,
		log:             event.Default,
		pstoreDir:       pstore.Dir,
		pstoreReady: func() {
			modules.Wait("efi_pstore")
			if err := pstore.Mount(pstore.Dir); err != nil {
				event.Error("crash", err, "what", "mount")
			}
		},
		bootID:   bootID(),
		version:  osrelease.Read("/etc/os-release")["VERSION_ID"],
		waitDisk: 5 * time.Second,
	}
	// run hands over when the slot to boot is not this one; it returns
	// when this slot boots (Continue), or when nothing can (Rescue).
	st, p := b.run(kernelMS)
	took := modulesTook()
	st.CrashLimit = params.CrashLimit
	if err := runstate.Write(st); err != nil {
		event.Error("runstate", err)
	}
	d := p.Decision
	if d.Action != bootcheck.Continue {
		rescue(d.Reason)
	}
	armWatchdog(params.Watchdog)
	if a := d.State.Get(d.Target); a.Committed() && a.Crashes < params.TestCrash {
		testCrash(d.Target, a.Crashes)
	}
	event.Log("exec", "slot", d.Target, "version", st.Version, "init", params.Init,
		"elapsed_ms", time.Since(start).Milliseconds(), "modules_ms", took.Milliseconds(), "kernel_ms", kernelMS)
	if kmsg != nil {
		// Give the OS back the kernel's rate limit; the rescue shell's
		// events go to the console only.
		event.Default.Tee(nil)
		kmsg.Close()
	}
	if b.newRoot != "" {
		// The OS is on the verity root: take /dev, /proc, /sys, /run and
		// the ESP there, make it / and exec its init.
		if err = moveInto(b.newRoot, st.ESPDir); err == nil {
			// SwitchRoot narrates each step with the log package; its
			// errors are returned and logged.
			log.SetOutput(io.Discard)
			err = mount.SwitchRoot(b.newRoot, params.Init)
		}
	} else {
		err = syscall.Exec(params.Init, []string{params.Init}, os.Environ())
	}
	rescue(fmt.Sprintf("exec %s: %v", params.Init, err))
}

// testCrash is the abboot.test-crash hook: it panics the kernel (sysrq c,
// Documentation/admin-guide/sysrq.rst) as a committed slot's crash would,
// leaving a pstore record that names the slot.
func testCrash(s slot.Slot, crashes int) {
	event.Log("crash", "slot", s, "what", "test-crash", "crashes", crashes)
	if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0); err != nil {
		event.Error("crash", err, "what", "test-crash")
	}
}

// armWatchdog arms the hardware watchdog for the handover when the command
// line asks for it (abboot.watchdog=SECONDS), so that a kernel or OS that
// hangs is reset; a machine without one boots on.
func armWatchdog(seconds int) {
	if seconds <= 0 {
		return
	}
	err := watchdog.Arm("", time.Duration(seconds)*time.Second)
	switch {
	case errors.Is(err, watchdog.ErrNoDevice):
		event.Log("watchdog", "result", "skipped", "err", "no watchdog device")
	case err != nil:
		event.Error("watchdog", err)
	default:
		event.Log("watchdog", "timeout_s", seconds, "result", "armed")
	}
}

// namespace is the part of u-root's libinit namespace that abboot and the
// OS it starts need. libinit.Namespace does more (a copy of /etc, debugfs,
// cgroups), which cost a third of the init's own time under emulation.
var namespace = []libinit.Creator{
	libinit.Dir{Name: "/dev", Mode: 0o755},
	libinit.Mount{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs"},
	libinit.Dir{Name: "/proc", Mode: 0o555},
	libinit.Mount{Source: "proc", Target: "/proc", FSType: "proc"},
	libinit.Dir{Name: "/sys", Mode: 0o555},
	libinit.Mount{Source: "sysfs", Target: "/sys", FSType: "sysfs"},
	libinit.Dir{Name: "/tmp", Mode: 0o1777},
	libinit.Mount{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs"},
	libinit.Dir{Name: "/run", Mode: 0o755},
	libinit.Mount{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Opts: "mode=0755"},
	libinit.Dir{Name: "/dev/pts", Mode: 0o755},
	libinit.Mount{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Opts: "newinstance,ptmxmode=666,gid=5,mode=620"},
	libinit.Symlink{NewPath: "/dev/ptmx", Target: "/dev/pts/ptmx"},
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
	if err := unix.Mount(dev, espMount, "vfat", unix.MS_RDONLY|esp.MountFlags, ""); err != nil {
		return "", fmt.Errorf("mounting ESP %s on %s: %w", dev, espMount, err)
	}
	return espMount, nil
}

// rescue gives the operator a command prompt on the console and never
// returns: programs in the initramfs (abctl, efibootmgr, ls, cat, dmesg,
// gosh) run from it, "reboot" and "poweroff" act directly.
func rescue(reason string) {
	event.Log("rescue", "reason", reason)
	fmt.Println("abboot: rescue shell; the reason is above. Commands: abctl status, efibootmgr -v, dmesg, gosh, reboot, poweroff.")
	con := &console.Console{
		Name: "abboot-rescue", In: os.Stdin, Out: os.Stdout,
		Builtins: map[string]func([]string){
			"reboot":   func([]string) { halt(unix.LINUX_REBOOT_CMD_RESTART) },
			"poweroff": func([]string) { halt(unix.LINUX_REBOOT_CMD_POWER_OFF) },
		},
	}
	for {
		con.Run()
		// The console closed: PID 1 must not exit; wait and try again.
		libinit.WaitOrphans()
		time.Sleep(time.Second)
	}
}

func halt(how int) {
	unix.Sync()
	if err := unix.Reboot(how); err != nil {
		event.Error("rescue", err)
	}
}
