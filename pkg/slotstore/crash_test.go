package slotstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/internal/powercut"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/spf13/afero"
)

// crashCase is a Save of new over old; fresh means there is no state
// before it, which loads as ErrNoState.
type crashCase struct {
	old, new slotstate.State
	fresh    bool
}

func (c crashCase) String() string {
	if c.fresh {
		return fmt.Sprintf("none → %+v", c.new)
	}
	return fmt.Sprintf("%+v → %+v", c.old, c.new)
}

// checkCuts saves c.new over c.old with the power cut after 0, 1, 2, ...
// steps, in each powercut.Mode, until a Save completes. After every cut,
// load (with a store made afresh over what is on disk) must return
// exactly old or new; after the complete Save and a cut right after it,
// new. It returns the number of cut points tried. setup prepares a fresh
// copy of the old state and returns a store over it whose writes go
// through pw.
func checkCuts(t *testing.T, c crashCase,
	setup func(pw *powercut.Power) (s Store, load func() (slotstate.State, error))) int {
	t.Helper()
	n := 0
	for _, mode := range powercut.Modes {
		sawOld := false
		for left := 0; ; left++ {
			pw := &powercut.Power{Left: left, Mode: mode}
			s, load := setup(pw)
			saveErr := s.Save(c.new)
			done := !pw.Cut()
			pw.Off() // saved means saved durably
			cut := func() bool { return !done }
			got, err := load()
			isOld := c.fresh && errors.Is(err, ErrNoState) || !c.fresh && err == nil && got == c.old
			switch {
			case !cut() && (saveErr != nil || err != nil || got != c.new):
				t.Fatalf("%v, %v: uncut Save: %v; Load = %+v, %v", c, mode, saveErr, got, err)
			case cut() && saveErr == nil:
				t.Fatalf("%v, %v: Save cut after %d steps reported success", c, mode, left)
			case cut() && !isOld && (err != nil || got != c.new):
				t.Fatalf("%v, %v: Save cut after %d steps: Load = %+v, %v; want old or new", c, mode, left, got, err)
			}
			sawOld = sawOld || isOld
			if !cut() {
				break
			}
			n++
			if left > 50 {
				t.Fatalf("Save still cut after %d steps", left)
			}
		}
		if !sawOld {
			t.Errorf("%v, %v: no cut left the old state; the test cuts too late", c, mode)
		}
	}
	return n
}

// crashCases are the saves the crash tests cut: from every state to two
// others.
func crashCases() []crashCase {
	var cs []crashCase
	for i, old := range states {
		cs = append(cs, crashCase{old: old, new: states[(i+1)%len(states)]}, crashCase{old: old, new: states[(i+3)%len(states)]})
	}
	return cs
}

// TestGPTCrash cuts Save at every write, in each powercut.Mode, on a healthy
// disk, on one whose primary table is broken and on one whose backup is
// one edit ahead (a Save cut earlier), so that the repair Save does first
// is cut too.
func TestGPTCrash(t *testing.T) {
	starts := []struct {
		name  string
		spoil func(t testing.TB, path string)
	}{
		{"healthy", func(testing.TB, string) {}},
		{"broken primary", breakPrimary},
		{"stale backup", func(t testing.TB, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Two writes: the backup's entries and header, kept at
			// the cut (Torn) although their sync is refused.
			g, err := NewGPTFile(&powercut.File{File: f, P: &powercut.Power{Left: 2, Mode: powercut.Torn}}, path, diskSize)
			if err != nil {
				t.Fatal(err)
			}
			// A state none of the cases has, so that Save writes.
			if err := g.Save(slotstate.State{A: slotstate.Attrs{Priority: 7, Tries: 7}}); !errors.Is(err, powercut.ErrCut) {
				t.Fatalf("spoiling Save: %v", err)
			}
		}},
	}
	total := 0
	for _, start := range starts {
		for _, c := range crashCases() {
			dir := t.TempDir()
			orig := filepath.Join(dir, "orig.img")
			if err := os.Rename(writeDisk(t, testParts(0, 0)), orig); err != nil {
				t.Fatal(err)
			}
			if err := mustGPT(t, orig).Save(c.old); err != nil {
				t.Fatal(err)
			}
			start.spoil(t, orig)
			if tab, err := gpt.ReadFile(orig); err != nil || tab.NeedsRepair() != (start.name != "healthy") {
				t.Fatalf("%s: start disk: %v", start.name, err)
			}
			path := filepath.Join(dir, "disk.img")
			total += checkCuts(t, c, func(pw *powercut.Power) (Store, func() (slotstate.State, error)) {
				copyFile(t, orig, path)
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { f.Close() })
				s, err := NewGPTFile(&powercut.File{File: f, P: pw}, path, diskSize)
				if err != nil {
					t.Fatal(err)
				}
				return s, func() (slotstate.State, error) { return mustGPT(t, path).Load() }
			})
		}
	}
	t.Logf("GPT store: %d cut points tried, each loaded as exactly the old or the new state", total)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
}

// TestVarCrash cuts Save at every change to the variable directory,
// in each powercut.Mode, starting from every state and from no variable at all.
func TestVarCrash(t *testing.T) {
	total := 0
	cases := crashCases()
	for _, st := range states {
		cases = append(cases, crashCase{new: st, fresh: true})
	}
	for _, c := range cases {
		total += checkCuts(t, c, func(pw *powercut.Power) (Store, func() (slotstate.State, error)) {
			dir := t.TempDir()
			if !c.fresh {
				if err := NewVar(efivar.Open(dir)).Save(c.old); err != nil {
					t.Fatal(err)
				}
			}
			return NewVar(efivar.OpenFS(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), dir)))), NewVar(efivar.Open(dir)).Load
		})
	}
	t.Logf("variable store: %d cut points tried, each loaded as exactly the old or the new state", total)
}
