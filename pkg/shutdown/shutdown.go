// Package shutdown asks systemd, when it is PID 1, for a clean kexec or
// reboot: it starts kexec.target or reboot.target (systemd.special(7)), so
// the services stop, the journal is flushed and the file systems are
// unmounted before systemd-shutdown replaces the kernel (kexec -e) or
// resets the machine. It talks to the service manager on its private
// D-Bus socket (/run/systemd/private, what systemctl uses as root), so no
// D-Bus daemon is needed.
//
// It neither loads the kernel to kexec nor sets BootNext: the caller stages
// the handover first (pkg/handover), so that a refused kexec turns into a
// BootNext reboot before anything stops. Where the init is not systemd (the
// demo OS, the rescue shell) the caller reboots directly.
package shutdown

import (
	"context"
	"fmt"
	"os"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// runDir is where sd_booted(3) looks: systemd creates /run/systemd/system
// early when it is the service manager of the machine.
var runDir = "/run/systemd/system"

// Systemd reports whether systemd is the running system's service manager
// (sd_booted(3)).
func Systemd() bool {
	fi, err := os.Lstat(runDir)
	return err == nil && fi.IsDir()
}

// Target is a shutdown target systemd can be asked for.
type Target string

const (
	// Kexec stops the system and boots the kernel loaded with
	// kexec_file_load(2) (systemd-kexec.service).
	Kexec Target = "kexec.target"
	// Reboot stops the system and resets the machine; the firmware then
	// honours BootNext (systemd-reboot.service).
	Reboot Target = "reboot.target"
)

// Start queues the target's start job in the mode systemctl uses for
// kexec and reboot ("replace-irreversibly": no later job can cancel it) and
// returns once systemd has accepted it; the shutdown then runs without the
// caller.
func Start(ctx context.Context, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connecting to systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.StartUnitContext(ctx, string(t), "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("asking systemd for %s: %w", t, err)
	}
	return nil
}
