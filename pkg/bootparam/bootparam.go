// Package bootparam parses abboot's kernel command line parameters (see
// docs/design.md, Interfaces) and edits a command line for a kexec handover. It
// is pure: it never reads /proc/cmdline itself.
package bootparam

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/abboot/abboot/pkg/slotstate"
)

// Params are the abboot parameters of one command line.
type Params struct {
	RootHash string // abboot.roothash: hex verity root hash; "" for ESP-only layouts
	Handover string // abboot.handover: slot whose try the previous selector counted
	NoKexec  bool   // abboot.kexec=0: hand over with BootNext and a reboot only
	Watchdog int    // abboot.watchdog: seconds to arm the hardware watchdog for; 0 = off
	Init     string // abboot.init: the OS init to exec; default /sbin/init
	// VerityMode is what dm-verity does on a block that does not match
	// (abboot.verity=panic|restart|eio|ignore), as the target's option:
	// panic_on_corruption (the default), restart_on_corruption, "" (I/O
	// error) or ignore_corruption. Panic is the default because a panic
	// leaves a crash record in pstore that names the slot (issue 13): the
	// next boot counts it, and a slot whose root keeps failing is left.
	// A restart leaves none: the kernel dumps its log only on an oops or
	// a panic (kmsg_dump's default max_reason, KMSG_DUMP_OOPS).
	VerityMode string
	Panic      int // panic: seconds the kernel waits before rebooting on a panic
	// CrashLimit is abboot.crash-limit: after this many crashed boots in
	// a row a committed slot is no longer preferred (bootcheck); 0 turns
	// the limit off. At most slotstate.MaxCrashes.
	CrashLimit int
	// TestCrash is abboot.test-crash, a test hook: the init panics the
	// kernel just before it starts the OS while the running slot is
	// committed and its crash count is below this, so a test gets a
	// committed slot that crashes a known number of times in a row. 0
	// (the default) never.
	TestCrash int
}

// DefaultInit is the OS init executed when abboot.init is absent.
const DefaultInit = "/sbin/init"

// Parse reads the parameters from a kernel command line. Unknown parameters
// are ignored; a malformed abboot parameter is an error, so that a typo in a
// signed command line is seen at once rather than silently defaulted.
func Parse(cmdline string) (Params, error) {
	p := Params{Init: DefaultInit, VerityMode: verityModes["panic"], CrashLimit: slotstate.DefaultCrashLimit}
	for _, f := range Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		var err error
		switch k {
		case "abboot.roothash":
			p.RootHash, err = hexParam(v)
		case "abboot.handover":
			p.Handover = v
			if v != "a" && v != "b" {
				err = fmt.Errorf("want a or b")
			}
		case "abboot.kexec":
			var on bool
			on, err = strconv.ParseBool(v)
			p.NoKexec = !on
		case "abboot.watchdog":
			p.Watchdog, err = seconds(v)
		case "abboot.init":
			p.Init = v
			if !strings.HasPrefix(v, "/") {
				err = fmt.Errorf("want an absolute path")
			}
		case "abboot.verity":
			var ok bool
			if p.VerityMode, ok = verityModes[v]; !ok {
				err = fmt.Errorf("want panic, restart, eio or ignore")
			}
		case "abboot.crash-limit":
			p.CrashLimit, err = crashes(v)
		case "abboot.test-crash":
			p.TestCrash, err = crashes(v)
		case "panic":
			// The kernel accepts negative values (reboot at once); abboot only
			// reads it, so take any integer.
			p.Panic, err = strconv.Atoi(v)
		}
		if err != nil {
			return p, fmt.Errorf("kernel parameter %q: %w", f, err)
		}
	}
	return p, nil
}

// verityModes maps abboot.verity values to dm-verity's options
// (Documentation/admin-guide/device-mapper/verity.rst).
var verityModes = map[string]string{
	"restart": "restart_on_corruption",
	"panic":   "panic_on_corruption",
	"eio":     "",
	"ignore":  "ignore_corruption",
}

func hexParam(v string) (string, error) {
	if len(v) < 64 || len(v)%2 != 0 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
		return "", fmt.Errorf("want an even number (at least 64) of hex digits")
	}
	return strings.ToLower(v), nil
}

func crashes(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > slotstate.MaxCrashes {
		return 0, fmt.Errorf("want a number of crashes from 0 to %d", slotstate.MaxCrashes)
	}
	return n, nil
}

func seconds(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 3600 {
		return 0, fmt.Errorf("want seconds from 0 to 3600")
	}
	return n, nil
}

// Fields splits a command line the way the kernel does: on spaces, with
// double quotes protecting spaces inside a value (the quotes are removed).
func Fields(cmdline string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// WithHandover returns cmdline with abboot.handover=slot, replacing any
// handover marker already present, for the kernel started by kexec.
func WithHandover(cmdline, slot string) string {
	var kept []string
	for _, f := range strings.Fields(strings.TrimRight(cmdline, "\x00")) {
		if !strings.HasPrefix(f, "abboot.handover=") {
			kept = append(kept, f)
		}
	}
	return strings.Join(append(kept, "abboot.handover="+slot), " ")
}
