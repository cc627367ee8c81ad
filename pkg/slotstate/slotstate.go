// Package slotstate is abboot's slot-state model (docs/design.md, Slot state):
// per slot a priority 0..15, a number of tries 0..15 and a successful flag,
// with the meaning ChromeOS cgpt and Flatcar gptprio give them, plus the
// marker a BootNext handover leaves (rule 2). It holds the pure operations
// on that state (bootable, best, commit, mark bad, set active); stores that
// persist it and the boot decision live elsewhere. No I/O.
//
// A committed slot also carries the number of its boots in a row that
// crashed (issue 13): the init counts a crash when the kernel's crash
// records (pstore) name the slot, and a commit clears it, so a boot
// without a crash writes nothing (rule 7).
package slotstate

import (
	"fmt"

	"github.com/abboot/abboot/pkg/slot"
)

// Max is the largest priority and number of tries: four bits each in the
// cgpt attribute layout.
const Max = 15

// DefaultTries is the number of tries a newly activated slot gets.
const DefaultTries = 3

// MaxCrashes is the largest crash count: two bits, the spare attribute
// bits the GPT store has left once cgpt and the Discoverable Partitions
// Specification have taken theirs (see slotstore). A count saturates.
const MaxCrashes = 3

// DefaultCrashLimit is the number of crashed boots in a row after which a
// committed slot stops being preferred (abboot.crash-limit, issue 13).
const DefaultCrashLimit = 3

// Attrs is one slot's state.
type Attrs struct {
	Priority   int  `json:"priority"`
	Tries      int  `json:"tries"`
	Successful bool `json:"successful"`
	// Crashes is the number of boots of this committed slot in a row
	// that crashed (the kernel died and left a record naming it), up to
	// MaxCrashes; 0 for a slot that is not committed.
	Crashes int `json:"crashes"`
}

// Bootable reports whether the slot may be chosen: a priority and either a
// good record or tries left.
func (a Attrs) Bootable() bool { return a.Priority > 0 && (a.Successful || a.Tries > 0) }

// Bad is the state rule 4 gives a slot that cannot come up.
var Bad = Attrs{}

// Failed reports a trial that used up its tries: never chosen again (rule
// 3), and marked bad by the next boot that passes it over.
func (a Attrs) Failed() bool { return a.Priority > 0 && !a.Successful && a.Tries == 0 }

// Condition names a slot's state for people: committed (successful),
// trial (tries left), failed (see Failed) or bad (priority 0).
func (a Attrs) Condition() string {
	switch {
	case a.Priority == 0:
		return "bad"
	case a.Successful:
		return "committed"
	case a.Tries > 0:
		return "trial"
	}
	return "failed"
}

// Committed reports a successful slot that has a priority.
func (a Attrs) Committed() bool { return a.Priority > 0 && a.Successful }

func (a Attrs) String() string {
	s := fmt.Sprintf("priority=%d tries=%d successful=%v", a.Priority, a.Tries, a.Successful)
	if a.Crashes > 0 {
		s += fmt.Sprintf(" crashes=%d", a.Crashes)
	}
	return s
}

// State is both slots' state. It is comparable with ==.
type State struct {
	A, B Attrs
	// Counted names the slot a BootNext handover went to; the init that
	// boots next clears it and, when it names the slot that is running,
	// does not count a try again (rule 2). Every BootNext handover sets
	// it, to a committed slot too, so that the next init knows whether
	// the firmware honoured BootNext (see bootcheck). "" when none.
	Counted slot.Slot
}

// Get returns slot s's attributes.
func (st State) Get(s slot.Slot) Attrs {
	if s == slot.B {
		return st.B
	}
	return st.A
}

// With returns st with slot s's attributes replaced.
func (st State) With(s slot.Slot, a Attrs) State {
	if s == slot.B {
		st.B = a
	} else {
		st.A = a
	}
	return st
}

// Validate checks the ranges a store can hold.
func (st State) Validate() error {
	for _, s := range slot.All {
		a := st.Get(s)
		if a.Priority < 0 || a.Priority > Max || a.Tries < 0 || a.Tries > Max {
			return fmt.Errorf("slot %s: %v out of range 0..%d", s, a, Max)
		}
		if a.Crashes < 0 || a.Crashes > MaxCrashes {
			return fmt.Errorf("slot %s: crashes=%d out of range 0..%d", s, a.Crashes, MaxCrashes)
		}
	}
	if st.Counted != "" && st.Counted != slot.A && st.Counted != slot.B {
		return fmt.Errorf("counted marker %q is not a slot", st.Counted)
	}
	return nil
}

// Best returns the bootable slot with the highest priority; a tie goes to
// running. ok is false when no slot is bootable.
func (st State) Best(running slot.Slot) (best slot.Slot, ok bool) {
	for _, s := range []slot.Slot{running, running.Other()} {
		a := st.Get(s)
		if a.Bootable() && (!ok || a.Priority > st.Get(best).Priority) {
			best, ok = s, true
		}
	}
	return best, ok
}

// Prefer returns st with s's priority above the other slot's, lowering
// the other one when s cannot go higher; nothing else changes.
func (st State) Prefer(s slot.Slot) State {
	a, o := st.Get(s), st.Get(s.Other())
	switch {
	case o.Priority >= Max:
		a.Priority, o.Priority = Max, Max-1
	case a.Priority <= o.Priority:
		a.Priority = o.Priority + 1
	}
	return st.With(s, a).With(s.Other(), o)
}

// Commit is rule 5: s is successful, has no tries, no crashes and the
// highest priority; the other slot keeps its state as the fallback.
func (st State) Commit(s slot.Slot) State {
	a := st.Get(s)
	a.Successful, a.Tries, a.Crashes = true, 0, 0
	if a.Priority == 0 {
		a.Priority = 1
	}
	return st.With(s, a).Prefer(s)
}

// SetActive makes s the slot to boot next: the highest priority, no
// crashes (the operator chose it) and, when it is not successful, tries
// for a trial (DefaultTries when tries <= 0).
func (st State) SetActive(s slot.Slot, tries int) State {
	if tries <= 0 {
		tries = DefaultTries
	}
	a := st.Get(s)
	a.Crashes = 0
	if !a.Successful {
		a.Tries = min(tries, Max)
	}
	if a.Priority == 0 {
		a.Priority = 1
	}
	return st.With(s, a).Prefer(s)
}

// Crashed returns st with one more crash counted for s when s is
// committed, saturating at MaxCrashes. A slot on trial has its tries to
// count its failed boots, and a bad one is not booted: their crashes are
// not counted.
func (st State) Crashed(s slot.Slot) State {
	if s != slot.A && s != slot.B {
		return st
	}
	a := st.Get(s)
	if a.Committed() && a.Crashes < MaxCrashes {
		a.Crashes++
	}
	return st.With(s, a)
}

// MarkBad is rule 4: s is never chosen again until reinstalled or set
// active.
func (st State) MarkBad(s slot.Slot) State {
	st = st.With(s, Bad)
	if st.Counted == s {
		st.Counted = ""
	}
	return st
}
