// Package slotstore persists abboot's slot state (docs/design.md, Slot state)
// in one of two stores: the attribute bits of the slots' root partitions
// in the GPT (GPT, the default when those partitions exist), or one EFI
// variable under abboot's vendor GUID for layouts with only an ESP (Var).
//
// Both stores save atomically: after a power cut at any point of Save,
// Load returns exactly the old or the new state (the old one being
// ErrNoState before the first Save), never a mix or another error.
// Load never writes, and Save writes nothing when the store already holds
// the state, so a steady-state boot performs zero writes (rule 7).
//
// The package does not decide anything about the state (see slotstate)
// nor what to do when a store is missing or corrupt (rule 8 is the
// caller's): it reports ErrNoState and ErrCorrupt and leaves the choice of
// a default to the caller.
package slotstore

import (
	"errors"
	"fmt"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/slotstate"
)

// Store persists a slotstate.State.
type Store interface {
	// Load returns the saved state. It never writes.
	Load() (slotstate.State, error)
	// Save replaces the saved state atomically: after a power cut at
	// any point, Load returns the old or the new state.
	Save(slotstate.State) error
	// String names the store, as "gpt:/dev/vda" or "efivar:AbbootSlots".
	String() string
}

var (
	// ErrNoState is returned (wrapped) by Load when the store holds no
	// state yet: the variable store before its first Save. The GPT store
	// always holds a state, since every attribute bit pattern is one (all
	// zero means both slots bad).
	ErrNoState = errors.New("no slot state saved yet")
	// ErrCorrupt is returned (wrapped) by Load when the store holds
	// something that is not a slot state: a variable that does not decode
	// (bad magic, version, length, CRC32 or range) or a counted marker on
	// both root partitions.
	ErrCorrupt = errors.New("slot state is corrupt")
)

// Open returns the store for a machine: the GPT store when disk has the
// abboot-root-a and abboot-root-b partitions, else the variable store in
// v. disk "" means there is no such disk: the variable store. A disk that
// cannot be read, or that has one root partition but not the other, is an
// error rather than a silent switch to the other store, which would split
// the state in two.
func Open(disk string, v *efivar.Vars) (Store, error) {
	if disk != "" {
		g, err := NewGPT(disk)
		switch {
		case err == nil:
			return g, nil
		case !errors.Is(err, errNoPartitions):
			return nil, err
		}
	}
	if v == nil {
		return nil, fmt.Errorf("opening slot state store: no root partitions on %q and no EFI variables", disk)
	}
	return NewVar(v), nil
}
