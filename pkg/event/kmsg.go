package event

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Kmsg writes event lines into the kernel's log buffer through /dev/kmsg
// (Documentation/ABI/testing/dev-kmsg), so that the OS's journal has the
// init's events after the switch: journald reads the buffer from its start
// when it starts. Each line becomes one record with priority <14>
// (facility user, level info): for a facility other than kern, journald
// takes the syslog identifier from the text (SYSLOG_IDENTIFIER=abboot, so
// `journalctl -t abboot` finds them; `-k` does too), and level info stays
// off a console whose loglevel is below 7, which already has the line.
//
// The kernel rate-limits writes to /dev/kmsg to a burst of 10 records
// (printk.devkmsg=ratelimit, the default), fewer than an init writes, so
// OpenKmsg turns the limit off and Close restores it.
type Kmsg struct {
	f             *os.File
	sysctl, limit string // the printk_devkmsg file and its value before
}

// OpenKmsg opens /dev/kmsg for writing.
func OpenKmsg() (*Kmsg, error) {
	return openKmsg("/dev/kmsg", "/proc/sys/kernel/printk_devkmsg")
}

func openKmsg(dev, sysctl string) (*Kmsg, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dev, err)
	}
	k := &Kmsg{f: f}
	// printk.devkmsg= on the command line locks the setting; then the
	// write fails and the limit stays.
	if b, err := os.ReadFile(sysctl); err == nil && strings.TrimSpace(string(b)) == "ratelimit" {
		if os.WriteFile(sysctl, []byte("on\n"), 0o644) == nil {
			k.sysctl, k.limit = sysctl, "ratelimit"
		}
	}
	return k, nil
}

// Write writes each line of p as one record.
func (k *Kmsg) Write(p []byte) (int, error) {
	for _, l := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		if _, err := k.f.Write(append([]byte("<14>"), l...)); err != nil {
			return 0, fmt.Errorf("writing to the kernel log: %w", err)
		}
	}
	return len(p), nil
}

// Close restores the rate limit and closes /dev/kmsg.
func (k *Kmsg) Close() error {
	var err error
	if k.sysctl != "" {
		err = os.WriteFile(k.sysctl, []byte(k.limit+"\n"), 0o644)
	}
	return errors.Join(err, k.f.Close())
}
