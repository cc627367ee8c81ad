package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/secureboot"
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
	how := "any"
	if *onlyKexec {
		how = "kexec"
	} else if *onlyFirmware {
		how = "firmware"
	}
	s, err := g.open()
	if err != nil {
		return err
	}
	var t slot.Slot
	if *target != "" {
		if t, err = slot.Parse(*target); err != nil {
			return err
		}
	}
	return s.reboot(how, t)
}

// rollbackCmd makes the other slot, which must be bootable, the active one
// and, with --reboot, reboots into it.
func rollbackCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("rollback", flag.ContinueOnError)
	how := fs.String("reboot", "none", "none, kexec, firmware or any")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(args) > 0 || !validReboot(*how) {
		return errors.New("usage: abctl rollback [--reboot=none|kexec|firmware|any]")
	}
	s, err := g.open()
	if err != nil {
		return err
	}
	if s.running == "" {
		return errors.New("rollback works on a system abboot booted")
	}
	other := s.running.Other()
	st, _, err := s.change(false, func(st slotstate.State) slotstate.State {
		if !st.Get(other).Bootable() {
			return st
		}
		return st.SetActive(other, slotstate.DefaultTries)
	})
	if err != nil {
		return err
	}
	if !st.Get(other).Bootable() {
		return fmt.Errorf("slot %s is %s: nothing to roll back to", other, st.Get(other).Condition())
	}
	event.Log("rollback", "from", s.running, "to", other, "condition", st.Get(other).Condition())
	if *how == "none" {
		return nil
	}
	return s.reboot(*how, "")
}

func validReboot(how string) bool {
	return how == "none" || how == "kexec" || how == "firmware" || how == "any"
}

// reboot hands over to the slot the next boot would choose, or to target
// (set active first when it is not that slot), by the init's sequence
// (handover.Env.Run): decide, write the state, hand over. how is kexec,
// firmware or any. It returns only when it did not reboot.
func (s *system) reboot(how string, target slot.Slot) error {
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
	if target != "" {
		if best, ok := state.Best(s.running); !ok || best != target {
			state = state.SetActive(target, slotstate.DefaultTries)
		}
	}
	entries, _ := s.vars.BootEntries()
	env := &handover.Env{
		ESPDir: s.run.ESPDir, Entries: entries, Load: kexec.LoadImage, Store: s.store, Log: event.Default,
		Verify:  secureboot.HandoverCheck(secureboot.ReadFirmware(s.vars)),
		Measure: measure.Prepare,
		Start: func(p *handover.Plan) error {
			event.Log("reboot", "slot", p.Decision.Target, "action", p.Decision.Action, "reason", p.Decision.Reason)
			return handover.Start(s.vars, p)
		},
	}
	p := env.DecideReboot(bootcheck.Input{State: state, Running: s.running, KexecAllowed: how != "firmware", FirmwareAllowed: how != "kexec"})
	switch d := p.Decision; {
	case d.Action == bootcheck.Rescue && d.Reason == bootcheck.ReasonNoHandover:
		return fmt.Errorf("not rebooting into slot %s: neither kexec nor BootNext can be used", s.running)
	case d.Action == bootcheck.Rescue:
		return fmt.Errorf("not rebooting: %s", d.Reason)
	}
	// The state --slot set is not stored yet.
	p.Unsaved = p.Unsaved || state != stored
	// Run returns when no handover happened, or when systemd took the
	// job of shutting down for it (handover.Start).
	p = env.Run(p)
	if a := p.Decision.Action; a == bootcheck.Kexec || a == bootcheck.Firmware {
		return nil
	}
	return fmt.Errorf("not rebooting: %s", p.Decision.Reason)
}
