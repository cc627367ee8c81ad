package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/slot"
)

// rig is a machine on the host: a disk image under a fake /dev and
// /sys/class/block, a directory of EFI variables, and a directory standing
// for the mounted ESP (mounting FAT would need root and a loop device).
type rig struct {
	t                   *testing.T
	sys, dev, esp, vars string
	log                 bytes.Buffer
	// mount, if set, runs where the init mounts efivarfs.
	mount func()
	// start, if set, stands for the handover; by default every handover
	// happens.
	start func(*handover.Plan) error
	// pstore, if set, is the directory of crash records.
	pstore string
}

// newRig builds a disk whose ESP holds files (ESP path -> content); with
// noESP the disk has no partition table at all.
func newRig(t *testing.T, files map[string]string, noESP bool) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, sys: filepath.Join(dir, "sys"), dev: filepath.Join(dir, "dev"), esp: filepath.Join(dir, "esp"), vars: filepath.Join(dir, "vars")}
	for _, d := range []string{r.sys + "/vda/vda1", r.dev, r.esp, r.vars} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(r.sys+"/vda/vda1/partition", []byte("1\n"), 0o644)
	spec := diskimage.Spec{ESPFiles: map[string]string{}}
	for p, content := range files {
		host := filepath.Join(dir, "src", p)
		os.MkdirAll(filepath.Dir(host), 0o755)
		os.WriteFile(host, []byte(content), 0o644)
		spec.ESPFiles[p] = host
		os.MkdirAll(filepath.Dir(filepath.Join(r.esp, p)), 0o755)
		os.WriteFile(filepath.Join(r.esp, p), []byte(content), 0o644)
	}
	if noESP {
		if err := os.WriteFile(r.dev+"/vda", make([]byte, 4<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := diskimage.Build(r.dev+"/vda", spec); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) boot(cmdline string) (st string, lines []string) {
	r.t.Helper()
	s, _, lines := r.bootSel(cmdline, nil)
	return s, lines
}

// bootSel boots with kexecLoad as the kexec stager (nil: kexec off) and
// returns the plan too. A handover stands for the machine going: the plan
// is the one handed over to.
func (r *rig) bootSel(cmdline string, kexecLoad func(string, []byte, func(string) string) error) (string, *handover.Plan, []string) {
	r.t.Helper()
	p, err := bootparam.Parse(cmdline)
	if err != nil {
		r.t.Fatal(err)
	}
	r.log.Reset()
	b := &boot{
		params:       p,
		vars:         efivar.Open(r.vars),
		sysBlock:     r.sys,
		devDir:       r.dev,
		mountESP:     func(string) (string, error) { return r.esp, nil },
		log:          event.New(&r.log),
		version:      "1",
		kexecLoad:    kexecLoad,
		start:        r.start,
		efivarsReady: r.mount,
		pstoreDir:    r.pstore,
		bootID:       "0d0c8f5e-0000-4000-8000-000000000001",
		replaceFallback: func(dir string, s slot.Slot) (bool, error) {
			return fallback.Replace(dir, s)
		},
	}
	if b.start == nil {
		b.start = func(*handover.Plan) error { return nil }
	}
	s, sel := b.run(2000)
	return s.Slot + "/" + s.How, sel, strings.Split(strings.TrimSpace(r.log.String()), "\n")
}

// setBootCurrent stores BootCurrent as the firmware does.
func (r *rig) setBootCurrent(n uint16) {
	if err := efivar.Open(r.vars).Set("BootCurrent", efivar.GlobalVariable, 6, binary.LittleEndian.AppendUint16(nil, n)); err != nil {
		r.t.Fatal(err)
	}
}

// snapshot hashes every variable, to show that a boot wrote nothing.
func (r *rig) snapshot() string {
	h := sha256.New()
	filepath.WalkDir(r.vars, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			fmt.Fprintf(h, "%s %x\n", d.Name(), sha256.Sum256(b))
		}
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

func entryOf(t *testing.T, r *rig, s slot.Slot) (uint16, bool) {
	t.Helper()
	entries, _ := efivar.Open(r.vars).BootEntries()
	return bootentry.Find(entries, s)
}

var both = map[string]string{"EFI/abboot/a.efi": "uki v1", "EFI/abboot/b.efi": "uki v2", slot.FallbackPath: "uki v1"}

// count returns how many lines match re.
func count(lines []string, re string) int {
	n := 0
	for _, l := range lines {
		if regexp.MustCompile(re).MatchString(l) {
			n++
		}
	}
	return n
}

func TestFirstAndSteadyBoot(t *testing.T) {
	r := newRig(t, both, false)
	st, lines := r.boot("console=ttyS0")
	if st != "a/fallback" {
		t.Errorf("first boot: %s, want a/fallback\n%s", st, strings.Join(lines, "\n"))
	}
	if n := count(lines, `event=repair var=Boot\S+ what=created`); n != 2 {
		t.Errorf("first boot created %d entries, want 2:\n%s", n, strings.Join(lines, "\n"))
	}
	a, okA := entryOf(t, r, slot.A)
	b, okB := entryOf(t, r, slot.B)
	order, _ := efivar.Open(r.vars).BootOrder()
	if !okA || !okB || len(order) != 2 || order[0] != a || order[1] != b {
		t.Fatalf("entries a=%v b=%v BootOrder %v, want [a b]", okA, okB, order)
	}

	r.setBootCurrent(a)
	before := r.snapshot()
	st, lines = r.boot("console=ttyS0")
	if st != "a/bootcurrent" {
		t.Errorf("second boot: %s, want a/bootcurrent", st)
	}
	if after := r.snapshot(); after != before || count(lines, "event=repair") != 0 {
		t.Errorf("steady-state boot wrote variables:\n%s", strings.Join(lines, "\n"))
	}

	if st, _ := r.boot("abboot.handover=b"); st != "b/handover" {
		t.Errorf("handover boot: %s, want b/handover", st)
	}
}

// TestBadInput: each broken input gives one clear abboot: line and the
// boot goes on.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		noESP   bool
		prepare func(r *rig)
		want    string // the one error line
		state   string
		entries []slot.Slot
	}{
		{
			name:  "no ESP",
			noESP: true,
			want:  `abboot: event=esp result=error err=".*no EFI system partition found`,
			state: "a/default",
		},
		{
			name:    "missing slot file",
			files:   map[string]string{"EFI/abboot/a.efi": "uki v1", slot.FallbackPath: "uki v1"},
			want:    `abboot: event=repair slot=b result=error err=".*EFI/abboot/b.efi`,
			state:   "a/fallback",
			entries: []slot.Slot{slot.A},
		},
		{
			name:  "unreadable boot entry",
			files: both,
			prepare: func(r *rig) {
				efivar.Open(r.vars).Set("Boot0000", efivar.GlobalVariable, 7, []byte{1, 0, 0})
				r.setBootCurrent(0)
			},
			want:    `abboot: event=efivar result=error err="Boot0000: `,
			state:   "a/fallback",
			entries: []slot.Slot{slot.A, slot.B},
		},
		{
			// Read once efivarfs is mounted, not before: the mount
			// happens while the init waits for its disks.
			name:  "unreadable LoaderDevicePartUUID",
			files: both,
			prepare: func(r *rig) {
				r.mount = func() {
					time.Sleep(20 * time.Millisecond)
					efivar.Open(r.vars).Set("LoaderDevicePartUUID", loaderVendor, 6, []byte{'x', 0})
				}
			},
			want:    `abboot: event=efivar name=LoaderDevicePartUUID result=error err=`,
			state:   "a/fallback",
			entries: []slot.Slot{slot.A, slot.B},
		},
		{
			name:  "unreadable BootCurrent",
			files: both,
			prepare: func(r *rig) {
				efivar.Open(r.vars).Set("BootCurrent", efivar.GlobalVariable, 6, []byte{1})
			},
			want:    `abboot: event=efivar var=BootCurrent result=error err=`,
			state:   "a/fallback",
			entries: []slot.Slot{slot.A, slot.B},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.files, tc.noESP)
			if tc.prepare != nil {
				tc.prepare(r)
			}
			st, lines := r.boot("")
			if st != tc.state {
				t.Errorf("state %s, want %s", st, tc.state)
			}
			if n, all := count(lines, tc.want), count(lines, "result=error"); n != 1 || all != 1 {
				t.Errorf("%d lines match %q and %d report errors, want 1 and 1:\n%s", n, tc.want, all, strings.Join(lines, "\n"))
			}
			for _, s := range slot.All {
				_, ok := entryOf(t, r, s)
				if want := contains(tc.entries, s); ok != want {
					t.Errorf("entry for slot %s: %v, want %v", s, ok, want)
				}
			}
			if count(lines, `event=start running=a`) != 1 {
				t.Errorf("no start event:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

func contains(list []slot.Slot, s slot.Slot) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
