// Package watchdog arms, pets and stops the hardware watchdog around a
// handover (docs/design.md, Lessons): abboot's init arms it with the
// abboot.watchdog timeout right before it executes the OS init or kexecs
// another slot, so that a kernel or OS that hangs before its health check
// is reset and the slot's try is spent; the health check (abctl mark-good)
// later stops it, or leaves it to the OS's own watchdog daemon.
//
// It is a thin layer over u-root's pkg/watchdog and the Linux watchdog API
// (Documentation/watchdog/watchdog-api.rst). What makes a watchdog outlive
// the process that armed it is in drivers/watchdog/watchdog_dev.c,
// watchdog_release: closing /dev/watchdog stops the timer only if the magic
// character 'V' was written first or the driver does not advertise
// WDIOF_MAGICCLOSE; otherwise the kernel logs "watchdog did not stop!",
// pings once and leaves it running with the timeout set. So Arm requires
// WDIOF_MAGICCLOSE and closes without 'V'; Disarm writes 'V'. A kernel
// built with CONFIG_WATCHDOG_NOWAYOUT (or watchdog nowayout=1) never stops
// it: Disarm then leaves it running and the OS must keep petting it.
//
// Across a kexec the timer survives only if the driver leaves the hardware
// running at reboot: drivers that call watchdog_stop_on_reboot are stopped
// by the reboot notifier that kernel_kexec runs (i6300esb, QEMU's watchdog,
// does, and its probe stops the timer again), and a new kernel whose driver
// finds the hardware running feeds it itself until user space opens it
// (watchdog.handle_boot_enabled). The guarantee therefore comes from the
// init in the next UKI, which arms it again before its own exec; until
// then, panic=N is what resets a kexec'd kernel that dies.
//
// It does not run a watchdog daemon and does not handle pretimeouts.
package watchdog

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/u-root/u-root/pkg/watchdog"
	"golang.org/x/sys/unix"
)

// ErrNoDevice means that there is no watchdog: no device node, or a node
// with no driver behind it. The caller skips the watchdog.
var ErrNoDevice = errors.New("no watchdog device")

// MaxTimeout is the longest timeout Arm takes, the limit of abboot.watchdog.
const MaxTimeout = time.Hour

// device is what this package needs of an open watchdog, so that tests can
// check the order of operations without hardware.
type device interface {
	Support() (*unix.WatchdogInfo, error)
	setTimeout(seconds int) error
	Timeout() (time.Duration, error)
	KeepAlive() error
	Close() error      // leaves it running (WDIOF_MAGICCLOSE drivers)
	MagicClose() error // stops it
}

type dev struct{ *watchdog.Watchdog }

// setTimeout is WDIOC_SETTIMEOUT with a C int of seconds. u-root's
// SetTimeout (v0.16.0) passes a pointer to the time.Duration itself, so the
// driver would read the low 32 bits of a count of nanoseconds.
func (d dev) setTimeout(seconds int) error {
	return unix.IoctlSetPointerInt(int(d.Fd()), unix.WDIOC_SETTIMEOUT, seconds)
}

// open opens the watchdog, which starts it; tests replace it.
var open = func(path string) (device, error) {
	w, err := watchdog.Open(path)
	if err != nil {
		return nil, err
	}
	return dev{w}, nil
}

// openDev opens path ("" is /dev/watchdog), mapping a missing device to
// ErrNoDevice. A device that another process holds open (a watchdog
// daemon) fails with EBUSY: /dev/watchdog admits one opener at a time.
func openDev(path string) (device, string, error) {
	if path == "" {
		path = watchdog.Dev
	}
	d, err := open(path)
	if err != nil {
		// devtmpfs creates the node only for a registered driver; on a
		// static /dev, opening a node without a driver fails with ENODEV
		// or ENXIO.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, path, fmt.Errorf("opening %s: %w: %w", path, ErrNoDevice, err)
		}
		return nil, path, fmt.Errorf("opening %s: %w", path, err)
	}
	return d, path, nil
}

// Arm starts the watchdog at path ("" is /dev/watchdog) with the given
// timeout, a whole number of seconds from 1s to MaxTimeout, and closes it
// without the magic character so that it keeps running across the exec
// or kexec that follows. On any error it stops the watchdog again: a
// watchdog left running with the driver's default timeout could reset a
// healthy OS before its health check.
func Arm(path string, timeout time.Duration) error {
	if timeout < time.Second || timeout > MaxTimeout || timeout%time.Second != 0 {
		return fmt.Errorf("arming watchdog: timeout %v: want whole seconds from 1s to %v", timeout, MaxTimeout)
	}
	d, path, err := openDev(path)
	if err != nil {
		return fmt.Errorf("arming watchdog: %w", err)
	}
	if err := arm(d, timeout); err != nil {
		if cerr := d.MagicClose(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stopping it again: %w", cerr))
		}
		return fmt.Errorf("arming watchdog %s: %w", path, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("arming watchdog %s: %w", path, err)
	}
	return nil
}

func arm(d device, timeout time.Duration) error {
	info, err := d.Support()
	if err != nil {
		return fmt.Errorf("WDIOC_GETSUPPORT: %w", err)
	}
	if info.Options&unix.WDIOF_MAGICCLOSE == 0 {
		return fmt.Errorf("driver %q lacks WDIOF_MAGICCLOSE: closing the device would stop it", identity(info))
	}
	if err := d.setTimeout(int(timeout / time.Second)); err != nil {
		return fmt.Errorf("WDIOC_SETTIMEOUT %v: %w", timeout, err)
	}
	// The driver may round the timeout to what the hardware can do; a
	// shorter one than asked for could reset a slow but healthy boot.
	got, err := d.Timeout()
	if err != nil {
		return fmt.Errorf("WDIOC_GETTIMEOUT: %w", err)
	}
	if got < timeout {
		return fmt.Errorf("driver %q set timeout %v, shorter than %v", identity(info), got, timeout)
	}
	if err := d.KeepAlive(); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	return nil
}

func identity(info *unix.WatchdogInfo) string { return unix.ByteSliceToString(info.Identity[:]) }

// Disarm stops the watchdog at path ("" is /dev/watchdog) with the magic
// close. Opening it starts it for a moment if it was stopped, which is
// harmless. With nowayout set in the kernel the watchdog keeps running
// regardless (see the package comment).
func Disarm(path string) error {
	d, path, err := openDev(path)
	if err != nil {
		return fmt.Errorf("disarming watchdog: %w", err)
	}
	if err := d.MagicClose(); err != nil {
		return fmt.Errorf("disarming watchdog %s: %w", path, err)
	}
	return nil
}

// Pet restarts the countdown of the watchdog at path ("" is /dev/watchdog)
// and leaves it running. A stopped watchdog is started by the open, with
// the timeout it had; a driver without WDIOF_MAGICCLOSE is stopped by the
// close instead.
func Pet(path string) error {
	d, path, err := openDev(path)
	if err != nil {
		return fmt.Errorf("petting watchdog: %w", err)
	}
	err = d.KeepAlive()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("petting watchdog %s: %w", path, err)
	}
	return nil
}
