// Package bootcheck is abboot's slot decision: given the slot state as
// loaded from the store and what the init knows about the running boot, it
// says which slot to boot, how to get there, and which state to write
// first (docs/design.md, Rules 1-4, 7-9, and the crash limit of issue 13).
// abboot's init (PID 1 in every UKI)
// calls Decide on every boot.
//
// The package is pure: no I/O, no clock, no randomness. It does not read or
// write the state store, set BootNext, kexec, arm a watchdog or log; the
// init does, in this order: write Decision.State when Decision.Write is
// set, then act. When that write fails, acting on it would leave a try
// uncounted (rule 2) and could loop on a broken slot: the init then only
// boots the running slot if it is committed (the decision is Continue and
// the slot is committed in Input.State), and rescues otherwise.
//
// The decision is explored exhaustively against an adversarial model of the
// firmware, the power and the kernels in model_test.go.
package bootcheck

import (
	"fmt"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// Action is what the init does once Decision.State is written.
type Action int

// The actions.
const (
	// Continue boots the running slot's OS (Target is the running slot).
	Continue Action = iota
	// Kexec hands over to Target by kexec of its UKI, with
	// abboot.handover=Target appended to its command line.
	Kexec
	// Firmware hands over to Target by BootNext and a reboot.
	Firmware
	// Rescue gives the operator a shell: no slot can be booted.
	Rescue
)

func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case Kexec:
		return "kexec"
	case Firmware:
		return "firmware"
	case Rescue:
		return "rescue"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Reasons, the value of reason= in the init's event=select line.
const (
	ReasonCommitted       = "committed"        // target is a successful slot
	ReasonTrial           = "trial"            // target is on trial; this decision counted its try
	ReasonHandover        = "handover"         // running slot on trial, its try counted by the handover that started it
	ReasonOutOfTries      = "out-of-tries"     // running slot on trial has no tries left
	ReasonMarkedBad       = "marked-bad"       // running slot has priority 0
	ReasonRootFailed      = "root-failed"      // running slot cannot come up (rule 4)
	ReasonNoHandover      = "no-handover"      // the best slot is the other one, but neither kexec nor BootNext can be used
	ReasonBootNextIgnored = "bootnext-ignored" // the last BootNext handover did not arrive; boot the running slot this time
	ReasonNoBootable      = "no-bootable-slot" // rule 9
	ReasonRebuilt         = "state-rebuilt"    // the state was unreadable or invalid (rule 8)
	ReasonBadRunning      = "invalid-running"  // Input.Running is not a slot
	ReasonCrashLimit      = "crash-limit"      // the committed slot crashed on CrashLimit boots in a row: the other one is preferred now
)

// Input is what the init knows when it decides.
type Input struct {
	// State is the slot state as loaded from the store.
	State slotstate.State
	// Running is the slot whose UKI (and so whose init) is running.
	Running slot.Slot
	// Handover is set when this kernel was started by a kexec handover
	// that already counted this try (abboot.handover=Running on the
	// command line).
	Handover bool
	// RootFailed is set when the running slot cannot come up: its root
	// is missing, its verity hash does not match or mounting fails.
	RootFailed bool
	// KexecAllowed is false when abboot.kexec=0 or kexec was refused
	// earlier in this boot.
	KexecAllowed bool
	// FirmwareAllowed is false when BootNext cannot be set (no EFI
	// variables, or the write failed earlier in this boot).
	FirmwareAllowed bool
	// Crashed names the slot of each crashed boot that the kernel's
	// crash records tell of (pkg/pstore), one entry per boot. The init
	// reads the records and removes them before it decides, so a power
	// cut may lose a crash but never lets one be counted twice.
	Crashed []slot.Slot
	// CrashLimit is K: a committed slot whose last K boots crashed stops
	// being preferred while the other slot is bootable
	// (abboot.crash-limit, default slotstate.DefaultCrashLimit). 0
	// disables the limit; crashes are still counted.
	CrashLimit int
}

// Decision is what the init does.
type Decision struct {
	Action Action
	// Target is the slot to boot; "" for Rescue.
	Target slot.Slot
	// State is the state to write before acting. Write reports whether
	// it differs from Input.State; when it does not, write nothing
	// (rule 7).
	State slotstate.State
	Write bool
	// Reason is short and stable, for the select (or rescue) event.
	Reason string
	// Spent names the slot whose try a BootNext handover counted although
	// the firmware booted the other slot (it ignored BootNext, or the
	// power failed before the reboot); "" when none. The try stays spent.
	Spent slot.Slot
}

// Decide is the slot decision (docs/design.md, Rules 1-4, 7, 9).
//
// The running slot's try was already counted when Input.Handover is set or
// the state's BootNext marker (State.Counted) names it; the marker is then
// cleared and the slot is not decremented again, and it may run although
// its counted try left it at tries 0.
//
// When the best slot is the running one, the running slot is decremented
// unless it is successful or its try was already counted, and booted. When
// it is the other slot, that slot is decremented unless successful and the
// decision hands over by kexec if allowed, else by BootNext. A BootNext
// handover leaves the marker naming its target in the same write, whether
// or not it counted a try, so that the next init knows whether it arrived.
// When neither is allowed the running slot is booted if it is bootable.
//
// A marker naming the other slot means the last BootNext handover did not
// arrive: the firmware ignored BootNext, or the power failed before the
// reboot. The marker is cleared, and a try it counted stays spent
// (Decision.Spent): refunding it would let a firmware that ignores BootNext
// loop forever between the running slot and a handover that never happens.
// For the same reason, such a boot does not hand over by BootNext again: it
// boots the running slot if that is bootable (reason bootnext-ignored), so
// a firmware that always ignores BootNext costs one extra boot per boot,
// never a loop. Kexec, which does not depend on the firmware, is still
// used when allowed.
//
// When kexec is refused at run time, call Decide again with the same Input
// and KexecAllowed false: the State it returns is computed from the same
// Input.State, so writing it over the first decision's state counts the try
// once in all.
//
// A failed trial (tries 0, not successful, priority above 0) that the
// decision passes over is marked bad in the same write (rule 3): the boot
// that ends a trial writes once, and the boots after it see a bad slot and
// write nothing (rule 7).
//
// Crashes (issue 13): each entry of Input.Crashed counts one crash of its
// slot when that slot is committed (slotstate.State.Crashed), in the same
// write as the rest of the decision; a commit clears the count. When the
// best slot is committed and has crashed CrashLimit times in a row, and
// the other slot is bootable and not itself over the limit, the other slot
// gets the higher priority (slotstate.State.Prefer) and is booted, with
// reason crash-limit: the state itself then says which slot is preferred,
// for every later boot, abctl and cgpt alike. With no other slot to boot,
// the crashing slot is still booted: a machine that crashes now and then
// is better than one stranded in the rescue shell. A boot with no crash
// record writes nothing, whatever the count (rule 7).
//
// When the running slot's root fails after a Continue, call Decide again
// with State set to the state just written, Handover and the allowed
// handovers as before, Crashed empty (its crashes are in the state just
// written) and RootFailed set: the running slot is marked bad (rule 4) and
// the other slot selected, or Rescue when it is not bootable.
//
// An invalid State (out of range, as no store should hold) is treated as an
// unreadable one: see Rebuild.
func Decide(in Input) Decision {
	run := in.Running
	if run != slot.A && run != slot.B {
		return Decision{Action: Rescue, State: in.State, Reason: ReasonBadRunning}
	}
	if in.State.Validate() != nil {
		return Rebuild(run)
	}
	other := run.Other()
	st := in.State
	var d Decision
	counted := in.Handover || st.Counted == run
	bootNextFailed := st.Counted == other
	if bootNextFailed && !st.Get(other).Successful {
		d.Spent = other
	}
	st.Counted = ""
	for _, s := range in.Crashed {
		st = st.Crashed(s)
	}
	var passed string // why the running slot is passed over, if it is
	if in.RootFailed {
		st = st.MarkBad(run)
		counted = false
		passed = ReasonRootFailed
	}
	// A counted try belongs to this boot: choose as if it were still
	// there, so that a trial started with its last try runs.
	eff := st
	if a := st.Get(run); counted && !a.Successful {
		a.Tries++
		eff = eff.With(run, a)
	}
	runOK := eff.Get(run).Bootable()
	if passed == "" && !runOK {
		passed = ReasonOutOfTries
		if st.Get(run).Priority == 0 {
			passed = ReasonMarkedBad
		}
	}
	best, limited, ok := Preferred(eff, run, in.CrashLimit)
	if limited {
		st, eff = st.Prefer(best), eff.Prefer(best)
		if passed == "" && best != run {
			passed = ReasonCrashLimit
		}
	}
	switch {
	case !ok:
		d.Action, d.Reason = Rescue, ReasonNoBootable
	case best == run:
		d.Action, d.Target = Continue, run
		st, d.Reason = count(st, run, counted)
	case in.KexecAllowed || in.FirmwareAllowed && !(bootNextFailed && runOK):
		d.Action, d.Target = Firmware, best
		if in.KexecAllowed {
			d.Action = Kexec
		}
		st, d.Reason = count(st, best, false)
		if d.Action == Firmware {
			st.Counted = best
		}
		if passed != "" {
			d.Reason = passed
		}
	case runOK:
		// Rule 1: no way to hand over (BootNext just failed, or
		// neither kexec nor BootNext can be used): keep booting the
		// running slot.
		d.Action, d.Target = Continue, run
		st, _ = count(st, run, counted)
		d.Reason = ReasonNoHandover
		if bootNextFailed {
			d.Reason = ReasonBootNextIgnored
		}
	default:
		d.Action, d.Reason = Rescue, ReasonNoHandover
	}
	if limited && d.Target == best {
		d.Reason = ReasonCrashLimit
	}
	// A failed trial passed over is marked bad. The running slot's try
	// counted for this boot shows in eff, not in st, so a trial started
	// with its last try is never marked here.
	for _, s := range slot.All {
		if s != d.Target && d.Action != Rescue && st.Get(s).Failed() && !eff.Get(s).Bootable() {
			st = st.MarkBad(s)
		}
	}
	d.State = st
	d.Write = st != in.State
	return d
}

// Reboot is Decide for a reboot asked for on a running system (abctl
// reboot, a fleet agent). When Decide would keep the running slot, the
// reboot hands over to that slot too: by kexec when allowed, else by
// BootNext, whose marker the decision sets when the slot is on trial, so
// that the try Decide counted now is not counted again by the next init
// (rule 2). A committed slot gets no marker: its reboot writes nothing
// (rule 7). With neither way allowed the decision is Rescue, which a
// running system takes as "do not reboot".
func Reboot(in Input) Decision {
	d := Decide(in)
	if d.Action != Continue {
		return d
	}
	switch {
	case in.KexecAllowed:
		d.Action = Kexec
	case in.FirmwareAllowed:
		d.Action = Firmware
		if !d.State.Get(d.Target).Successful {
			d.State.Counted = d.Target
		}
	default:
		return Decision{Action: Rescue, State: in.State, Reason: ReasonNoHandover}
	}
	d.Write = d.State != in.State
	return d
}

// Preferred is the slot Decide boots given st (tries already counted): the
// best bootable slot (slotstate.State.Best), unless it is Crashing and the
// other slot is bootable and not; then the other one, and limited is set.
// ok is false when no slot is bootable.
func Preferred(st slotstate.State, running slot.Slot, limit int) (best slot.Slot, limited, ok bool) {
	best, ok = st.Best(running)
	if o := best.Other(); ok && Crashing(st.Get(best), limit) && st.Get(o).Bootable() && !Crashing(st.Get(o), limit) {
		return o, true, true
	}
	return best, false, ok
}

// Crashing reports whether a is a committed slot whose last limit boots
// crashed (abboot.crash-limit; 0 disables it).
func Crashing(a slotstate.Attrs, limit int) bool {
	return limit > 0 && a.Committed() && a.Crashes >= limit
}

// count returns st with slot s's try counted, unless it is successful or
// its try was already counted, and the reason to boot it.
func count(st slotstate.State, s slot.Slot, counted bool) (slotstate.State, string) {
	a := st.Get(s)
	switch {
	case a.Successful:
		return st, ReasonCommitted
	case counted:
		return st, ReasonHandover
	}
	a.Tries--
	return st.With(s, a), ReasonTrial
}

// Rebuild is rule 8 for a state store that cannot be read: boot the
// running slot and write a state in which it is the committed one. The
// other slot's state is unknown (it may be half installed), so it is
// written as bad: priority 0, not booted again until abctl set-active or
// an install gives it a priority.
func Rebuild(running slot.Slot) Decision {
	if running != slot.A && running != slot.B {
		return Decision{Action: Rescue, Reason: ReasonBadRunning}
	}
	return Decision{
		Action: Continue,
		Target: running,
		State:  slotstate.State{}.Commit(running),
		Write:  true,
		Reason: ReasonRebuilt,
	}
}
