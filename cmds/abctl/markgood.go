package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/abboot/abboot/pkg/commit"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/watchdog"
)

// markGoodCmd commits a slot (rule 5, pkg/commit) after the OS's own
// health check, and closes or keeps the watchdog. The other slot stays
// bootable as the fallback.
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
	wrote, err := commit.Commit(s.store, s.vars, s.run.ESPDir, target, fallback.ReplaceMounted)
	if err != nil {
		return err
	}
	if *wd == "close" {
		if err := watchdog.Disarm(""); err != nil && !errors.Is(err, watchdog.ErrNoDevice) {
			return fmt.Errorf("closing the watchdog: %w", err)
		}
	}
	fmt.Println(event.Format("commit", "slot", target, "version", s.version(target), "wrote", strings.Join(wrote, ",")))
	return nil
}
