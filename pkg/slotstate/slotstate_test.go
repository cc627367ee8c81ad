package slotstate

import (
	"testing"

	"github.com/abboot/abboot/pkg/slot"
)

func at(priority, tries int, successful bool) Attrs {
	return Attrs{Priority: priority, Tries: tries, Successful: successful}
}

func crashed(priority, crashes int) Attrs {
	return Attrs{Priority: priority, Successful: true, Crashes: crashes}
}

func TestBootable(t *testing.T) {
	for _, tc := range []struct {
		a    Attrs
		want bool
	}{
		{at(0, 3, true), false},
		{at(1, 0, false), false},
		{at(1, 0, true), true},
		{at(15, 1, false), true},
	} {
		if got := tc.a.Bootable(); got != tc.want {
			t.Errorf("%v.Bootable() = %v, want %v", tc.a, got, tc.want)
		}
	}
}

func TestBest(t *testing.T) {
	good, trial := at(1, 0, true), at(2, 3, false)
	for _, tc := range []struct {
		st      State
		running slot.Slot
		want    slot.Slot
		ok      bool
	}{
		{State{A: good, B: trial}, slot.A, slot.B, true},
		{State{A: good, B: at(2, 0, false)}, slot.A, slot.A, true}, // rule 3: out of tries
		{State{A: good, B: good}, slot.B, slot.B, true},            // tie goes to running
		{State{A: good, B: good}, slot.A, slot.A, true},
		{State{A: Bad, B: Bad}, slot.A, "", false},
		{State{A: Bad, B: at(1, 1, false)}, slot.A, slot.B, true},
	} {
		got, ok := tc.st.Best(tc.running)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%+v.Best(%s) = %s, %v; want %s, %v", tc.st, tc.running, got, ok, tc.want, tc.ok)
		}
	}
}

func TestOperations(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  State
		want State
	}{
		{"commit trial", State{A: at(1, 0, true), B: at(2, 2, false)}.Commit(slot.B), State{A: at(1, 0, true), B: at(2, 0, true)}},
		{"commit below", State{A: at(5, 0, true), B: at(2, 1, false)}.Commit(slot.B), State{A: at(5, 0, true), B: at(6, 0, true)}},
		{"commit at max", State{A: at(15, 0, true), B: at(15, 1, false)}.Commit(slot.B), State{A: at(14, 0, true), B: at(15, 0, true)}},
		{"commit bad slot", State{A: at(1, 0, true), B: Bad}.Commit(slot.B), State{A: at(1, 0, true), B: at(2, 0, true)}},
		{"set active", State{A: at(1, 0, true), B: Bad}.SetActive(slot.B, 0), State{A: at(1, 0, true), B: at(2, DefaultTries, false)}},
		{"set active keeps good record", State{A: at(3, 0, true), B: at(1, 0, true)}.SetActive(slot.B, 5), State{A: at(3, 0, true), B: at(4, 0, true)}},
		{"set active caps tries", State{}.SetActive(slot.A, 99), State{A: at(1, Max, false)}},
		{"mark bad", State{A: at(1, 0, true), B: at(2, 1, false), Counted: slot.B}.MarkBad(slot.B), State{A: at(1, 0, true)}},
		{"crash of a committed slot", State{A: at(1, 0, true), B: crashed(2, 1)}.Crashed(slot.B), State{A: at(1, 0, true), B: crashed(2, 2)}},
		{"crash count saturates", State{B: crashed(2, MaxCrashes)}.Crashed(slot.B), State{B: crashed(2, MaxCrashes)}},
		{"crash of a trial is its tries' business", State{A: at(1, 0, true), B: at(2, 1, false)}.Crashed(slot.B), State{A: at(1, 0, true), B: at(2, 1, false)}},
		{"crash of a bad slot", State{A: at(1, 0, true)}.Crashed(slot.B), State{A: at(1, 0, true)}},
		{"crash of no slot", State{A: at(1, 0, true)}.Crashed("c"), State{A: at(1, 0, true)}},
		{"commit clears the crashes", State{A: at(1, 0, true), B: crashed(2, 2)}.Commit(slot.B), State{A: at(1, 0, true), B: at(2, 0, true)}},
		{"commit keeps the other slot's crashes", State{A: crashed(2, 3), B: at(1, 0, true)}.Commit(slot.B), State{A: crashed(2, 3), B: at(3, 0, true)}},
		{"set active clears the crashes", State{A: at(3, 0, true), B: crashed(2, 3)}.SetActive(slot.B, 0), State{A: at(3, 0, true), B: crashed(4, 0)}},
		{"prefer changes only priorities", State{A: crashed(3, 3), B: at(1, 2, false)}.Prefer(slot.B), State{A: crashed(3, 3), B: at(4, 2, false)}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, tc.got, tc.want)
		}
		if err := tc.got.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if (State{A: at(16, 0, false)}).Validate() == nil || (State{Counted: "c"}).Validate() == nil ||
		(State{B: crashed(1, MaxCrashes+1)}).Validate() == nil || (State{B: crashed(1, -1)}).Validate() == nil {
		t.Error("Validate accepted out-of-range state")
	}
}

func TestCondition(t *testing.T) {
	for a, want := range map[Attrs]string{at(0, 3, true): "bad", at(2, 0, true): "committed", at(2, 1, false): "trial", at(2, 0, false): "failed"} {
		if got := a.Condition(); got != want {
			t.Errorf("%v.Condition() = %s, want %s", a, got, want)
		}
	}
}
