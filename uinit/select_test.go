package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// pending returns a rig whose first boot has run (A committed, entries
// made) and whose slot B was then set active, as `abctl set-active b`
// does.
func pending(t *testing.T, files map[string]string) *rig {
	t.Helper()
	r := newRig(t, files, false)
	r.boot("")
	store := slotstore.NewVar(efivar.Open(r.vars))
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(st.SetActive(slot.B, 3)); err != nil {
		t.Fatal(err)
	}
	a, _ := entryOf(t, r, slot.A)
	r.setBootCurrent(a)
	return r
}

func (r *rig) state() slotstate.State {
	r.t.Helper()
	st, err := slotstore.NewVar(efivar.Open(r.vars)).Load()
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

func TestTrialKexec(t *testing.T) {
	r := pending(t, both)
	var loaded, cmdline string
	_, sel, lines := r.bootSel("", func(p string, _ []byte, edit func(string) string) error {
		loaded, cmdline = p, edit("console=ttyS0 panic=10")
		return nil
	})
	if sel.Decision.Action != bootcheck.Kexec || sel.Decision.Target != slot.B {
		t.Fatalf("decision %+v, want kexec to b", sel.Decision)
	}
	if loaded != filepath.Join(r.esp, "EFI/abboot/b.efi") || cmdline != "console=ttyS0 panic=10 abboot.handover=b" {
		t.Errorf("staged %s with %q", loaded, cmdline)
	}
	if got := r.state().B; got.Tries != 2 {
		t.Errorf("B after the handover decision: %v, want tries 2", got)
	}
	if count(lines, `event=select running=a best=b reason=trial tries=3->2 action=kexec write=true`) != 1 {
		t.Errorf("no select line:\n%s", strings.Join(lines, "\n"))
	}

	// B's own init, started by the kexec, must not count again.
	before := r.snapshot()
	_, sel, _ = r.bootSel("abboot.handover=b", nil)
	if sel.Decision.Action != bootcheck.Continue || sel.Decision.Target != slot.B || r.snapshot() != before {
		t.Errorf("after the handover: %+v, state changed %v", sel.Decision, r.snapshot() != before)
	}
}

func TestTrialKexecRefused(t *testing.T) {
	r := pending(t, both)
	_, sel, lines := r.bootSel("", func(string, []byte, func(string) string) error {
		return kexec.ErrRefused
	})
	b, _ := entryOf(t, r, slot.B)
	if sel.Decision.Action != bootcheck.Firmware || sel.Entry != b {
		t.Fatalf("decision %+v entry %04X, want firmware to Boot%04X", sel.Decision, sel.Entry, b)
	}
	if st := r.state(); st.B.Tries != 2 || st.Counted != slot.B {
		t.Errorf("state %+v, want B tries 2 and the counted marker on B", st)
	}
	if count(lines, `event=handover slot=b action=kexec result=error`) != 1 {
		t.Errorf("no handover error line:\n%s", strings.Join(lines, "\n"))
	}
}

// TestKexecReturns: the kexec was staged but did not happen; the init
// hands over by BootNext instead, with B's try counted once, and logs the
// failure between the two select events.
func TestKexecReturns(t *testing.T) {
	r := pending(t, both)
	var started []bootcheck.Action
	r.start = func(p *handover.Plan) error {
		started = append(started, p.Decision.Action)
		if p.Decision.Action == bootcheck.Kexec {
			return errors.New("kexec returned")
		}
		return nil
	}
	_, sel, lines := r.bootSel("", func(string, []byte, func(string) string) error { return nil })
	b, _ := entryOf(t, r, slot.B)
	if fmt.Sprint(started) != "[kexec firmware]" || sel.Decision.Action != bootcheck.Firmware || sel.Entry != b {
		t.Fatalf("started %v, then %+v entry %04X; want kexec, then firmware to Boot%04X", started, sel.Decision, sel.Entry, b)
	}
	if st := r.state(); st.B.Tries != 2 || st.Counted != slot.B {
		t.Errorf("state %+v, want B tries 2 and the counted marker on B", st)
	}
	want := []string{
		`event=select running=a best=b reason=trial tries=3->2 action=kexec write=true`,
		`event=handover slot=b action=kexec result=error err="kexec returned"`,
		`event=select running=a best=b reason=trial tries=3->2 action=firmware write=true`,
	}
	got := strings.Join(lines, "\n")
	for i, w := range want {
		j := strings.Index(got, w)
		if j < 0 {
			t.Fatalf("line %d, %s, missing or out of order:\n%s", i, w, strings.Join(lines, "\n"))
		}
		got = got[j:]
	}
}

// TestHalfWrittenSlot: a slot set active whose UKI is not on the ESP is
// marked bad instead of being tried.
func TestHalfWrittenSlot(t *testing.T) {
	r := pending(t, both)
	os.Remove(filepath.Join(r.esp, "EFI/abboot/b.efi"))
	_, sel, lines := r.bootSel("", nil)
	if sel.Decision.Action != bootcheck.Continue || sel.Decision.Target != slot.A || r.state().B != slotstate.Bad {
		t.Errorf("decision %+v, B %v; want continue on A and B bad", sel.Decision, r.state().B)
	}
	if count(lines, `event=repair slot=b what=marked-bad`) != 1 {
		t.Errorf("no repair line:\n%s", strings.Join(lines, "\n"))
	}
}

// TestRootMissing: rule 4 in the init. B, started by a handover, finds no
// partitions for its root hash: B is marked bad and A booted again.
func TestRootMissing(t *testing.T) {
	r := pending(t, both)
	_, sel, lines := r.bootSel("abboot.handover=b abboot.roothash="+strings.Repeat("ab", 32), nil)
	if sel.Decision.Target != slot.A || sel.Decision.Reason != bootcheck.ReasonRootFailed || r.state().B != slotstate.Bad {
		t.Errorf("decision %+v, B %v; want A for reason root-failed and B bad", sel.Decision, r.state().B)
	}
	if count(lines, `event=verity roothash=(ab)+ result=error`) != 1 {
		t.Errorf("no verity error line:\n%s", strings.Join(lines, "\n"))
	}
}

// TestFallbackRepair: a committed running slot puts a missing fallback
// copy back.
func TestFallbackRepair(t *testing.T) {
	for name, spoil := range map[string]func(path string){
		"missing":   func(path string) { os.Remove(path) },
		"truncated": func(path string) { os.WriteFile(path, []byte("uki"), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, both, false)
			r.boot("")
			spoil(filepath.Join(r.esp, slot.FallbackPath))
			_, _, lines := r.bootSel("", nil)
			if b, err := os.ReadFile(filepath.Join(r.esp, slot.FallbackPath)); err != nil || string(b) != "uki v1" {
				t.Errorf("fallback copy after repair: %q, %v", b, err)
			}
			if count(lines, `event=repair what=fallback slot=a result=ok`) != 1 {
				t.Errorf("no repair line:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

// TestUnreadableStore is rule 8: a corrupt state store never stops the
// boot; the running slot boots and becomes the committed one.
func TestUnreadableStore(t *testing.T) {
	r := pending(t, both)
	if err := efivar.Open(r.vars).Set(slotstore.VarName, slotstore.Vendor, 7, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	_, sel, lines := r.bootSel("", nil)
	if sel.Decision.Action != bootcheck.Continue || sel.Decision.Target != slot.A {
		t.Errorf("decision %+v, want continue on A", sel.Decision)
	}
	if count(lines, `event=repair what=state store=efivar:AbbootSlots state=unreadable err=.* result=ok`) != 1 {
		t.Errorf("no repair line for the state:\n%s", strings.Join(lines, "\n"))
	}
	if st := r.state(); st.A != (slotstate.Attrs{Priority: 1, Successful: true}) || st.B.Bootable() {
		t.Errorf("rebuilt state %+v, want A committed and B not bootable", st)
	}
}

// TestCrashRecords: the records a crashed boot of B left are logged as one
// crash event, removed before the decision, and handed to it; a boot with
// no records counts nothing and removes nothing.
func TestCrashRecords(t *testing.T) {
	r := pending(t, both)
	r.pstore = t.TempDir()
	dump := "Panic#1 Part1\n<7>[    2.0] abboot: event=start running=b how=handover boot=b00710 kernel_ms=1\n" +
		"<3>[    3.0] device-mapper: verity: 254:0: data block 7 is corrupted\n<0>[    3.1] Kernel panic - not syncing: dm-verity device corrupted\n"
	if err := os.WriteFile(filepath.Join(r.pstore, "dmesg-efi_pstore-1"), []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.pstore, "console-ramoops-0"), []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, sel, lines := r.bootSel("", nil)
	if n := count(lines, `^abboot: event=crash slot=b reason="dm-verity device corrupted" boot=b00710 records=1$`); n != 1 {
		t.Errorf("%d crash events for B, want 1:\n%s", n, strings.Join(lines, "\n"))
	}
	if got := sel.Input.Crashed; len(got) != 1 || got[0] != slot.B || sel.Input.CrashLimit != slotstate.DefaultCrashLimit {
		t.Errorf("decision input: crashed %v, limit %d; want [b], %d", got, sel.Input.CrashLimit, slotstate.DefaultCrashLimit)
	}
	left, _ := os.ReadDir(r.pstore)
	if len(left) != 1 || left[0].Name() != "console-ramoops-0" {
		t.Errorf("left in pstore: %v, want only console-ramoops-0", left)
	}
	_, sel, lines = r.bootSel("abboot.handover=b", nil)
	if left, _ := os.ReadDir(r.pstore); len(sel.Input.Crashed) != 0 || count(lines, "event=crash") != 0 || len(left) != 1 {
		t.Errorf("boot without records: crashed %v, pstore %v:\n%s", sel.Input.Crashed, left, strings.Join(lines, "\n"))
	}
}
