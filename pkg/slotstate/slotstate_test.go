package slotstate

import (
	"testing"

	"github.com/abboot/abboot/pkg/slot"
)

func TestBootable(t *testing.T) {
	for _, tc := range []struct {
		a    Attrs
		want bool
	}{
		{Attrs{0, 3, true}, false},
		{Attrs{1, 0, false}, false},
		{Attrs{1, 0, true}, true},
		{Attrs{15, 1, false}, true},
	} {
		if got := tc.a.Bootable(); got != tc.want {
			t.Errorf("%v.Bootable() = %v, want %v", tc.a, got, tc.want)
		}
	}
}

func TestBest(t *testing.T) {
	good, trial := Attrs{1, 0, true}, Attrs{2, 3, false}
	for _, tc := range []struct {
		st      State
		running slot.Slot
		want    slot.Slot
		ok      bool
	}{
		{State{A: good, B: trial}, slot.A, slot.B, true},
		{State{A: good, B: Attrs{2, 0, false}}, slot.A, slot.A, true}, // rule 3: out of tries
		{State{A: good, B: good}, slot.B, slot.B, true},               // tie goes to running
		{State{A: good, B: good}, slot.A, slot.A, true},
		{State{A: Bad, B: Bad}, slot.A, "", false},
		{State{A: Bad, B: Attrs{1, 1, false}}, slot.A, slot.B, true},
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
		{"commit trial", State{A: Attrs{1, 0, true}, B: Attrs{2, 2, false}}.Commit(slot.B), State{A: Attrs{1, 0, true}, B: Attrs{2, 0, true}}},
		{"commit below", State{A: Attrs{5, 0, true}, B: Attrs{2, 1, false}}.Commit(slot.B), State{A: Attrs{5, 0, true}, B: Attrs{6, 0, true}}},
		{"commit at max", State{A: Attrs{15, 0, true}, B: Attrs{15, 1, false}}.Commit(slot.B), State{A: Attrs{14, 0, true}, B: Attrs{15, 0, true}}},
		{"commit bad slot", State{A: Attrs{1, 0, true}, B: Bad}.Commit(slot.B), State{A: Attrs{1, 0, true}, B: Attrs{2, 0, true}}},
		{"set active", State{A: Attrs{1, 0, true}, B: Bad}.SetActive(slot.B, 0), State{A: Attrs{1, 0, true}, B: Attrs{2, DefaultTries, false}}},
		{"set active keeps good record", State{A: Attrs{3, 0, true}, B: Attrs{1, 0, true}}.SetActive(slot.B, 5), State{A: Attrs{3, 0, true}, B: Attrs{4, 0, true}}},
		{"set active caps tries", State{}.SetActive(slot.A, 99), State{A: Attrs{1, Max, false}}},
		{"mark bad", State{A: Attrs{1, 0, true}, B: Attrs{2, 1, false}, Counted: slot.B}.MarkBad(slot.B), State{A: Attrs{1, 0, true}}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, tc.got, tc.want)
		}
		if err := tc.got.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if (State{A: Attrs{16, 0, false}}).Validate() == nil || (State{Counted: "c"}).Validate() == nil {
		t.Error("Validate accepted out-of-range state")
	}
}

func TestCondition(t *testing.T) {
	for a, want := range map[Attrs]string{{0, 3, true}: "bad", {2, 0, true}: "committed", {2, 1, false}: "trial", {2, 0, false}: "failed"} {
		if got := a.Condition(); got != want {
			t.Errorf("%v.Condition() = %s, want %s", a, got, want)
		}
	}
}
