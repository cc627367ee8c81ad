package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// change loads the slot state, applies op, refuses a result with no
// bootable slot unless force, and saves it in one atomic write; it reports
// whether it wrote.
func (s *system) change(force bool, op func(slotstate.State) slotstate.State) (slotstate.State, bool, error) {
	old, err := s.store.Load()
	if errors.Is(err, slotstore.ErrNoState) {
		err = nil
	}
	if err != nil {
		return old, false, fmt.Errorf("reading slot state from %s: %w", s.store, err)
	}
	st := op(old)
	if err := st.Validate(); err != nil {
		return old, false, err
	}
	running := s.running
	if running == "" {
		running = slot.A // any tie-break will do to ask whether one is bootable
	}
	if _, ok := st.Best(running); !ok && !force {
		return old, false, errors.New("this would leave no bootable slot; use --force to do it anyway")
	}
	if st == old {
		return st, false, nil
	}
	if err := s.store.Save(st); err != nil {
		return old, false, fmt.Errorf("writing slot state to %s: %w", s.store, err)
	}
	return st, true, nil
}

func setActiveCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("set-active", flag.ContinueOnError)
	tries := fs.Int("tries", slotstate.DefaultTries, "tries for a slot that is not yet successful")
	s, args, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return errors.New("want one SLOT argument")
	}
	target, err := s.slotArg(args)
	if err != nil {
		return err
	}
	if *tries < 1 || *tries > slotstate.Max {
		return fmt.Errorf("--tries %d: want 1 to %d", *tries, slotstate.Max)
	}
	st, _, err := s.change(false, func(st slotstate.State) slotstate.State { return st.SetActive(target, *tries) })
	if err != nil {
		return err
	}
	fmt.Printf("slot %s: %v\n", target, st.Get(target))
	return nil
}

func markBadCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("mark-bad", flag.ContinueOnError)
	force := fs.Bool("force", false, "even when no bootable slot would be left")
	s, args, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	target, err := s.slotArg(args)
	if err != nil {
		return err
	}
	st, _, err := s.change(*force, func(st slotstate.State) slotstate.State { return st.MarkBad(target) })
	if err != nil {
		return err
	}
	fmt.Printf("slot %s: %v\n", target, st.Get(target))
	return nil
}
