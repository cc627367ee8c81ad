package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

var abctl string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "abctl-test-")
	if err != nil {
		panic(err)
	}
	abctl = filepath.Join(dir, "abctl")
	if out, err := exec.Command("go", "build", "-o", abctl, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building abctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// image is a disk with an ESP and the two root partitions (2 and 3), and
// an empty EFI variables directory.
type image struct {
	t          *testing.T
	disk, vars string
}

func newImage(t *testing.T) *image {
	t.Helper()
	dir := t.TempDir()
	im := &image{t: t, disk: filepath.Join(dir, "disk.img"), vars: filepath.Join(dir, "vars")}
	os.Mkdir(im.vars, 0o755)
	err := diskimage.Build(im.disk, diskimage.Spec{
		ESPSizeMiB: diskimage.MinESPSizeMiB,
		Partitions: []diskimage.PartSpec{
			{Label: slot.A.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1, Attributes: slotstore.WithAttrs(1<<60, slotstate.Attrs{Priority: 1, Successful: true})},
			{Label: slot.B.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func (im *image) abctl(args ...string) (string, error) {
	cmd := exec.Command(abctl, append([]string{"--disk", im.disk, "--efivars", im.vars}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (im *image) status() status {
	im.t.Helper()
	out, err := im.abctl("status", "--json")
	if err != nil {
		im.t.Fatalf("abctl status: %v\n%s", err, out)
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		im.t.Fatalf("abctl status --json: %v\n%s", err, out)
	}
	return st
}

// cgpt reads partition n's priority, tries and successful with cgpt.
func (im *image) cgpt(n int) [3]int {
	var v [3]int
	for i, f := range []string{"-P", "-T", "-S"} {
		out := testutil.Run(im.t, "cgpt", "show", "-i", strconv.Itoa(n), f, im.disk)
		x, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			im.t.Fatalf("cgpt show %s: %q", f, out)
		}
		v[i] = x
	}
	return v
}

func (im *image) hash() string {
	h := sha256.New()
	for _, p := range []string{im.disk} {
		b, _ := os.ReadFile(p)
		h.Write(b)
	}
	ents, _ := os.ReadDir(im.vars)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(im.vars, e.Name()))
		fmt.Fprintf(h, "%s %x", e.Name(), sha256.Sum256(b))
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestCgptInterop: what abctl sets is what cgpt reads, and what cgpt sets
// is what abctl reports.
func TestCgptInterop(t *testing.T) {
	im := newImage(t)
	if out, err := im.abctl("set-active", "b", "--tries", "4"); err != nil {
		t.Fatalf("set-active: %v\n%s", err, out)
	}
	if a, b := im.cgpt(2), im.cgpt(3); a != [3]int{1, 0, 1} || b != [3]int{2, 4, 0} {
		t.Errorf("after set-active b: cgpt reads A %v B %v, want [1 0 1] [2 4 0]", a, b)
	}
	// cgpt -A shows bits 48-63: bit 60 (DPS read-only), successful, priority 1.
	if out := testutil.Run(t, "cgpt", "show", "-i", "2", "-A", im.disk); strings.TrimSpace(out) != "0x1101" {
		t.Errorf("cgpt show -A of A = %q, want 0x1101", out)
	}

	testutil.Run(t, "cgpt", "add", "-i", "2", "-P", "5", "-T", "2", "-S", "0", im.disk)
	testutil.Run(t, "cgpt", "add", "-i", "3", "-P", "7", "-T", "0", "-S", "1", im.disk)
	st := im.status()
	got := map[string]string{}
	for _, s := range st.Slots {
		got[s.Slot] = fmt.Sprintf("%d/%d/%v", s.Priority, s.Tries, s.Successful)
	}
	if got["a"] != "5/2/false" || got["b"] != "7/0/true" || st.Next != "b" {
		t.Errorf("after cgpt add: abctl status says %v next %s, want a 5/2/false, b 7/0/true, next b", got, st.Next)
	}
	if !strings.HasPrefix(st.Store, "gpt:") {
		t.Errorf("store %q, want the GPT store", st.Store)
	}
}

// TestBadInput: refused commands say why in one line and change nothing.
func TestBadInput(t *testing.T) {
	im := newImage(t)
	for _, tc := range []struct {
		args []string
		want string // in the one line
	}{
		{[]string{"set-active", "c"}, `slot "c": want a or b`},
		{[]string{"set-active"}, "want one SLOT argument"},
		{[]string{"set-active", "b", "--tries", "16"}, "--tries 16: want 1 to 15"},
		{[]string{"mark-bad"}, "no running slot known here"},        // no running slot on an image
		{[]string{"mark-bad", "a"}, "would leave no bootable slot"}, // would leave nothing bootable (B has priority 0)
		{[]string{"nonsense"}, `unknown command "nonsense"`},
	} {
		args := tc.args
		before := im.hash()
		out, err := im.abctl(args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("abctl %v: %v:\n%s\nwant a failure saying %q", args, err, out, tc.want)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
			t.Errorf("abctl %v: %d lines on failure, want 1:\n%s", args, len(lines), out)
		}
		if im.hash() != before {
			t.Errorf("abctl %v failed but changed the disk or the variables", args)
		}
	}
	if out, err := im.abctl("mark-bad", "--force", "a"); err != nil {
		t.Errorf("mark-bad --force: %v\n%s", err, out)
	}
	if a := im.cgpt(2); a != [3]int{0, 0, 0} {
		t.Errorf("after mark-bad a: cgpt reads %v, want [0 0 0]", a)
	}
}

// TestVarStore: without root partitions (the ESP-only layout) the state
// lives in one EFI variable.
func TestVarStore(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := diskimage.Build(disk, diskimage.Spec{ESPSizeMiB: diskimage.MinESPSizeMiB}); err != nil {
		t.Fatal(err)
	}
	im := &image{t: t, disk: disk, vars: filepath.Join(dir, "vars")}
	os.Mkdir(im.vars, 0o755)
	if out, err := im.abctl("set-active", "a"); err != nil {
		t.Fatalf("set-active a: %v\n%s", err, out)
	}
	st := im.status()
	if !strings.HasPrefix(st.Store, "efivar") || st.Slots[0].Priority != 1 || st.Slots[0].Tries != 3 || st.Next != "a" {
		t.Errorf("status after set-active a on the variable store: %+v", st)
	}
	if ents, _ := os.ReadDir(im.vars); len(ents) != 1 {
		t.Errorf("%d variables written, want 1", len(ents))
	}
}

// TestStatusCrashes: status shows the crash counts the GPT bits hold and
// says why a committed slot over the crash limit is, or is not, booted, and
// which slot the next boot selects with the crash limit applied.
func TestStatusCrashes(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    slotstate.Attrs
		next string
		want string
	}{
		{"left", slotstate.Attrs{Priority: 2, Successful: true}, "b", "slot a crashed on 3 boots in a row (crash limit 3): not preferred while another slot can boot"},
		{"nothing else", slotstate.Attrs{}, "a", "slot a crashed on 3 boots in a row (crash limit 3), and is still booted: no other slot can boot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im := newImage(t)
			err := diskimage.Build(im.disk, diskimage.Spec{
				ESPSizeMiB: diskimage.MinESPSizeMiB,
				Partitions: []diskimage.PartSpec{
					{Label: slot.A.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1, Attributes: slotstore.WithAttrs(0, slotstate.Attrs{Priority: 3, Successful: true, Crashes: 3})},
					{Label: slot.B.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1, Attributes: slotstore.WithAttrs(0, tc.b)},
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			st := im.status()
			if a := st.Slots[0]; a.Crashes != 3 || !a.OverCrashLimit || st.CrashLimit != slotstate.DefaultCrashLimit {
				t.Errorf("status: A %+v, crash limit %d; want 3 crashes over the limit %d", a, st.CrashLimit, slotstate.DefaultCrashLimit)
			}
			if st.Next != tc.next {
				t.Errorf("status: next %q, want %q", st.Next, tc.next)
			}
			out, err := im.abctl("status")
			if err != nil || !strings.Contains(out, tc.want) {
				t.Errorf("abctl status: %v\n%s\nwant %q", err, out, tc.want)
			}
		})
	}
}
