package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/internal/powercut"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/commit"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// layouts are the two machines the power-cut tests run on.
var layouts = []struct {
	name     string
	withRoot bool
}{{"verity", true}, {"esp-only", false}}

// boots checks a machine after a power cut, opened afresh, the way the
// next boot sees it, and returns what is wrong. The firmware may start
// either slot's UKI (or the fallback copy, which is a slot's UKI): for each
// running slot whose UKI exists the real selection (bootcheck.Decide) must
// choose a slot that is complete, and since rule 4 may fall back to any
// bootable slot, every bootable slot must be complete too. A, the running
// slot of the install, must stay bootable throughout.
func (f *fixture) boots(t testing.TB, m *machine) []string {
	t.Helper()
	var bad []string
	st, err := m.store(t, nil).Load()
	if err != nil {
		return []string{fmt.Sprintf("loading the state: %v", err)}
	}
	if !st.A.Bootable() {
		bad = append(bad, fmt.Sprintf("slot a is not bootable: %v", st.A))
	}
	for _, s := range slot.All {
		if err := f.complete(m, s); err != nil && (s == slot.A || st.Get(s).Bootable()) {
			bad = append(bad, fmt.Sprintf("slot %s (%v) cannot come up: %v", s, st.Get(s), err))
		}
	}
	for _, run := range slot.All {
		if _, err := os.Stat(filepath.Join(m.espDir, run.UKIPath())); err != nil {
			continue
		}
		d := bootcheck.Decide(bootcheck.Input{State: st, Running: run, KexecAllowed: true, FirmwareAllowed: true})
		if d.Action == bootcheck.Rescue {
			bad = append(bad, fmt.Sprintf("running %s: rescue (%s)", run, d.Reason))
		} else if err := f.complete(m, d.Target); err != nil {
			bad = append(bad, fmt.Sprintf("running %s: selection %s %s (%s), which cannot come up: %v", run, d.Action, d.Target, d.Reason, err))
		}
	}
	b, err := os.ReadFile(filepath.Join(m.espDir, slot.FallbackPath))
	if _, ok := f.known[sum(b)]; err != nil || !ok {
		bad = append(bad, fmt.Sprintf("the fallback copy is not a complete UKI: %v", err))
	}
	return bad
}

// installed returns what is wrong with slot B of m, where v was just
// installed: it must be v, complete and on trial with priority above A's;
// slot A must be as it was.
func (f *fixture) installed(t testing.TB, m *machine, v *version) []string {
	t.Helper()
	var bad []string
	st, err := m.store(t, nil).Load()
	if err != nil {
		return []string{err.Error()}
	}
	want := initial
	want.B = slotstate.Attrs{Priority: initial.A.Priority + 1, Tries: slotstate.DefaultTries}
	if st != want {
		bad = append(bad, fmt.Sprintf("state %+v, want %+v", st, want))
	}
	for s, v := range map[slot.Slot]*version{slot.A: f.v1, slot.B: v} {
		b, err := os.ReadFile(filepath.Join(m.espDir, s.UKIPath()))
		if got := f.known[sum(b)]; err != nil || got != v.name {
			bad = append(bad, fmt.Sprintf("%s is version %q (%v), want %s", s.UKIPath(), got, err, v.name))
		}
		if err := f.complete(m, s); err != nil {
			bad = append(bad, fmt.Sprintf("slot %s: %v", s, err))
		}
	}
	if _, err := os.Stat(filepath.Join(m.espDir, tempPath(slot.B))); !os.IsNotExist(err) {
		bad = append(bad, fmt.Sprintf("temporary UKI left behind: %v", err))
	}
	return bad
}

// cutInstall installs v into slot B of a fresh copy of f.base with the
// power cut after 0, 1, 2, ... writes, in each of modes, until an install
// completes. After every cut the machine must boot (see boots), and an
// install with the power on must then complete (see installed). It
// returns the number of cut points tried and of those that failed; the
// install that completes counts as failed when it installed wrongly.
func (f *fixture) cutInstall(t *testing.T, v *version, modes []powercut.Mode) (tried, failed int) {
	for _, mode := range modes {
		for n := 0; ; n++ {
			m := f.base.clone(t)
			pw := &powercut.Power{Left: n, Mode: mode}
			_, err := f.install(t, m, v, pw, Options{})
			tried++ // the install that completes is the cut after its last write
			if !pw.Cut() {
				// Installed means installed durably: what was not
				// synced is lost in a cut right after.
				pw.Off()
				if err == nil {
					err = errors.Join(errs(f.installed(t, m, v))...)
				}
				if err != nil {
					failed++
					t.Logf("install with the power on: %v", err)
				}
				break
			}
			bad := f.boots(t, m)
			if err == nil {
				bad = append(bad, "the install reported success")
			}
			if len(bad) == 0 {
				if _, err := f.install(t, m, v, nil, Options{}); err != nil {
					bad = append(bad, fmt.Sprintf("install again: %v", err))
				} else {
					bad = f.installed(t, m, v)
				}
			}
			if len(bad) > 0 {
				failed++
				t.Logf("install cut after %d writes (%v): %v", n, mode, bad)
			}
			if n > 200 {
				t.Fatalf("install still cut after %d writes", n)
			}
		}
	}
	return tried, failed
}

func errs(msgs []string) []error {
	var es []error
	for _, m := range msgs {
		es = append(es, errors.New(m))
	}
	return es
}

// commitCut is abctl mark-good for slot s (pkg/commit) with the power
// through pw, the fallback copy's writes included.
func commitCut(t testing.TB, m *machine, s slot.Slot, pw *powercut.Power) error {
	vars := efivar.OpenFS(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), m.varsDir)))
	_, err := commit.Commit(m.store(t, pw), vars, m.espDir, s, func(dir string, s slot.Slot) (bool, error) {
		return fallback.ReplaceFS(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), dir)), s)
	})
	return err
}

// cutCommit commits slot B of m, which booted it on trial, with the power
// cut after 0, 1, 2, ... writes until the commit completes.
func (f *fixture) cutCommit(t *testing.T, m *machine) (tried, failed int) {
	for _, mode := range powercut.Modes {
		for n := 0; ; n++ {
			c := m.clone(t)
			pw := &powercut.Power{Left: n, Mode: mode}
			err := commitCut(t, c, slot.B, pw)
			tried++ // the commit that completes is the cut after its last write
			done := !pw.Cut()
			// Committed means committed durably: what was not synced
			// is lost in a cut right after.
			pw.Off()
			if bad := f.boots(t, c); len(bad) > 0 {
				failed++
				t.Logf("commit cut after %d writes (%v): %v", n, mode, bad)
			}
			if done {
				if err != nil {
					t.Fatalf("commit with the power on: %v", err)
				}
				f.committed(t, c)
				break
			}
			if n > 100 {
				t.Fatalf("commit still cut after %d writes", n)
			}
		}
	}
	return tried, failed
}

// committed checks rule 5 on m for slot B.
func (f *fixture) committed(t testing.TB, m *machine) {
	t.Helper()
	st, err := m.store(t, nil).Load()
	if err != nil {
		t.Fatal(err)
	}
	if b := st.B; !b.Successful || b.Tries != 0 || b.Priority <= st.A.Priority || !st.A.Bootable() {
		t.Errorf("after commit: %+v", st)
	}
	if same, err := fallback.Same(os.DirFS(m.espDir), slot.FallbackPath, slot.B.UKIPath()); !same {
		t.Errorf("fallback copy is not b's UKI: %v", err)
	}
	vars := efivar.Open(m.varsDir)
	entries, _ := vars.BootEntries()
	order, err := vars.BootOrder()
	if n, ok := bootentry.Find(entries, slot.B); err != nil || !ok || len(order) == 0 || order[0] != n {
		t.Errorf("BootOrder %v (%v), b's entry %d", order, err, n)
	}
}

// bootB is the first boot of the newly installed slot B: the firmware
// starts it (BootNext set by abctl, or its entry), its init decides and
// writes the counted try.
func (f *fixture) bootB(t testing.TB, m *machine) {
	t.Helper()
	store := m.store(t, nil)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	d := bootcheck.Decide(bootcheck.Input{State: st, Running: slot.B, KexecAllowed: true, FirmwareAllowed: true})
	if d.Action != bootcheck.Continue || d.Target != slot.B || d.Reason != bootcheck.ReasonTrial {
		t.Fatalf("first boot of b: %+v", d)
	}
	if err := store.Save(d.State); err != nil {
		t.Fatal(err)
	}
}

// TestPowerCut is the power-cut test: with a file-backed disk and a
// directory of EFI variables, install cut before and after every write,
// then commit cut the same way, and after every cut the real selection
// must end on a complete, bootable slot.
func TestPowerCut(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := newFixture(t, l.withRoot)
			tried, failed := f.cutInstall(t, f.v2, powercut.Modes)
			t.Logf("%s install: %d cut points tried, %d failed", l.name, tried, failed)
			if failed > 0 || tried < 10 {
				t.Errorf("install: %d of %d cut points failed", failed, tried)
			}
			m := f.base.clone(t)
			if _, err := f.install(t, m, f.v2, nil, Options{}); err != nil {
				t.Fatal(err)
			}
			f.bootB(t, m)
			tried, failed = f.cutCommit(t, m)
			t.Logf("%s commit: %d cut points tried, %d failed", l.name, tried, failed)
			if failed > 0 || tried < 5 {
				t.Errorf("commit: %d of %d cut points failed", failed, tried)
			}
		})
	}
}

// activateBitsFirst is a broken step 5 that raises the slot's priority
// in one GPT edit (the store's Save) and sets its UUIDs in another.
func activateBitsFirst(in *installer) error {
	st, err := in.t.Store.Load()
	if err != nil {
		return err
	}
	if err := in.t.Store.Save(st.SetActive(in.t.Slot, in.tries)); err != nil {
		return err
	}
	edits := map[int]gpt.PartitionEdit{}
	for name, part := range in.parts {
		u := in.uuids[name]
		edits[part.Number] = gpt.PartitionEdit{UUID: &u}
	}
	if err := in.disk.Repair(); err != nil {
		return err
	}
	return in.disk.Edit(edits)
}

// TestPowerCutCatchesBadOrder breaks the order of rule 6 in the ways
// that matter and checks that the power-cut test sees it. (Writing the
// UKI before the root cannot be tried: the bundle streams it last.)
func TestPowerCutCatchesBadOrder(t *testing.T) {
	f := newFixture(t, true)
	byName := map[string]step{}
	for _, s := range steps {
		byName[s.name] = s
	}
	order := func(names ...string) []step {
		var ss []step
		for _, n := range names {
			ss = append(ss, byName[n])
		}
		return ss
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no priority 0 first", order("write", "verify", "place-uki", "activate")},
		{"activate before writing", order("mark-bad", "activate", "write", "verify", "place-uki")},
		{"state bits and UUIDs in two edits", append(order("mark-bad", "write", "verify", "place-uki"), step{"activate", activateBitsFirst})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := steps
			steps = tc.steps
			defer func() { steps = saved }()
			// One mode is enough to see a wrong order.
			tried, failed := f.cutInstall(t, f.v2, []powercut.Mode{powercut.Lost})
			t.Logf("%d cut points tried, %d failed", tried, failed)
			if failed == 0 {
				t.Errorf("the power-cut test passes an install that breaks rule 6")
			}
		})
	}
}
