package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/watchdog"
)

// markGoodCmd commits a slot (rule 5), after the OS's own health check:
// the slot becomes successful with the highest priority, its entry goes
// first in BootOrder and the fallback copy becomes its UKI. Every step
// writes only when something changes, so committing a committed slot
// writes nothing. The other slot stays bootable as the fallback.
func markGoodCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("mark-good", flag.ContinueOnError)
	wd := fs.String("watchdog", "close", "close: stop the watchdog abboot's init armed; keep: leave it running for the OS's watchdog daemon")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *wd != "close" && *wd != "keep" {
		return fmt.Errorf("--watchdog %q: want close or keep", *wd)
	}
	s, err := g.open()
	if err != nil {
		return err
	}
	target, err := s.slotArg(args)
	if err != nil {
		return err
	}
	var wrote []string
	if _, changed, err := s.change(false, func(st slotstate.State) slotstate.State { return st.Commit(target) }); err != nil {
		return err
	} else if changed {
		wrote = append(wrote, "state")
	}
	entries, err := s.vars.BootEntries()
	if entries == nil {
		return fmt.Errorf("reading boot entries: %w", err)
	}
	if moved, err := bootentry.PutFirst(s.vars, entries, target); err != nil {
		return err
	} else if moved {
		wrote = append(wrote, "BootOrder")
	}
	if dir := s.run.ESPDir; dir != "" {
		replaced, err := fallback.ReplaceMounted(dir, target)
		if err != nil {
			return err
		}
		if replaced {
			wrote = append(wrote, "fallback")
		}
	}
	if *wd == "close" {
		if err := watchdog.Disarm(""); err != nil && !errors.Is(err, watchdog.ErrNoDevice) {
			return fmt.Errorf("closing the watchdog: %w", err)
		}
	}
	fmt.Println(event.Format("commit", "slot", target, "version", s.version(target), "wrote", strings.Join(wrote, ",")))
	return nil
}
