// Command abctl is abboot's device-side CLI: it shows and changes the slot
// state of the running system, or of an image file and a directory of EFI
// variables (--disk, --efivars) for tests and image builders.
//
//	abctl status [--json]                     the slots, entries and this boot
//	abctl set-active SLOT [--tries N]         try SLOT on the next boot
//	abctl mark-bad [--force] [SLOT]           never boot SLOT again
//	abctl mark-good [--watchdog=keep] [SLOT]  commit the slot (rule 5)
//	abctl install [--reboot=HOW] BUNDLE       write a signed bundle to the other slot
//	abctl reboot [--kexec|--firmware] [--slot SLOT]  as the next boot would
//	abctl rollback [--reboot=HOW]             go back to the other slot
//	abctl agent --etcd URLS ...               the fleet agent: update when etcd says
//	abctl fleet status|set-version|sign-channel  the fleet, as etcd holds it
//	abctl secureboot enroll DIR | verify FILE.efi  Secure Boot keys; would the firmware run FILE
package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/runstate"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstore"
)

type globals struct {
	efivars string
	disk    string
	json    bool
}

var commands = map[string]func(g *globals, args []string) error{
	"status":     statusCmd,
	"set-active": setActiveCmd,
	"mark-bad":   markBadCmd,
	"mark-good":  markGoodCmd,
	"reboot":     rebootCmd,
	"rollback":   rollbackCmd,
	"install":    installCmd,
	"agent":      agentCmd,
	"fleet":      fleetCmd,
	"secureboot": secureBootCmd,
}

func usage() string {
	return "usage: abctl [--efivars DIR] [--disk IMG] [--json] " + strings.Join(slices.Sorted(maps.Keys(commands)), "|") + " [args]"
}

func main() {
	var g globals
	fs := flag.NewFlagSet("abctl", flag.ContinueOnError)
	fs.StringVar(&g.efivars, "efivars", "", "directory of EFI variables (default: the live efivarfs)")
	fs.StringVar(&g.disk, "disk", "", "disk or image file (default: the disk abboot booted from)")
	fs.BoolVar(&g.json, "json", false, "JSON output")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage()) }
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(os.Stderr, "abctl: unknown command %q; %s\n", fs.Arg(0), usage())
		os.Exit(2)
	}
	if err := cmd(&g, fs.Args()[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "abctl %s: %v\n", fs.Arg(0), err)
		os.Exit(1)
	}
}

// system is what a command works on: the live machine, or an image file
// and a variables directory.
type system struct {
	vars    *efivar.Vars
	disk    string    // "" for none found (ESP-only layouts still have the variable store)
	running slot.Slot // "" when not known (an image)
	run     runstate.State
	store   slotstore.Store
}

// open finds the system g describes. On a live system the disk is the one
// abboot's init booted from, as its run state says, else the disk holding
// the ESP.
func (g *globals) open() (*system, error) {
	s := &system{vars: efivar.Open(g.efivars), disk: g.disk}
	if g.disk == "" && g.efivars == "" {
		if rs, err := runstate.Read(); err == nil {
			s.run, s.running, s.disk = rs, slot.Slot(rs.Slot), rs.Disk
		}
		if s.disk == "" {
			if e, err := esp.Find("/sys/class/block", "/dev", guid.Zero); err == nil {
				s.disk = e.Disk
			}
		}
	}
	if g.disk != "" {
		if _, err := os.Stat(g.disk); err != nil {
			return nil, err
		}
	}
	var err error
	if s.store, err = slotstore.Open(s.disk, s.vars); err != nil {
		return nil, fmt.Errorf("opening the slot state store: %w", err)
	}
	return s, nil
}

// slotArg parses an optional SLOT argument, defaulting to the running slot.
func (s *system) slotArg(args []string) (slot.Slot, error) {
	switch {
	case len(args) > 1:
		return "", errors.New("want at most one SLOT argument")
	case len(args) == 1:
		return slot.Parse(args[0])
	case s.running != "":
		return s.running, nil
	}
	return "", errors.New("no running slot known here: name the SLOT")
}

// parse parses a command's flags and opens the system it works on.
func (g *globals) parse(fs *flag.FlagSet, args []string) (*system, []string, error) {
	args, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, err
	}
	s, err := g.open()
	return s, args, err
}

// parseArgs parses flags wherever they stand among the arguments, as
// operators type them (abctl set-active b --tries 5), and returns the
// positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
