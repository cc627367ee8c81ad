package pstore

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/abboot/abboot/pkg/slot"
)

// stage copies testdata/name into a temporary pstore directory. pstore
// gives a record's file the time it was written; the files here carry it
// in the first ten digits of their id, which git does not keep as mtime.
func stage(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join("testdata", name, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, e.Name())
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSuffix(e.Name()[strings.LastIndexByte(e.Name(), '-')+1:], ".enc.z")
		sec, _ := strconv.ParseInt(id[:min(10, len(id))], 10, 64)
		if err := os.Chtimes(p, time.Unix(sec, 0), time.Unix(sec, 0)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCrashes(t *testing.T) {
	for _, tc := range []struct {
		dir     string
		want    []Crash
		readErr bool
		left    []string // files Remove leaves
	}{
		{
			dir: "verity",
			want: []Crash{{Slot: slot.B, Boot: "5c1e0b6a-2f8e-4c51-9d3a-0f6b3e2a9c11", Reason: "dm-verity device corrupted",
				Records: []string{"dmesg-efi_pstore-176461234500101001"}}},
		},
		{
			// The init's lines are in the older part only, written a
			// second after the first part (a slow firmware).
			dir: "twopart",
			want: []Crash{{Slot: slot.A, Boot: "11111111-2222-3333-4444-555555555555", Reason: "abboot test panic",
				Records: []string{"dmesg-efi_pstore-176461234500101001", "dmesg-efi_pstore-176461234600201001"}}},
		},
		{
			// Two boots' dumps, both Panic#1 in two parts, each
			// spanning seconds: two crashes, each counted once.
			dir: "twoboots",
			want: []Crash{
				{Slot: slot.B, Boot: "bbbbbbbb-0000-0000-0000-000000000001", Reason: "dm-verity device corrupted",
					Records: []string{"dmesg-efi_pstore-176461230000101001", "dmesg-efi_pstore-176461230100201001"}},
				{Slot: slot.B, Boot: "bbbbbbbb-0000-0000-0000-000000000002", Reason: "dm-verity device corrupted",
					Records: []string{"dmesg-efi_pstore-176461240000101001", "dmesg-efi_pstore-176461240200201001"}},
			},
		},
		{
			// An Oops and the panic it led to are one crashed boot; a
			// panic before the init names no slot.
			dir: "oopspanic",
			want: []Crash{
				{Reason: "VFS: Unable to mount root fs on unknown-block(0,0)", Records: []string{"dmesg-efi_pstore-176461200000101001"}},
				{Slot: slot.B, Boot: "aaaaaaaa-0000-0000-0000-000000000001", Reason: "Fatal exception",
					Records: []string{"dmesg-efi_pstore-176461234400101001", "dmesg-efi_pstore-176461234500102001"}},
			},
		},
		{
			// Raw deflate and zlib, as the kernel leaves them when it
			// cannot decompress.
			dir: "compressed",
			want: []Crash{
				{Slot: slot.B, Boot: "5c1e0b6a-2f8e-4c51-9d3a-0f6b3e2a9c11", Reason: "dm-verity device corrupted", Records: []string{"dmesg-efi_pstore-176461234500101001.enc.z"}},
				{Slot: slot.A, Boot: "6c1e0b6a-2f8e-4c51-9d3a-0f6b3e2a9c11", Reason: "dm-verity device corrupted", Records: []string{"dmesg-efi_pstore-176461234600101001.enc.z"}},
			},
		},
		{
			// A record that does not parse is reported and left; so
			// is what is not a dmesg record.
			dir: "bad",
			want: []Crash{{Slot: slot.B, Boot: "5c1e0b6a-2f8e-4c51-9d3a-0f6b3e2a9c11", Reason: "dm-verity device corrupted",
				Records: []string{"dmesg-efi_pstore-176461234500101001"}}},
			readErr: true,
			left:    []string{"console-ramoops-0", "dmesg-efi_pstore-1"},
		},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := stage(t, tc.dir)
			recs, err := Read(dir)
			if (err != nil) != tc.readErr {
				t.Errorf("Read: %v, want error %v", err, tc.readErr)
			}
			if got := Crashes(recs); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Crashes:\n got %+v\nwant %+v", got, tc.want)
			}
			if err := Remove(dir, recs); err != nil {
				t.Fatal(err)
			}
			var left []string
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				left = append(left, e.Name())
			}
			if !reflect.DeepEqual(left, tc.left) {
				t.Errorf("left after Remove: %q, want %q", left, tc.left)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       Record
		err        bool
	}{
		{name: "dmesg-efi-1", data: "Oops#3 Part2\nline\n", want: Record{Name: "dmesg-efi-1", Why: "Oops", Count: 3, Part: 2, Text: "line\n"}},
		{name: "dmesg-ramoops-0", data: "Panic#1 Part1\r\n", want: Record{Name: "dmesg-ramoops-0", Why: "Panic", Count: 1, Part: 1}},
		{name: "dmesg-efi-1", data: "", err: true},
		{name: "dmesg-efi-1", data: "Panic#x Part1\n", err: true},
		{name: "dmesg-efi-1", data: "Panic#99999999999999999999 Part1\n", err: true},
		{name: "dmesg-efi-1.enc.z", data: "Panic#1 Part1\n", err: true},
		{name: "pmsg-ramoops-0", data: "Panic#1 Part1\n", err: true},
	} {
		got, err := Parse(tc.name, []byte(tc.data))
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q, %q) = %+v, %v; want %+v, error %v", tc.name, tc.data, got, err, tc.want, tc.err)
		}
	}
}

// FuzzParse: any file gives a record or an error, never a panic, and a
// record attributes without a panic.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"verity", "twopart", "twoboots", "oopspanic", "compressed", "bad"} {
		ents, _ := os.ReadDir(filepath.Join("testdata", dir))
		for _, e := range ents {
			data, _ := os.ReadFile(filepath.Join("testdata", dir, e.Name()))
			f.Add(e.Name(), data)
		}
	}
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		r, err := Parse(name, data)
		if err != nil {
			return
		}
		if !IsDump(name) || r.Part < 0 || r.Count < 0 {
			t.Fatalf("Parse(%q) = %+v: accepted", name, r)
		}
		cs := Crashes([]Record{r})
		if len(cs) != 1 || cs[0].Slot != "" && cs[0].Slot != slot.A && cs[0].Slot != slot.B {
			t.Fatalf("Crashes(%+v) = %+v", r, cs)
		}
	})
}
