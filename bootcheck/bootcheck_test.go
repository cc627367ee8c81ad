package bootcheck

import (
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

type attrs = slotstate.Attrs

func at(priority, tries int, successful bool) attrs {
	return attrs{Priority: priority, Tries: tries, Successful: successful}
}

var (
	committed = attrs{Priority: 1, Successful: true}
	trial     = attrs{Priority: 2, Tries: 3}
	lastTry   = attrs{Priority: 2, Tries: 1}
	spent     = attrs{Priority: 2} // trial out of tries
)

// crashed is a committed slot whose last n boots crashed.
func crashed(priority, n int) attrs {
	return attrs{Priority: priority, Successful: true, Crashes: n}
}

// both, fwOnly and kexecOnly allow the handovers they name.
func both(in Input) Input      { in.KexecAllowed, in.FirmwareAllowed = true, true; return in }
func fwOnly(in Input) Input    { in.FirmwareAllowed = true; return in }
func kexecOnly(in Input) Input { in.KexecAllowed = true; return in }

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
	}{
		{
			name: "steady state writes nothing",
			in:   both(Input{State: slotstate.State{A: committed, B: committed}, Running: slot.A}),
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: committed, B: committed}, Reason: ReasonCommitted},
		},
		{
			name: "new slot: count its try and kexec",
			in:   both(Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A}),
			want: Decision{Action: Kexec, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 2, false)}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "kexec handover with the last try: boot it, no decrement, no write",
			in:   both(Input{State: slotstate.State{A: committed, B: spent}, Running: slot.B, Handover: true}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: spent}, Reason: ReasonHandover},
		},
		{
			name: "new slot without kexec: BootNext with the marker in the same write",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: lastTry}, Running: slot.A}),
			want: Decision{Action: Firmware, Target: slot.B, State: slotstate.State{A: committed, B: spent, Counted: slot.B}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "BootNext arrived: consume the marker, no decrement",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: spent, Counted: slot.B}, Running: slot.B}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: spent}, Write: true, Reason: ReasonHandover},
		},
		{
			name: "BootNext ignored: the try is spent, boot the running slot this time",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: at(2, 2, false), Counted: slot.B}, Running: slot.A}),
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: committed, B: at(2, 2, false)}, Write: true, Reason: ReasonBootNextIgnored, Spent: slot.B},
		},
		{
			name: "BootNext ignored: kexec still counts the next try",
			in:   both(Input{State: slotstate.State{A: committed, B: at(2, 2, false), Counted: slot.B}, Running: slot.A}),
			want: Decision{Action: Kexec, Target: slot.B, State: slotstate.State{A: committed, B: lastTry}, Write: true, Reason: ReasonTrial, Spent: slot.B},
		},
		{
			name: "BootNext ignored on the last try: stay on the committed slot, the trial failed",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: spent, Counted: slot.B}, Running: slot.A}),
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: committed, B: slotstate.Bad}, Write: true, Reason: ReasonCommitted, Spent: slot.B},
		},
		{
			name: "BootNext to a committed slot leaves the marker too",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: at(2, 0, true)}, Running: slot.A}),
			want: Decision{Action: Firmware, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 0, true), Counted: slot.B}, Write: true, Reason: ReasonCommitted},
		},
		{
			name: "BootNext to a committed slot arrived",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: at(2, 0, true), Counted: slot.B}, Running: slot.B}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 0, true)}, Write: true, Reason: ReasonCommitted},
		},
		{
			name: "BootNext to a committed slot ignored: no loop",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: at(2, 0, true), Counted: slot.B}, Running: slot.A}),
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: committed, B: at(2, 0, true)}, Write: true, Reason: ReasonBootNextIgnored},
		},
		{
			name: "BootNext ignored by an unbootable slot: try again, there is nothing else",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: slotstate.Bad, Counted: slot.A}, Running: slot.B}),
			want: Decision{Action: Firmware, Target: slot.A, State: slotstate.State{A: committed, B: slotstate.Bad, Counted: slot.A}, Reason: ReasonMarkedBad},
		},
		{
			name: "trial booted by the firmware directly counts its own try",
			in:   both(Input{State: slotstate.State{A: committed, B: trial}, Running: slot.B}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 2, false)}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "rule 3: trial out of tries falls back to the committed slot and is marked bad",
			in:   both(Input{State: slotstate.State{A: committed, B: spent}, Running: slot.B}),
			want: Decision{Action: Kexec, Target: slot.A, State: slotstate.State{A: committed, B: slotstate.Bad}, Write: true, Reason: ReasonOutOfTries},
		},
		{
			name: "slot marked bad, booted from a stale entry",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: slotstate.Bad}, Running: slot.B}),
			want: Decision{Action: Firmware, Target: slot.A, State: slotstate.State{A: committed, B: slotstate.Bad, Counted: slot.A}, Write: true, Reason: ReasonMarkedBad},
		},
		{
			name: "rule 4: root failed, mark bad and fall back",
			in:   both(Input{State: slotstate.State{A: committed, B: at(2, 2, false)}, Running: slot.B, Handover: true, RootFailed: true}),
			want: Decision{Action: Kexec, Target: slot.A, State: slotstate.State{A: committed, B: slotstate.Bad}, Write: true, Reason: ReasonRootFailed},
		},
		{
			name: "rule 4 and 9: root of the only slot failed",
			in:   both(Input{State: slotstate.State{A: committed, B: slotstate.Bad}, Running: slot.A, RootFailed: true}),
			want: Decision{Action: Rescue, State: slotstate.State{A: slotstate.Bad, B: slotstate.Bad}, Write: true, Reason: ReasonNoBootable},
		},
		{
			name: "rule 9: nothing bootable, nothing written",
			in:   both(Input{State: slotstate.State{A: spent, B: slotstate.Bad}, Running: slot.A}),
			want: Decision{Action: Rescue, State: slotstate.State{A: spent, B: slotstate.Bad}, Reason: ReasonNoBootable},
		},
		{
			name: "fallback to a trial slot counts its try",
			in:   fwOnly(Input{State: slotstate.State{A: spent, B: at(1, 2, false)}, Running: slot.A}),
			want: Decision{Action: Firmware, Target: slot.B, State: slotstate.State{A: slotstate.Bad, B: at(1, 1, false), Counted: slot.B}, Write: true, Reason: ReasonOutOfTries},
		},
		{
			name: "tie goes to the running slot",
			in:   both(Input{State: slotstate.State{A: committed, B: at(1, 2, false)}, Running: slot.B}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: at(1, 1, false)}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "no way to hand over: keep booting the running slot",
			in:   Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A},
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: committed, B: trial}, Reason: ReasonNoHandover},
		},
		{
			name: "no way to hand over from a trial: it still counts",
			in:   Input{State: slotstate.State{A: at(3, 0, true), B: lastTry}, Running: slot.B},
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: at(3, 0, true), B: spent}, Write: true, Reason: ReasonNoHandover},
		},
		{
			name: "no way to hand over from an unbootable slot",
			in:   Input{State: slotstate.State{A: committed, B: slotstate.Bad}, Running: slot.B},
			want: Decision{Action: Rescue, State: slotstate.State{A: committed, B: slotstate.Bad}, Reason: ReasonNoHandover},
		},
		{
			name: "crash of the running committed slot is counted",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 0)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: crashed(2, 1)}, Write: true, Reason: ReasonCommitted},
		},
		{
			name: "crashed once, then a clean boot: kept, nothing written",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 1)}, Running: slot.B, CrashLimit: 3}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: crashed(2, 1)}, Reason: ReasonCommitted},
		},
		{
			name: "crash limit reached: the other slot is preferred and booted",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 2)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Kexec, Target: slot.A, State: slotstate.State{A: at(3, 0, true), B: crashed(2, 3)}, Write: true, Reason: ReasonCrashLimit},
		},
		{
			name: "crash limit reached without kexec: BootNext with the marker",
			in:   fwOnly(Input{State: slotstate.State{A: committed, B: crashed(2, 2)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Firmware, Target: slot.A, State: slotstate.State{A: at(3, 0, true), B: crashed(2, 3), Counted: slot.A}, Write: true, Reason: ReasonCrashLimit},
		},
		{
			name: "crash limit reached, found by the other slot's init: it stays",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 2)}, Running: slot.A, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Continue, Target: slot.A, State: slotstate.State{A: at(3, 0, true), B: crashed(2, 3)}, Write: true, Reason: ReasonCrashLimit},
		},
		{
			name: "several crashed boots in one reading",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 0)}, Running: slot.B, Crashed: []slot.Slot{slot.B, slot.B}, CrashLimit: 2}),
			want: Decision{Action: Kexec, Target: slot.A, State: slotstate.State{A: at(3, 0, true), B: crashed(2, 2)}, Write: true, Reason: ReasonCrashLimit},
		},
		{
			name: "crash limit reached, nothing else bootable: never strand the machine",
			in:   both(Input{State: slotstate.State{A: slotstate.Bad, B: crashed(2, 2)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: slotstate.Bad, B: crashed(2, 3)}, Write: true, Reason: ReasonCommitted},
		},
		{
			name: "both slots over the limit: no ping-pong, the count saturates, nothing written",
			in:   both(Input{State: slotstate.State{A: crashed(1, 3), B: crashed(2, 3)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 3}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: crashed(1, 3), B: crashed(2, 3)}, Reason: ReasonCommitted},
		},
		{
			name: "crash limit off: counted, kept",
			in:   both(Input{State: slotstate.State{A: committed, B: crashed(2, 2)}, Running: slot.B, Crashed: []slot.Slot{slot.B}}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: crashed(2, 3)}, Write: true, Reason: ReasonCommitted},
		},
		{
			name: "crash of a trial: its try already counted it",
			in:   both(Input{State: slotstate.State{A: committed, B: at(2, 2, false)}, Running: slot.B, Crashed: []slot.Slot{slot.B}, CrashLimit: 1}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{A: committed, B: lastTry}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "invalid state is rebuilt",
			in:   both(Input{State: slotstate.State{A: at(16, 0, true)}, Running: slot.B}),
			want: Decision{Action: Continue, Target: slot.B, State: slotstate.State{B: at(1, 0, true)}, Write: true, Reason: ReasonRebuilt},
		},
		{
			name: "invalid running slot",
			in:   both(Input{State: slotstate.State{A: committed}, Running: "c"}),
			want: Decision{Action: Rescue, State: slotstate.State{A: committed}, Reason: ReasonBadRunning},
		},
	} {
		if got := Decide(tc.in); got != tc.want {
			t.Errorf("%s:\nDecide(%+v)\n = %+v\nwant %+v", tc.name, tc.in, got, tc.want)
		}
	}
}

// TestKexecRefused checks the protocol Decide documents for a kexec that is
// refused at run time: deciding again from the same Input counts the try
// once in all and adds the marker.
func TestKexecRefused(t *testing.T) {
	in := Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}
	first := Decide(in)
	in.KexecAllowed = false
	second := Decide(in)
	want := slotstate.State{A: committed, B: at(2, 2, false), Counted: slot.B}
	noMarker := second.State
	noMarker.Counted = ""
	if first.Action != Kexec || second.Action != Firmware || second.State != want || noMarker != first.State {
		t.Errorf("kexec refused: first %+v, then %+v; want kexec, then firmware to %+v", first, second, want)
	}
}

func TestRebuild(t *testing.T) {
	for _, s := range slot.All {
		d := Rebuild(s)
		a := d.State.Get(s)
		if d.Action != Continue || d.Target != s || !d.Write || !a.Successful || a.Priority == 0 || d.State.Get(s.Other()).Bootable() {
			t.Errorf("Rebuild(%s) = %+v; want %s committed and booted, the other slot not bootable", s, d, s)
		}
		// The rebuilt state is a steady state: the next boot writes nothing.
		if next := Decide(Input{State: d.State, Running: s, KexecAllowed: true, FirmwareAllowed: true}); next.Write || next.Action != Continue {
			t.Errorf("boot after Rebuild(%s) = %+v; want continue without a write", s, next)
		}
	}
	if d := Rebuild("x"); d.Action != Rescue {
		t.Errorf(`Rebuild("x") = %+v, want rescue`, d)
	}
}

func TestReboot(t *testing.T) {
	trialB := slotstate.State{A: committed, B: at(2, 2, false)}
	for _, tc := range []struct {
		name string
		in   Input
		want Decision
	}{
		{
			name: "committed slot by kexec: no write",
			in:   both(Input{State: slotstate.State{A: committed}, Running: slot.A}),
			want: Decision{Action: Kexec, Target: slot.A, State: slotstate.State{A: committed}, Reason: ReasonCommitted},
		},
		{
			name: "committed slot by BootNext: no marker, no write",
			in:   fwOnly(Input{State: slotstate.State{A: committed}, Running: slot.A}),
			want: Decision{Action: Firmware, Target: slot.A, State: slotstate.State{A: committed}, Reason: ReasonCommitted},
		},
		{
			name: "trial slot by kexec: the next boot's try counted now",
			in:   kexecOnly(Input{State: trialB, Running: slot.B}),
			want: Decision{Action: Kexec, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 1, false)}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "trial slot by BootNext: counted now, marker for the next init",
			in:   fwOnly(Input{State: trialB, Running: slot.B}),
			want: Decision{Action: Firmware, Target: slot.B, State: slotstate.State{A: committed, B: at(2, 1, false), Counted: slot.B}, Write: true, Reason: ReasonTrial},
		},
		{
			name: "pending other slot: the boot decision",
			in:   both(Input{State: slotstate.State{A: committed, B: at(2, 2, false)}, Running: slot.A}),
			want: Decide(both(Input{State: slotstate.State{A: committed, B: at(2, 2, false)}, Running: slot.A})),
		},
		{
			name: "no way to reboot: rescue, nothing written",
			in:   Input{State: trialB, Running: slot.B},
			want: Decision{Action: Rescue, State: trialB, Reason: ReasonNoHandover},
		},
	} {
		if got := Reboot(tc.in); got != tc.want {
			t.Errorf("%s:\nReboot(%+v)\n = %+v\nwant %+v", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Continue: "continue", Kexec: "kexec", Firmware: "firmware", Rescue: "rescue", 9: "action(9)"} {
		if a.String() != want {
			t.Errorf("Action(%d).String() = %q, want %q", int(a), a.String(), want)
		}
	}
}

// FuzzDecide holds, for any input, in range or not: no panic, a valid state
// out, Write exactly when it changed, at most one try counted (a running
// slot whose root failed is marked bad instead), a crash count that rises
// by at most the crashes given for its slot, and a target that fits the
// action.
func FuzzDecide(f *testing.F) {
	f.Add(1, 0, true, 2, 3, false, "", "a", false, false, true, true, 0, 0, "", 3)
	f.Add(1, 0, true, 2, 0, false, "b", "b", false, false, false, true, 0, 0, "", 3)
	f.Add(0, 0, false, 0, 0, false, "", "a", false, true, true, true, 0, 0, "", 3)
	f.Add(16, -1, true, 2, 3, false, "c", "a", true, false, true, false, 0, 0, "", 3)
	f.Add(1, 0, true, 1, 1, false, "", "x", false, false, true, true, 0, 0, "", 3)
	f.Add(8, 0, true, 0, 7, false, "a", "b", false, true, false, true, 0, 0, "", 3) // root fails on a slot already at priority 0
	f.Add(1, 0, true, 2, 0, true, "", "b", false, false, true, true, 0, 2, "bb", 3)
	f.Add(1, 0, true, 2, 0, true, "", "a", false, false, false, true, 3, 3, "b", 3)
	f.Add(1, 0, true, 2, 0, true, "", "a", false, false, false, true, 3, 4, "bx", -1)
	f.Fuzz(func(t *testing.T, pa, ta int, sa bool, pb, tb int, sb bool, counted, running string, handover, rootFailed, kexec, firmware bool, ca, cb int, crashes string, limit int) {
		in := Input{
			State:           slotstate.State{A: attrs{Priority: pa, Tries: ta, Successful: sa, Crashes: ca}, B: attrs{Priority: pb, Tries: tb, Successful: sb, Crashes: cb}, Counted: slot.Slot(counted)},
			Running:         slot.Slot(running),
			Handover:        handover,
			RootFailed:      rootFailed,
			KexecAllowed:    kexec,
			FirmwareAllowed: firmware,
			CrashLimit:      limit,
		}
		for _, c := range crashes {
			in.Crashed = append(in.Crashed, slot.Slot(c))
		}
		d := Decide(in)
		if d.Action == Rescue && d.Reason == ReasonBadRunning {
			return
		}
		if err := d.State.Validate(); err != nil {
			t.Fatalf("Decide(%+v) = %+v: %v", in, d, err)
		}
		if d.Write != (d.State != in.State) {
			t.Fatalf("Decide(%+v) = %+v: Write does not say whether the state changed", in, d)
		}
		switch d.Action {
		case Continue:
			if d.Target != in.Running {
				t.Fatalf("Decide(%+v) = %+v: continue to another slot", in, d)
			}
		case Kexec, Firmware:
			if d.Target != in.Running.Other() || d.Action == Kexec && !kexec || d.Action == Firmware && !firmware {
				t.Fatalf("Decide(%+v) = %+v: bad handover", in, d)
			}
		case Rescue:
			if d.Target != "" {
				t.Fatalf("Decide(%+v) = %+v: rescue with a target", in, d)
			}
		}
		if in.State.Validate() != nil || d.Action == Rescue {
			return
		}
		counts := 0
		for _, s := range slot.All {
			a, b := in.State.Get(s), d.State.Get(s)
			if s == in.Running && in.RootFailed && b == slotstate.Bad {
				continue // marked bad, not counted: its tries drop to 0 in one step
			}
			if a.Priority == b.Priority && b.Tries < a.Tries {
				counts += a.Tries - b.Tries
			}
			if b.Crashes > a.Crashes+strings.Count(crashes, string(s)) {
				t.Fatalf("Decide(%+v) = %+v: slot %s's crashes counted beyond the records", in, d, s)
			}
		}
		if counts > 1 {
			t.Fatalf("Decide(%+v) = %+v: %d tries counted", in, d, counts)
		}
	})
}
