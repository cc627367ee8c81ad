package handover

import (
	"io"
	"testing"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/kexec"
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

func env(load func(string, func(string) string) error, ents map[uint16]*efivar.LoadOption) *Env {
	return &Env{ESPDir: "/efi", Entries: ents, Load: load, Log: event.New(io.Discard)}
}

func TestSettle(t *testing.T) {
	ok := func(string, func(string) string) error { return nil }
	refused := func(string, func(string) string) error { return kexec.ErrRefused }
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
			p = tc.e.Reboot(tc.in)
		} else {
			p = tc.e.Settle(tc.in)
		}
		got := p.D.State.Get(p.D.Target).Tries
		if p.D.Action != tc.action || p.Entry != tc.entry || got != tc.tries || p.D.State.Counted != tc.counted || p.D.Write != (p.D.State != tc.in.State) {
			t.Errorf("%s: %v entry %d tries %d counted %q write %v; want %v entry %d tries %d counted %q",
				tc.name, p.D.Action, p.Entry, got, p.D.State.Counted, p.D.Write, tc.action, tc.entry, tc.tries, tc.counted)
		}
	}
}
