package install

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// snapshot is every byte of a machine, to show what an install changed.
func (m *machine) snapshot(t testing.TB) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, dir := range []string{m.espDir, m.varsDir} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files[p] = sum(readFile(t, p))
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if m.disk != "" {
		files[m.disk] = sum(readFile(t, m.disk))
	}
	return files
}

// partition returns the bytes of the partition labelled label, n long.
func (m *machine) partition(t testing.TB, label string, n int) (gpt.Partition, []byte) {
	t.Helper()
	tab, err := gpt.ReadFile(m.disk)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := tab.ByName(label)
	if !ok {
		t.Fatalf("no partition %s", label)
	}
	b := make([]byte, n)
	f, err := os.Open(m.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, p.Start(tab.SectorSize)); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestInstall(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			f := newFixture(t, l.withRoot)
			m := f.base.clone(t)
			var events []string
			var last, total int64
			o := Options{
				Log:      func(name string, kv ...any) { events = append(events, event.Format(name, kv...)) },
				Progress: func(done, all int64) { last, total = done, all },
			}
			var aRoot, aTree []byte
			var aPart gpt.Partition
			if l.withRoot {
				aPart, aRoot = m.partition(t, slot.A.RootLabel(), len(f.v1.root))
				_, aTree = m.partition(t, slot.A.VerityLabel(), len(f.v1.tree))
			}
			for i := range 2 { // the second install of the same bundle works too
				res, err := f.install(t, m, f.v2, nil, o)
				if err != nil {
					t.Fatalf("install %d: %v", i, err)
				}
				if bad := f.installed(t, m, f.v2); len(bad) > 0 {
					t.Errorf("install %d: %v", i, bad)
				}
				want := Result{Slot: slot.B, Version: "2", RootHash: f.v2.rootHash, Bytes: int64(len(f.v2.root) + len(f.v2.tree) + len(f.v2.uki)), State: initial}
				want.State.B = slotstate.Attrs{Priority: 3, Tries: 3}
				if res != want {
					t.Errorf("install %d: result %+v, want %+v", i, res, want)
				}
				if last != want.Bytes || total != want.Bytes {
					t.Errorf("install %d: last progress %d of %d, want %d", i, last, total, want.Bytes)
				}
			}
			steps := []string{"step=mark-bad", "step=uki", "step=verify", "step=place-uki", "step=activate"}
			if l.withRoot {
				steps = append(steps[:1], append([]string{"step=root", "step=verity"}, steps[1:]...)...)
			}
			if len(events) != 2*len(steps) {
				t.Fatalf("events:\n%s", strings.Join(events, "\n"))
			}
			for i, e := range events {
				if !strings.HasPrefix(e, "abboot: event=install slot=b "+steps[i%len(steps)]) {
					t.Errorf("event %d: %s, want %s", i, e, steps[i%len(steps)])
				}
			}
			if got := readFile(t, filepath.Join(m.espDir, slot.A.UKIPath())); !bytes.Equal(got, f.v1.uki) {
				t.Errorf("a's UKI changed")
			}
			if !l.withRoot {
				return
			}
			// Slot A's partitions are untouched; B's hold v2 under its UUIDs.
			if p, b := m.partition(t, slot.A.RootLabel(), len(aRoot)); !bytes.Equal(b, aRoot) || p != aPart {
				t.Errorf("a's root partition changed: %v", p)
			}
			if _, b := m.partition(t, slot.A.VerityLabel(), len(aTree)); !bytes.Equal(b, aTree) {
				t.Errorf("a's verity partition changed")
			}
			ru, vu := uuids(f.v2.rootHash)
			if p, b := m.partition(t, slot.B.RootLabel(), len(f.v2.root)); !bytes.Equal(b, f.v2.root) || p.UUID != ru {
				t.Errorf("b's root partition: %v", p)
			}
			if p, b := m.partition(t, slot.B.VerityLabel(), len(f.v2.tree)); !bytes.Equal(b, f.v2.tree) || p.UUID != vu {
				t.Errorf("b's verity partition: %v", p)
			}
		})
	}
}

// TestRefuse checks the refusals made before the first write: each gives
// an error and leaves every byte of the machine as it was.
func TestRefuse(t *testing.T) {
	f := newFixture(t, true)
	big := newVersion(t, f.key, "3", 300, "") // 1.2 MiB root, a 1 MiB partition
	for _, tc := range []struct {
		name  string
		v     *version
		edit  func(tg *Target, o *Options)
		state *slotstate.State // saved first, when set
		want  string
	}{
		{"into the running slot", f.v2, func(tg *Target, o *Options) { tg.Running = slot.B }, nil, "is the running slot"},
		{"no such slot", f.v2, func(tg *Target, o *Options) { tg.Slot = "c" }, nil, `slot "c"`},
		{"too many tries", f.v2, func(tg *Target, o *Options) { o.Tries = 16 }, nil, "tries 16"},
		{"root too large", big, nil, nil, "larger than its slot"},
		{"root on an ESP-only target", f.v2, func(tg *Target, o *Options) { tg.Disk, tg.OpenDisk = "", nil }, nil, "no place for one"},
		{"root with the state in a variable", f.v2, func(tg *Target, o *Options) {
			tg.Store = slotstore.NewVar(efivar.Open(t.TempDir()))
		}, nil, "not in the GPT"},
		{"root hash of the running slot", f.v1, nil, nil, "already has UUID"},
		{"running slot not bootable", f.v2, nil, &slotstate.State{A: slotstate.Attrs{Priority: 2}, B: slotstate.Attrs{Priority: 1, Successful: true}}, "not bootable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := f.base.clone(t)
			if tc.state != nil {
				if err := m.store(t, nil).Save(*tc.state); err != nil {
					t.Fatal(err)
				}
			}
			before := m.snapshot(t)
			tg := m.target(t, slot.B, nil)
			var o Options
			if tc.edit != nil {
				tc.edit(&tg, &o)
			}
			// Without the policy's size check, as a careless caller
			// would: Install checks again.
			r, err := bundle.NewReader(bytes.NewReader(tc.v.bundle), f.keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Install(r, tg, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Install: %v, want an error with %q", err, tc.want)
			}
			if after := m.snapshot(t); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused install changed the machine")
			}
		})
	}
}

// badDev corrupts the first write at off.
type badDev struct {
	*cutDev
	off int64
}

func (d *badDev) WriteAt(b []byte, off int64) (int, error) {
	if off == d.off {
		b = append([]byte{b[0] ^ 1}, b[1:]...)
		d.off = -1
	}
	return d.cutDev.WriteAt(b, off)
}

// TestFail checks installs that fail after writing began: slot A and its
// UKI are untouched, B has priority 0 and its old UKI, and no temporary
// file is left.
func TestFail(t *testing.T) {
	f := newFixture(t, true)
	wrongUKI := newVersion(t, f.key, "3", 16, f.v1.rootHash)
	flipped := func(v *version, i int) *version {
		c := *v
		c.bundle = bytes.Clone(v.bundle)
		c.bundle[len(c.bundle)-i] ^= 1
		return &c
	}
	for _, tc := range []struct {
		name string
		v    *version
		dev  func(m *machine, tg *Target) // changes the device
		want error
		msg  string
	}{
		{"payload hash mismatch", flipped(f.v2, len(f.v2.uki)+len(f.v2.tree)+1), nil, bundle.ErrHashMismatch, ""},
		{"UKI hash mismatch", flipped(f.v2, 1), nil, bundle.ErrHashMismatch, ""},
		{"trailing data", &version{bundle: append(bytes.Clone(f.v2.bundle), 0)}, nil, bundle.ErrTrailingData, ""},
		{"UKI for another root", wrongUKI, nil, nil, "the UKI's command line has abboot.roothash"},
		{"disk corrupts a write", f.v2, func(m *machine, tg *Target) {
			tab, _ := gpt.ReadFile(m.disk)
			p, _ := tab.ByName(slot.B.RootLabel())
			dev := &badDev{cutDev: m.device(t, nil), off: p.Start(512)}
			tg.OpenDisk = func() (Device, error) { return dev, nil }
		}, nil, "reading back the root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := f.base.clone(t)
			tg := m.target(t, slot.B, nil)
			if tc.dev != nil {
				tc.dev(m, &tg)
			}
			_, aRoot := m.partition(t, slot.A.RootLabel(), len(f.v1.root))
			r, err := bundle.NewReader(bytes.NewReader(tc.v.bundle), f.keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Install(r, tg, Options{})
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Install: %v, want %v %q", err, tc.want, tc.msg)
			}
			st, err := m.store(t, nil).Load()
			if want := initial.MarkBad(slot.B); err != nil || st != want {
				t.Errorf("state %+v, %v; want %+v", st, err, want)
			}
			if _, b := m.partition(t, slot.A.RootLabel(), len(aRoot)); !bytes.Equal(b, aRoot) {
				t.Errorf("a's root changed")
			}
			for s, v := range map[slot.Slot]*version{slot.A: f.v1, slot.B: f.v0} {
				if !bytes.Equal(readFile(t, filepath.Join(m.espDir, s.UKIPath())), v.uki) {
					t.Errorf("%s changed", s.UKIPath())
				}
			}
			if _, err := os.Stat(filepath.Join(m.espDir, tempPath(slot.B))); !os.IsNotExist(err) {
				t.Errorf("temporary UKI left behind: %v", err)
			}
			if bad := f.boots(t, m); len(bad) > 0 {
				t.Errorf("after the failed install: %v", bad)
			}
		})
	}
}

func TestSlotSizes(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			m := newFixture(t, l.withRoot).base
			tg := m.target(t, slot.B, nil)
			got, err := SlotSizes(tg)
			if err != nil {
				t.Fatal(err)
			}
			if got[bundle.PayloadUKI] <= 0 {
				t.Errorf("ESP free space %d", got[bundle.PayloadUKI])
			}
			delete(got, bundle.PayloadUKI)
			want := map[string]int64{}
			if l.withRoot {
				want = map[string]int64{bundle.PayloadRoot: partMiB << 20, bundle.PayloadVerity: partMiB << 20}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("SlotSizes = %v, want %v", got, want)
			}
			missing := tg
			missing.ESPDir = filepath.Join(m.dir, "nowhere")
			if _, err := SlotSizes(missing); err == nil {
				t.Errorf("SlotSizes of a missing ESP succeeded")
			}
			// A temporary UKI left by a cut install is overwritten,
			// so its space counts as free. The file system's own
			// count is fixed here: other tests write to it.
			defer func(f func(string, *unix.Statfs_t) error) { statfs = f }(statfs)
			statfs = func(_ string, st *unix.Statfs_t) error {
				st.Bavail, st.Bsize = 100, 4096
				return nil
			}
			m.writeESP(t, tempPath(slot.B), random(1<<20))
			if got, _ := SlotSizes(tg); got[bundle.PayloadUKI] != 100*4096+1<<20 {
				t.Errorf("with a 1 MiB temporary UKI and 100 free 4 KiB blocks, the space for the UKI is %d, want %d", got[bundle.PayloadUKI], 100*4096+1<<20)
			}
		})
	}
}
