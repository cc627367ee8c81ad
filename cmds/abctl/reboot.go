package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// rebootCmd reboots into the slot the next boot would choose (or, with
// --slot, into that slot, set active first), taking the init's path:
// bootcheck decides and counts the try, then a kexec with the handover on
// the command line, or BootNext and a firmware reboot.
func rebootCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("reboot", flag.ContinueOnError)
	onlyKexec := fs.Bool("kexec", false, "reboot by kexec only")
	onlyFirmware := fs.Bool("firmware", false, "reboot through the firmware only")
	target := fs.String("slot", "", "reboot into this slot (set active first)")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 || *onlyKexec && *onlyFirmware {
		return errors.New("usage: abctl reboot [--kexec|--firmware] [--slot SLOT]")
	}
	s, err := g.open()
	if err != nil {
		return err
	}
	if s.running == "" {
		return errors.New("reboot works on a system abboot booted")
	}
	stored, err := s.store.Load()
	switch {
	case errors.Is(err, slotstore.ErrNoState):
		stored = bootcheck.Rebuild(s.running).State
	case err != nil:
		return fmt.Errorf("reading slot state from %s: %w", s.store, err)
	}
	state := stored
	if *target != "" {
		t, err := slot.Parse(*target)
		if err != nil {
			return err
		}
		if best, ok := state.Best(s.running); !ok || best != t {
			state = state.SetActive(t, slotstate.DefaultTries)
		}
	}
	entries, _ := s.vars.BootEntries()
	env := &handover.Env{ESPDir: s.run.ESPDir, Entries: entries, Load: kexec.Load, Log: event.Default}
	p := env.Reboot(bootcheck.Input{State: state, Running: s.running, KexecAllowed: !*onlyFirmware, FirmwareAllowed: !*onlyKexec})
	if p.D.Action == bootcheck.Rescue {
		return fmt.Errorf("not rebooting: %s", p.D.Reason)
	}
	if p.D.State != stored {
		if err := s.store.Save(p.D.State); err != nil {
			return fmt.Errorf("writing slot state to %s: %w", s.store, err)
		}
	}
	event.Log("reboot", "slot", p.D.Target, "action", p.D.Action, "reason", p.D.Reason)
	if p.D.Action == bootcheck.Kexec {
		err = handover.Kexec()
	} else {
		err = handover.Firmware(s.vars, p.Entry)
	}
	return err
}
