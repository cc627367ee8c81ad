package handover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

var (
	committed = slotstate.Attrs{Priority: 1, Successful: true}
	trial     = slotstate.Attrs{Priority: 2, Tries: 3}
	entries   = map[uint16]*efivar.LoadOption{
		3: {Description: slot.A.EntryName()},
		4: {Description: slot.B.EntryName()},
	}
)

func env(load func(string, []byte, func(string) string) error, ents map[uint16]*efivar.LoadOption) *Env {
	return &Env{ESPDir: "/efi", Entries: ents, Load: load, Log: event.New(io.Discard),
		Read: func(string) ([]byte, error) { return []byte("uki"), nil }}
}

func TestDecide(t *testing.T) {
	ok := func(string, []byte, func(string) string) error { return nil }
	refused := func(string, []byte, func(string) string) error { return kexec.ErrRefused }
	pending := bootcheck.Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}
	for _, tc := range []struct {
		name    string
		e       *Env
		in      bootcheck.Input
		reboot  bool
		action  bootcheck.Action
		entry   uint16
		tries   int
		counted slot.Slot
	}{
		{"kexec staged", env(ok, entries), pending, false, bootcheck.Kexec, 0, 2, ""},
		{"kexec refused: BootNext, counted once", env(refused, entries), pending, false, bootcheck.Firmware, 4, 2, slot.B},
		{"no kexec at all", env(nil, entries), pending, false, bootcheck.Firmware, 4, 2, slot.B},
		{"no entry for the target: stay", env(refused, map[uint16]*efivar.LoadOption{3: entries[3]}), pending, false, bootcheck.Continue, 0, 0, ""},
		{"reboot into the running committed slot by kexec", env(ok, entries), bootcheck.Input{State: slotstate.State{A: committed}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}, true, bootcheck.Kexec, 0, 0, ""},
		{"reboot into the running trial slot by firmware", env(refused, entries), bootcheck.Input{State: slotstate.State{A: committed, B: slotstate.Attrs{Priority: 2, Tries: 2}}, Running: slot.B, KexecAllowed: true, FirmwareAllowed: true}, true, bootcheck.Firmware, 4, 1, slot.B},
	} {
		var p *Plan
		if tc.reboot {
			p = tc.e.DecideReboot(tc.in)
		} else {
			p = tc.e.Decide(tc.in)
		}
		d := p.Decision
		got := d.State.Get(d.Target).Tries
		if d.Action != tc.action || p.Entry != tc.entry || got != tc.tries || d.State.Counted != tc.counted || d.Write != (d.State != tc.in.State) {
			t.Errorf("%s: %v entry %d tries %d counted %q write %v; want %v entry %d tries %d counted %q",
				tc.name, d.Action, p.Entry, got, d.State.Counted, d.Write, tc.action, tc.entry, tc.tries, tc.counted)
		}
	}
}

// store is a Store in memory that fails when err is set.
type store struct {
	saved []slotstate.State
	err   error
}

func (s *store) Save(st slotstate.State) error {
	if s.err != nil {
		return s.err
	}
	s.saved = append(s.saved, st)
	return nil
}

// TestRun: the state is written before each handover is started, a
// handover that fails is retried the other way with the try counted once,
// and a failed write starts no handover.
func TestRun(t *testing.T) {
	ok := func(string, []byte, func(string) string) error { return nil }
	pending := bootcheck.Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}
	counted := slotstate.State{A: committed, B: slotstate.Attrs{Priority: 2, Tries: 2}}
	markedB := counted
	markedB.Counted = slot.B
	for _, tc := range []struct {
		name    string
		in      bootcheck.Input
		reboot  bool
		fail    map[bootcheck.Action]bool // handovers that return
		saveErr error
		started []string         // action:saves-so-far at each Start
		action  bootcheck.Action // of the plan Run returns
		saved   []slotstate.State
	}{
		{"kexec", pending, false, nil, nil, []string{"kexec:1"}, bootcheck.Kexec, []slotstate.State{counted}},
		{"kexec fails: BootNext, counted once", pending, false, map[bootcheck.Action]bool{bootcheck.Kexec: true}, nil,
			[]string{"kexec:1", "firmware:2"}, bootcheck.Firmware, []slotstate.State{counted, markedB}},
		// The try stays spent: the state keeps what the last write counted.
		{"both fail: boot on", pending, false, map[bootcheck.Action]bool{bootcheck.Kexec: true, bootcheck.Firmware: true}, nil,
			[]string{"kexec:1", "firmware:2"}, bootcheck.Continue, []slotstate.State{counted, markedB}},
		{"write fails: no handover", pending, false, nil, errors.New("disk gone"), nil, bootcheck.Rescue, nil},
		{"committed boots on without a write", bootcheck.Input{State: slotstate.State{A: committed}, Running: slot.A}, false, nil, errors.New("disk gone"), nil, bootcheck.Continue, nil},
		{"reboot: kexec fails, BootNext into the running slot", bootcheck.Input{State: slotstate.State{A: committed}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}, true,
			map[bootcheck.Action]bool{bootcheck.Kexec: true}, nil, []string{"kexec:0", "firmware:0"}, bootcheck.Firmware, nil},
	} {
		st := &store{err: tc.saveErr}
		var started []string
		e := env(ok, entries)
		e.Store = st
		e.Start = func(p *Plan) error {
			started = append(started, fmt.Sprintf("%v:%d", p.Decision.Action, len(st.saved)))
			if tc.fail[p.Decision.Action] {
				return errors.New("still here")
			}
			return nil
		}
		var written int
		e.Written = func(*Plan, error) { written++ }
		p := e.Decide(tc.in)
		if tc.reboot {
			p = e.DecideReboot(tc.in)
		}
		p = e.Run(p)
		if p.Decision.Action != tc.action || fmt.Sprint(started) != fmt.Sprint(tc.started) || fmt.Sprint(st.saved) != fmt.Sprint(tc.saved) || written != len(tc.started)+btoi(tc.action != bootcheck.Kexec && tc.action != bootcheck.Firmware) {
			t.Errorf("%s: %v, started %v, saved %v, written %d times; want %v, started %v, saved %v",
				tc.name, p.Decision.Action, started, st.saved, written, tc.action, tc.started, tc.saved)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestVerify: a target whose UKI fails Env.Verify is never handed over to,
// by kexec or BootNext, and is marked bad in a plan that must be written;
// one that passes is staged with the very bytes that were verified.
func TestVerify(t *testing.T) {
	pending := bootcheck.Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}
	refuse := func([]byte) error { return errors.New("image is not signed") }
	for _, tc := range []struct {
		name   string
		verify func([]byte) error
		kexec  bool
		action bootcheck.Action
	}{
		{"refused, kexec possible", refuse, true, bootcheck.Continue},
		{"refused, BootNext only", refuse, false, bootcheck.Continue},
		{"verified", func([]byte) error { return nil }, true, bootcheck.Kexec},
		{"verified, BootNext only", func([]byte) error { return nil }, false, bootcheck.Firmware},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var staged []byte
			load := func(_ string, b []byte, _ func(string) string) error { staged = b; return nil }
			if !tc.kexec {
				load = nil
			}
			e := env(load, entries)
			e.Read = func(string) ([]byte, error) { return []byte("uki of b"), nil }
			var verified []byte
			e.Verify = func(b []byte) error {
				verified = b
				return tc.verify(b)
			}
			p := e.Decide(pending)
			if p.Decision.Action != tc.action {
				t.Fatalf("action %v, want %v", p.Decision.Action, tc.action)
			}
			if string(verified) != "uki of b" {
				t.Errorf("verified %q, want the UKI read", verified)
			}
			if tc.action == bootcheck.Continue {
				if p.Decision.State.B.Priority != 0 || !p.Unsaved || staged != nil || p.Entry != 0 {
					t.Errorf("refused UKI: state %+v unsaved %v staged %q entry %d; want B marked bad, written, nothing staged", p.Decision.State, p.Unsaved, staged, p.Entry)
				}
				return
			}
			if tc.kexec && (string(staged) != "uki of b" || string(p.Image) != "uki of b") {
				t.Errorf("staged %q, plan image %q; want the verified bytes", staged, p.Image)
			}
		})
	}
}

// TestMeasure: a kexec plan carries its UKI hashed for PCR 11
// (Env.Measure) over the bytes that were verified and staged; a BootNext
// plan is not hashed (the firmware and the stub measure it). With one CPU
// the hashing follows the check and a refused UKI is not hashed; with more
// it runs while the check does, on all CPUs but the check's, then on all.
func TestMeasure(t *testing.T) {
	pending := bootcheck.Input{State: slotstate.State{A: committed, B: trial}, Running: slot.A, KexecAllowed: true, FirmwareAllowed: true}
	for _, tc := range []struct {
		name     string
		cpus     int
		refuse   bool
		kexec    bool
		measured bool // Measure is called
	}{
		{"one CPU, kexec", 1, false, true, true},
		{"one CPU, refused", 1, true, true, false},
		{"one CPU, BootNext", 1, false, false, false},
		{"two CPUs, kexec", 2, false, true, true},
		{"two CPUs, refused", 2, true, true, true},
		{"two CPUs, BootNext", 2, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.cpus))
			load := func(string, []byte, func(string) string) error { return nil }
			if !tc.kexec {
				load = nil
			}
			e := env(load, entries)
			e.Read = func(string) ([]byte, error) { return []byte("uki of b"), nil }
			started := make(chan struct{})
			var verifiedFirst bool
			verified := false
			var cpus chan struct{}
			e.Verify = func([]byte) error {
				if tc.cpus > 1 && tc.kexec {
					<-started // the hashing runs meanwhile
					if len(cpus) != tc.cpus-1 {
						t.Errorf("the hashing has %d CPUs during the check, want %d", len(cpus), tc.cpus-1)
					}
				}
				verified = true
				if tc.refuse {
					return errors.New("image is not signed")
				}
				return nil
			}
			var hashed []byte
			want := &measure.Measurement{}
			var cancelled <-chan struct{}
			e.Measure = func(ctx context.Context, b []byte, c chan struct{}) (*measure.Measurement, error) {
				verifiedFirst, cpus, cancelled, hashed = verified, c, ctx.Done(), b
				close(started)
				return want, nil
			}
			p := e.Decide(pending)
			if tc.refuse {
				if tc.measured {
					<-cancelled // the hashing of a refused UKI stops
				}
				if p.Decision.Action == bootcheck.Kexec || p.Measurement != nil {
					t.Errorf("refused UKI: plan %v with measurement %p", p.Decision.Action, p.Measurement)
				}
				return
			}
			if got := hashed != nil; got != tc.measured {
				t.Fatalf("measured %v, want %v", got, tc.measured)
			}
			if !tc.measured {
				if p.Measurement != nil {
					t.Errorf("plan %v carries a measurement", p.Decision.Action)
				}
				return
			}
			if p.Decision.Action != bootcheck.Kexec || p.Measurement != want || string(hashed) != "uki of b" {
				t.Errorf("plan %v, measurement %p of %q; want a kexec with %p of the UKI", p.Decision.Action, p.Measurement, hashed, want)
			}
			if verifiedFirst != (tc.cpus == 1) {
				t.Errorf("with %d CPUs, hashing started after the check: %v", tc.cpus, verifiedFirst)
			}
			if tc.cpus > 1 && len(cpus) != tc.cpus {
				t.Errorf("the hashing has %d CPUs after the check, want %d", len(cpus), tc.cpus)
			}
		})
	}
}
